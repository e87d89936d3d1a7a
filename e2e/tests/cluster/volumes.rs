//! Volumes the kubelet prepares and Berth mounts: emptyDir (disk, memory), configMap, secret,
//! projected service-account token, hostPath, subPath; an image volume (the kubelet pulls the
//! image, Berth mounts it read-only, whole or by subPath).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::json;

use crate::common::*;
use crate::node::*;

/// `key=value` lines a checking script printed.
fn parse(logs: &str) -> BTreeMap<String, String> {
    logs.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn volumes_prepared_by_the_kubelet() {
    let ns = TestNs::new("volumes").await;
    let dir = NodeDir::new(&ns.name);
    let host_dir = dir.path.clone();
    node_write(&dir.node, &format!("{host_dir}/from-host"), "host-data");

    ns.create::<ConfigMap>(json!({
        "metadata": { "name": "cfg" },
        "data": { "greeting": "hello-config", "app.conf": "port=8080" },
    }))
    .await;
    ns.create::<Secret>(json!({
        "metadata": { "name": "sec" },
        "stringData": { "password": "s3cret" },
    }))
    .await;

    // fs TYPE of a mount point, from the container's own mount table.
    let script = r#"
fstype() { awk -v m="$1" '$2 == m {print $3}' /proc/mounts | tail -n1; }
echo disk-fstype=$(fstype /disk)
echo data > /disk/f && echo disk-write=$(cat /disk/f)
echo mem-fstype=$(fstype /mem)
echo data > /mem/f && echo mem-write=$(cat /mem/f)
echo config=$(cat /config/greeting)
echo secret=$(cat /secret/password)
echo secret-mode=$(stat -L -c %a /secret/password)
echo secret-fstype=$(fstype /secret)
echo token-parts=$(awk -F. '{print NF}' /token/token)
echo sa-token-parts=$(awk -F. '{print NF}' /var/run/secrets/kubernetes.io/serviceaccount/token)
echo sa-namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)
echo sa-ca=$(head -n1 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)
echo host=$(cat /host/from-host)
echo from-pod > /host/from-pod
echo subpath-file=$(cat /etc/app/app.conf)
echo subpath-dir-listing=$(ls /etc/app | tr '\n' ,)
echo sub > /sub/f
echo done=yes
"#;
    let mut c = busybox("check", script);
    c["volumeMounts"] = json!([
        { "name": "disk", "mountPath": "/disk" },
        { "name": "mem", "mountPath": "/mem" },
        { "name": "cfg", "mountPath": "/config" },
        { "name": "sec", "mountPath": "/secret" },
        { "name": "token", "mountPath": "/token" },
        { "name": "host", "mountPath": "/host" },
        { "name": "cfg", "mountPath": "/etc/app/app.conf", "subPath": "app.conf" },
        { "name": "disk", "mountPath": "/sub", "subPath": "nested/dir" },
    ]);
    // A second container sees what the first wrote under the emptyDir's subPath.
    let mut reader = busybox(
        "reader",
        "while [ ! -f /disk/nested/dir/f ]; do sleep 0.2; done; echo nested=$(cat /disk/nested/dir/f)",
    );
    reader["volumeMounts"] = json!([{ "name": "disk", "mountPath": "/disk" }]);
    let volumes = json!({ "nodeName": dir.node, "volumes": [
        { "name": "disk", "emptyDir": {} },
        { "name": "mem", "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } },
        { "name": "cfg", "configMap": { "name": "cfg" } },
        { "name": "sec", "secret": { "secretName": "sec", "defaultMode": 0o400 } },
        { "name": "token", "projected": { "sources": [
            { "serviceAccountToken": { "path": "token", "expirationSeconds": 3600, "audience": "berth-e2e" } },
        ] } },
        { "name": "host", "hostPath": { "path": host_dir, "type": "Directory" } },
    ] });
    let (_, logs) = ns
        .run_to_success(
            pod("volumes", "Never", vec![c, reader], volumes),
            Duration::from_secs(90),
        )
        .await;
    let got = parse(&logs);
    let want = [
        ("disk-write", "data"),
        ("mem-fstype", "tmpfs"),
        ("mem-write", "data"),
        ("config", "hello-config"),
        ("secret", "s3cret"),
        ("secret-mode", "400"),
        ("secret-fstype", "tmpfs"),
        ("token-parts", "3"),
        ("sa-token-parts", "3"),
        ("sa-namespace", ns.name.as_str()),
        ("sa-ca", "-----BEGIN CERTIFICATE-----"),
        ("host", "host-data"),
        ("subpath-file", "port=8080"),
        ("subpath-dir-listing", "app.conf,"),
        ("done", "yes"),
    ];
    for (key, value) in want {
        assert_eq!(
            got.get(key).map(String::as_str),
            Some(value),
            "{key}; the pod printed:\n{logs}"
        );
    }
    assert_ne!(
        got.get("disk-fstype").map(String::as_str),
        Some("tmpfs"),
        "a disk emptyDir on tmpfs:\n{logs}"
    );
    assert_eq!(
        node_read(&dir.node, &format!("{host_dir}/from-pod")).as_deref(),
        Some("from-pod\n")
    );
    let reader = ns.logs("volumes", Some("reader")).await;
    assert_eq!(
        reader, "nested=sub\n",
        "the subPath write is not in the emptyDir"
    );
}

/// An image volume (`volumes[].image`, GA in 1.36): the kubelet pulls the image through the
/// CRI and passes it as `Mount.image`; Berth mounts its layers read-only, the whole image and a
/// subPath of it.
#[tokio::test]
async fn image_volume_mounted_read_only_whole_and_by_sub_path() {
    let ns = TestNs::new("imagevol").await;
    let script = r#"
echo whole=$(test -f /vol/etc/nginx/nginx.conf && echo yes)
echo sub=$(test -f /conf/nginx.conf && echo yes)
echo sub-same=$(cmp -s /conf/nginx.conf /vol/etc/nginx/nginx.conf && echo yes)
echo sub-only=$(test -e /conf/etc && echo no || echo yes)
echo write=$(touch /vol/x 2>/dev/null && echo allowed || echo refused)
echo ro=$(awk '$2 == "/vol" {print $4}' /proc/mounts | tr , '\n' | grep -qx ro && echo yes)
"#;
    let mut c = busybox("app", script);
    c["volumeMounts"] = json!([
        { "name": "img", "mountPath": "/vol" },
        { "name": "img", "mountPath": "/conf", "subPath": "etc/nginx" },
    ]);
    let volumes = json!({ "volumes": [
        { "name": "img", "image": { "reference": NGINX, "pullPolicy": "IfNotPresent" } },
    ] });
    let (_, logs) = ns
        .run_to_success(
            pod("imagevol", "Never", vec![c], volumes),
            Duration::from_secs(90),
        )
        .await;
    let got = parse(&logs);
    for key in ["whole", "sub", "sub-same", "sub-only", "ro"] {
        assert_eq!(
            got.get(key).map(String::as_str),
            Some("yes"),
            "{key}; the pod printed:\n{logs}"
        );
    }
    assert_eq!(
        got.get("write").map(String::as_str),
        Some("refused"),
        "{logs}"
    );
}
