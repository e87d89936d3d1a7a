//! The node a test pod runs on, reached from the test: this machine for hack/cluster.sh's
//! single node, or a kind node's container for hack/kind.sh, whose `test` sets
//! BERTH_E2E_NODE_EXEC="podman exec -i" (the node's name follows it; -i passes stdin on) and
//! BERTH_NODE_NAME (the worker tests pin their pods to when they need its files). Files are
//! read and written through commands run on the node (`cat`, `mkdir`, ...), so the same test
//! code serves both.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{node_name, text};

/// `program` run on `node`.
pub fn on_node(node: &str, program: &str) -> Command {
    match std::env::var("BERTH_E2E_NODE_EXEC") {
        Ok(prefix) if !prefix.trim().is_empty() => {
            let mut words = prefix.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(node).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// What `program args` printed on `node`; Err with its stderr when it failed.
pub fn node_run(node: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out: Output = on_node(node, program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} on {node}: {e}"));
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "{program} {args:?} on {node}: {}",
            text(&out.stderr)
        ))
    }
}

/// A file of the node, if it can be read.
pub fn node_read(node: &str, path: &str) -> Option<String> {
    node_run(node, "cat", &[path]).ok()
}

pub fn node_exists(node: &str, path: &str) -> bool {
    node_run(node, "test", &["-e", path]).is_ok()
}

/// The names in a directory of the node (none if it cannot be listed).
pub fn node_list(node: &str, dir: &str) -> Vec<String> {
    node_run(node, "ls", &["-1A", dir])
        .map(|out| out.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Writes `contents` to a file of the node.
pub fn node_write(node: &str, path: &str, contents: &str) {
    let mut child = on_node(node, "sh")
        .args(["-c", "cat > \"$0\"", path])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("write {path} on {node}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "write {path} on {node}");
}

/// A directory made on the node for a test (hostPath volumes), removed when dropped.
pub struct NodeDir {
    pub node: String,
    pub path: String,
}

impl NodeDir {
    /// /tmp/berth-e2e-<name> on the node tests pin their pods to ([`node_name`]).
    pub fn new(name: &str) -> NodeDir {
        let node = node_name();
        let path = format!("/tmp/berth-e2e-{name}");
        node_run(&node, "mkdir", &["-p", &path]).unwrap();
        NodeDir { node, path }
    }
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        let _ = node_run(&self.node, "rm", &["-rf", &self.path]);
    }
}
