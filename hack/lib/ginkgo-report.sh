# Summarises a Ginkgo v2 JSON report the way hack/conformance.sh and hack/critest.sh print it.
# Sourced by bash; needs jq and a `log` function.
#
#   ginkgo_report OUT SELECT SKIP_FILE [EXTRA_SKIP] [EXCLUDE]
#
# Reads OUT/report.json and writes, beside it:
#   specs.json    the specs ("It" nodes) SELECT picks, minus those EXCLUDE matches:
#                 text, state, first failure message, run time in seconds
#   skipped.txt   picked but not run (SKIP_FILE's rule or --skip EXTRA_SKIP, or Ginkgo's own
#                 message), one "text<TAB>reason" per line
#   failed.txt    failed specs, and failed suite-level nodes (a failed BeforeSuite skips every spec)
#   summary.txt   "N passed, N failed, N skipped"
# Prints the summary and returns non-zero when anything failed.
ginkgo_report() {
    local out=$1 select=$2 skip_file=$3 extra=${4:-} exclude=${5:-}
    jq -r --arg sel "$select" --arg exclude "$exclude" '
        [.[].SpecReports[] | select(.LeafNodeType == "It")
         | {text: ((.ContainerHierarchyTexts + [.LeafNodeText]) | join(" ")), state: .State,
            msg: (.Failure.Message // ""), secs: ((.RunTime // 0) / 1e9)}
         | select(.text | test($sel))
         | select($exclude == "" or (.text | test($exclude) | not))]' "$out/report.json" >"$out/specs.json"
    jq -r --rawfile skips "$skip_file" --arg extra "$extra" '
        ($skips | split("\n") | map(select(length > 0 and (startswith("#") | not)) | split("\t"))) as $rules
        | .[] | select(.state == "skipped" or .state == "pending")
        | .text as $t
        | ([$rules[] | select(.[0] as $re | $t | test($re)) | .[1]] | first) as $why
        | ((.msg | split("\n")[0]) // "") as $msg
        | "\($t)\t\($why // (if $msg != "" then $msg
            elif $extra != "" and ($t | test($extra)) then "--skip \($extra)"
            else "not run: the suite ended before it (--timeout, or an interrupt)" end))"' \
        "$out/specs.json" | sort >"$out/skipped.txt"
    {
        jq -r '.[] | select(.state != "passed" and .state != "skipped" and .state != "pending")
            | "\(.text)\t\(.state): \(.msg | split("\n")[0])"' "$out/specs.json"
        jq -r '.[].SpecReports[] | select(.LeafNodeType != "It" and .State != "passed" and .State != "skipped")
            | "[\(.LeafNodeType)]\t\(.State): \(.Failure.Message // "" | split("\n")[0])"' "$out/report.json"
    } | sort >"$out/failed.txt"
    local summary
    summary="$(jq '[.[] | select(.state == "passed")] | length' "$out/specs.json") passed, $(wc -l <"$out/failed.txt") failed, $(wc -l <"$out/skipped.txt") skipped"
    echo "$summary" >"$out/summary.txt"
    if [[ -s $out/failed.txt ]]; then
        log "failed specs ($out/failed.txt):"
        cut -f1 "$out/failed.txt" | sed 's/^/  /' >&2
    fi
    echo "$summary"
    [[ ! -s $out/failed.txt ]]
}
