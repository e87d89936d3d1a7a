//! The SIGTERM ignorer: every ~30 s StopContainer with a 2 s grace (it must end by
//! SIGKILL about 2 s later), RemoveContainer, and a new one in its place.

use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::client::CriClient;

use crate::cri::{Tenant, container, status};
use crate::report::Outcome;
use crate::specs::IGNORER;

const PERIOD: Duration = Duration::from_secs(30);
const GRACE_S: i64 = 2;

pub async fn cycle(mut c: CriClient, mut t: Tenant, end: Instant) -> Outcome {
    let mut o = Outcome::new("SIGTERM ignorer");
    let mut stops_ms = vec![];
    let mut codes = vec![];
    let mut attempt = 0;
    loop {
        let next = Instant::now() + PERIOD;
        if next >= end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let t0 = Instant::now();
        let r = c
            .runtime
            .stop_container(StopContainerRequest {
                container_id: t.ctr.clone(),
                timeout: GRACE_S,
            })
            .await;
        let took = t0.elapsed();
        if let Err(s) = r {
            o.note(format!("StopContainer: {:?}: {}", s.code(), s.message()));
            continue;
        }
        stops_ms.push(took.as_secs_f64() * 1e3);
        if !(1.5..6.0).contains(&took.as_secs_f64()) {
            o.note(format!(
                "StopContainer (grace {GRACE_S} s) took {:.2} s",
                took.as_secs_f64()
            ));
        }
        match status(&mut c, &t.ctr).await {
            Ok(s) if s.state == ContainerState::ContainerExited as i32 => {
                codes.push(s.exit_code);
                if s.exit_code != 137 {
                    o.note(format!("exit code {} after the stop, not 137", s.exit_code));
                }
            }
            Ok(s) => o.note(format!("after StopContainer: state {}", s.state)),
            Err(e) => o.note(format!("{e:#}")),
        }
        if let Err(s) = c
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: t.ctr.clone(),
            })
            .await
        {
            o.note(format!("RemoveContainer: {:?}: {}", s.code(), s.message()));
        }
        attempt += 1;
        match container(&mut c, &t, IGNORER, attempt).await {
            Ok(id) => t.ctr = id,
            Err(e) => {
                o.note(format!("recreating: {e:#}"));
                break;
            }
        }
    }
    let fmt: Vec<String> = stops_ms
        .iter()
        .map(|ms| format!("{:.2}", ms / 1e3))
        .collect();
    o.line(format!(
        "{} stops with a {GRACE_S} s grace, durations (s): [{}]; exit codes {:?}",
        stops_ms.len(),
        fmt.join(", "),
        codes
    ));
    o
}
