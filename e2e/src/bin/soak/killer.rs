//! The killer: berthd SIGKILLed every `--kill-every` seconds and restarted at once; the pods
//! no RPC was changing at the kill must be there after it, as they were.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::Berthd;

use crate::fatal::fatal;
use crate::shared::{Held, Shared, stamp};

/// Checks, after a restart, every pod noted before the kill.
async fn verify(sh: &Shared, c: &mut CriClient, noted: &BTreeMap<String, Held>) {
    for (pod, h) in noted {
        let s = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().status.unwrap_or_default());
        match s {
            Ok(s) => {
                let ip = s.network.unwrap_or_default().ip;
                if s.state != PodSandboxState::SandboxReady as i32 || ip != h.ip {
                    sh.lost(format!(
                        "pod {} ({pod}) after restart: state {}, IP {ip:?} (was READY, {:?})",
                        h.name, s.state, h.ip
                    ));
                }
            }
            Err(e) => sh.lost(format!(
                "pod {} ({pod}) after restart: {:?}: {}",
                h.name,
                e.code(),
                e.message()
            )),
        }
        let Some(ctr) = &h.ctr else { continue };
        let want = h.ctr_state;
        match berth_e2e::pods::status(c, ctr).await {
            Ok(s) if s.state == want as i32 => {}
            Ok(s) => sh.lost(format!(
                "container of {} ({ctr}) after restart: {s:?}, want {want:?}",
                h.name
            )),
            Err(e) => sh.lost(format!(
                "container of {} ({ctr}) after restart: {:?}: {}",
                h.name,
                e.code(),
                e.message()
            )),
        }
        if want == ContainerState::ContainerRunning {
            match berth_e2e::pods::exec(c, ctr, &["true"], 10).await {
                Ok(r) if r.exit_code == 0 => {}
                other => sh.lost(format!(
                    "ExecSync in {} ({ctr}) after restart: {other:?}",
                    h.name
                )),
            }
        }
        sh.n.verified.fetch_add(1, Ordering::Relaxed);
    }
}

/// Kills berthd every `every` until told to stop; returns the daemon.
pub async fn killer(sh: Arc<Shared>, mut d: Berthd, every: Duration, end: Instant) -> Berthd {
    if every.is_zero() {
        return d;
    }
    loop {
        let next = Instant::now() + every;
        if next >= end {
            return d;
        }
        tokio::time::sleep_until(next.into()).await;
        if sh.stop.load(Ordering::Relaxed) {
            return d;
        }
        let pid = d.pid().expect("berthd runs") as i32;
        // Under the lock: no worker starts changing a noted pod before the kill.
        let noted: BTreeMap<String, Held> = {
            let held = sh.held.lock().unwrap();
            sh.life.send_modify(|l| l.up = false);
            sh.daemon_pid.store(0, Ordering::Relaxed);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            held.iter()
                .filter(|(_, h)| !h.busy)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        // Reaps it (a second SIGKILL to a dead process is harmless).
        if let Err(e) = d.kill9().await {
            fatal(&d, &format!("kill -9 of berthd: {e:#}"));
        }
        eprintln!(
            "[{}] killed berthd (pid {pid}); {} pods noted",
            stamp(),
            noted.len()
        );
        if let Err(e) = d.restart().await {
            fatal(&d, &format!("restart of berthd: {e:#}"));
        }
        let mut c = match d.client().await {
            Ok(c) => c,
            Err(e) => fatal(&d, &format!("connecting to the restarted berthd: {e:#}")),
        };
        verify(&sh, &mut c, &noted).await;
        sh.n.restarts.fetch_add(1, Ordering::Relaxed);
        sh.daemon_pid
            .store(d.pid().unwrap_or_default(), Ordering::Relaxed);
        eprintln!(
            "[{}] berthd restarted (pid {}); noted pods checked",
            stamp(),
            d.pid().unwrap_or_default()
        );
        sh.life.send_modify(|l| {
            l.generation += 1;
            l.up = true;
            l.client = c;
        });
    }
}
