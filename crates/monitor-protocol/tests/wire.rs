//! The wire format: round trips, and what older monitors send.

use std::path::PathBuf;

use berth_monitor_protocol::{
    ContainerState, ErrorCode, ErrorReply, ExitRecord, PROTOCOL_VERSION, Request, Response, Status,
    version_from_hello,
};

fn round_trip_response(r: &Response) -> Response {
    serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()
}

#[test]
fn create_without_restore_omits_it() {
    let line = serde_json::to_string(&Request::Create {
        id: "c1".into(),
        bundle: "/b".into(),
        log_path: "/l".into(),
        stdin: false,
        stdin_once: false,
        restore: None,
    })
    .unwrap();
    assert!(!line.contains("restore"), "{line}");
}

#[test]
fn requests_round_trip() {
    let reqs = [
        Request::Hello,
        Request::Create {
            id: "c1".into(),
            bundle: "/b".into(),
            log_path: "/l".into(),
            stdin: false,
            stdin_once: false,
            restore: None,
        },
        Request::Create {
            id: "c2".into(),
            bundle: "/b".into(),
            log_path: "/l".into(),
            stdin: false,
            stdin_once: false,
            restore: Some(berth_monitor_protocol::RestoreFrom {
                criu: "/usr/local/bin/criu".into(),
                dir: "/var/lib/berth/containers/c2/checkpoint".into(),
                timeout_ms: 30_000,
            }),
        },
        Request::StartAndReport { id: "c1".into() },
        Request::Stop {
            id: "c1".into(),
            signal: 15,
            timeout_ms: 10,
            kill_wait_ms: 20,
        },
        Request::Exec {
            id: "c1".into(),
            args: vec!["true".into()],
            env: vec!["A=1".into()],
            cwd: Some("/tmp".into()),
            timeout_ms: 5,
            max_output: 7,
        },
        Request::Shutdown,
    ];
    for r in reqs {
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r, "{line}");
    }
}

#[test]
fn request_wire_names_are_stable() {
    assert_eq!(
        serde_json::to_string(&Request::Hello).unwrap(),
        r#"{"op":"hello"}"#
    );
    assert_eq!(
        serde_json::to_string(&Request::StartAndReport { id: "x".into() }).unwrap(),
        r#"{"op":"start_and_report","id":"x"}"#
    );
    assert_eq!(
        serde_json::to_string(&Request::CloseStdin { id: "x".into() }).unwrap(),
        r#"{"op":"close_stdin","id":"x"}"#
    );
    // Defaults of optional fields, as older berthds send them.
    let exec: Request = serde_json::from_str(r#"{"op":"exec","id":"x","args":["a"]}"#).unwrap();
    assert_eq!(
        exec,
        Request::Exec {
            id: "x".into(),
            args: vec!["a".into()],
            env: vec![],
            cwd: None,
            timeout_ms: 0,
            max_output: berth_monitor_protocol::DEFAULT_MAX_OUTPUT,
        }
    );
}

#[test]
fn responses_round_trip() {
    let state = ContainerState {
        id: "c1".into(),
        status: Status::Exited,
        pid: 42,
        created_at: 1,
        started_at: 2,
        exit: Some(ExitRecord {
            exit_code: 137,
            signal: 9,
            finished_at: 3,
            oom_killed: true,
        }),
        log_path: PathBuf::from("/log"),
    };
    for r in [
        Response::Ok,
        Response::Hello { version: 1 },
        Response::Created { pid: 7 },
        Response::State(state.clone()),
        Response::List {
            containers: vec![state],
        },
        Response::Exec {
            exit_code: 3,
            stdout: vec![0, 1, 0xfe, 0xff],
            stderr: b"err".to_vec(),
            truncated: true,
            timed_out: false,
        },
        Response::error(
            ErrorCode::FailedPrecondition,
            "start container c1: it is Running",
        ),
    ] {
        assert_eq!(round_trip_response(&r), r);
    }
}

#[test]
fn exec_output_is_hex() {
    let line = serde_json::to_string(&Response::Exec {
        exit_code: 0,
        stdout: vec![0xab, 0x01],
        stderr: vec![],
        truncated: false,
        timed_out: false,
    })
    .unwrap();
    assert!(line.contains(r#""stdout":"ab01""#), "{line}");
    let bad = r#"{"result":"exec","exit_code":0,"stdout":"abc","stderr":""}"#;
    assert!(serde_json::from_str::<Response>(bad).is_err());
}

#[test]
fn typed_error_on_the_wire() {
    let line = serde_json::to_string(&Response::error(
        ErrorCode::NotFound,
        "container c1 not found",
    ))
    .unwrap();
    assert_eq!(
        line,
        r#"{"result":"error","code":"not_found","message":"container c1 not found"}"#
    );
}

#[test]
fn version_0_errors_get_codes_from_their_text() {
    let parse = |line: &str| match serde_json::from_str::<Response>(line).unwrap() {
        Response::Error(e) => e,
        other => panic!("{other:?}"),
    };
    let e = parse(r#"{"result":"error","message":"container c9 not found"}"#);
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "container c9 not found");
    let e = parse(
        r#"{"result":"error","message":"bad request: unknown variant `stop`, expected one of `create`"}"#,
    );
    assert_eq!(e.code, ErrorCode::BadRequest);
    let e = parse(r#"{"result":"error","message":"start container c1: io error"}"#);
    assert_eq!(e.code, ErrorCode::Internal);
    // A code, when present, wins over the text.
    let e = parse(r#"{"result":"error","code":"internal","message":"x not found"}"#);
    assert_eq!(e.code, ErrorCode::Internal);
}

#[test]
fn unknown_codes_of_newer_monitors_still_read() {
    let r: Response =
        serde_json::from_str(r#"{"result":"error","code":"resource_exhausted","message":"m"}"#)
            .unwrap();
    assert_eq!(
        r,
        Response::Error(ErrorReply {
            code: ErrorCode::Unknown,
            message: "m".into()
        })
    );
}

#[test]
fn older_clients_read_new_errors_by_their_text() {
    // What a berthd of before the codes deserialised: `message` only,
    // unknown fields ignored.
    #[derive(serde::Deserialize)]
    #[serde(tag = "result", rename_all = "snake_case")]
    enum OldResponse {
        Error { message: String },
    }
    let line = serde_json::to_string(&Response::error(
        ErrorCode::NotFound,
        "container a not found",
    ))
    .unwrap();
    let OldResponse::Error { message } = serde_json::from_str(&line).unwrap();
    assert!(message.ends_with("not found"));
}

#[test]
fn hello_versions() {
    assert_eq!(
        version_from_hello(Response::Hello {
            version: PROTOCOL_VERSION
        }),
        Ok(PROTOCOL_VERSION)
    );
    // A version-0 monitor does not know `hello`.
    let old: Response = serde_json::from_str(
        r#"{"result":"error","message":"bad request: unknown variant `hello`, expected one of `create`"}"#,
    )
    .unwrap();
    assert_eq!(version_from_hello(old), Ok(0));
    let other = Response::error(ErrorCode::Internal, "boom");
    assert_eq!(version_from_hello(other.clone()), Err(other));
}

#[test]
fn legacy_text_rules() {
    assert_eq!(
        ErrorCode::from_legacy_message("container x not found"),
        ErrorCode::NotFound
    );
    assert_eq!(
        ErrorCode::from_legacy_message("bad request: expected value"),
        ErrorCode::BadRequest
    );
    assert_eq!(
        ErrorCode::from_legacy_message("not found: the bad request"),
        ErrorCode::Internal
    );
}
