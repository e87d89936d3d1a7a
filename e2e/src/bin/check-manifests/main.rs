//! Checks Kubernetes manifests against the API types of Kubernetes 1.37 (k8s-openapi
//! `v1_37`), without a cluster: `hack/chart-check.sh` feeds it `helm template`'s output,
//! converted to JSON, one document per line. Each document must deserialize into its kind's
//! type, and serializing that back must give the same document: a field the API does not have
//! (a typo, a field at the wrong level), a wrong type or a missing required field is an error,
//! named by its path. Exit status 1 on any error.

use std::io::BufRead;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    let (mut docs, mut errors) = (0, 0);
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(l) if l.trim().is_empty() => continue,
            Ok(l) => l,
            Err(e) => {
                eprintln!("check-manifests: reading stdin: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        docs += 1;
        let doc: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("document {}: not JSON: {e}", n + 1);
                errors += 1;
                continue;
            }
        };
        let name = format!(
            "{} {}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        let problems = check(&doc);
        for p in &problems {
            eprintln!("{name}: {p}");
        }
        if problems.is_empty() {
            println!("ok  {name}");
        }
        errors += problems.len();
    }
    println!("{docs} documents, {errors} errors");
    if errors == 0 && docs > 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// What is wrong with one document (empty: nothing).
fn check(doc: &Value) -> Vec<String> {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(doc),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
        ("v1", "Secret") => round_trip::<Secret>(doc),
        ("v1", "Service") => round_trip::<Service>(doc),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
        ("v1", "Namespace") => round_trip::<Namespace>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc),
        _ => vec![format!(
            "apiVersion {api:?} kind {kind:?}: not a kind this check knows (add it to check-manifests)"
        )],
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Vec<String> {
    let typed: T = match serde_json::from_value(doc.clone()) {
        Ok(t) => t,
        Err(e) => return vec![format!("does not fit the API type: {e}")],
    };
    let back = match serde_json::to_value(&typed) {
        Ok(v) => v,
        Err(e) => return vec![format!("cannot serialize back: {e}")],
    };
    let mut problems = Vec::new();
    diff("", doc, &back, &mut problems);
    problems
}

/// Paths where `orig` has what `back` (the typed round trip) lost or changed.
fn diff(path: &str, orig: &Value, back: &Value, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => diff(&p, v, bv, out),
                    // An explicit null is the same as no field.
                    None if v.is_null() => {}
                    None => out.push(format!("{p}: no such field in the API")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), ov, bv, out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("{path}: {o} reads back as {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(container: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [container]}}}})
    }

    #[test]
    fn valid_documents_pass() {
        assert_eq!(
            check(&ds(
                json!({"name": "c", "image": "i", "command": ["sleep"]})
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unknown_fields_wrong_types_and_kinds_are_named() {
        let p = check(&ds(json!({"name": "c", "image": "i", "comand": ["sleep"]})));
        assert_eq!(
            p,
            [".spec.template.spec.containers[0].comand: no such field in the API"]
        );
        let p = check(&ds(json!({"name": "c", "image": "i", "command": "sleep"})));
        assert!(p[0].contains("does not fit the API type"), "{p:?}");
        let p = check(&json!({"apiVersion": "v1", "kind": "Pod"}));
        assert!(p[0].contains("not a kind this check knows"), "{p:?}");
    }
}
