//! The exec storm: 200 ExecSync at once into one container, every ~30 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::client::CriClient;

use crate::cri::{Tenant, exec};
use crate::probes::Probes;
use crate::report::Outcome;

const AT_ONCE: usize = 200;
const PERIOD: Duration = Duration::from_secs(30);

pub async fn run(c: CriClient, t: Tenant, probes: Arc<Probes>, end: Instant) -> Outcome {
    let mut o = Outcome::new("exec storm");
    // Off the SIGTERM ignorer's beat.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut n = 0;
    while Instant::now() < end {
        let t0 = Instant::now();
        let calls: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (mut c, id) = (c.clone(), t.ctr.clone());
                tokio::spawn(async move { exec(&mut c, &id, &["sh", "-c", "echo hi"], 30).await })
            })
            .collect();
        let (mut ok, mut failed, mut max_ms, mut errors) = (0, 0, 0.0f64, vec![]);
        for call in calls {
            match call.await {
                Ok((Ok(r), took)) if r.exit_code == 0 && r.stdout == b"hi\n" => {
                    ok += 1;
                    max_ms = max_ms.max(took.as_secs_f64() * 1e3);
                }
                Ok((r, took)) => {
                    failed += 1;
                    max_ms = max_ms.max(took.as_secs_f64() * 1e3);
                    let e = match r {
                        Ok(r) => format!(
                            "exit {} stdout {:?} stderr {:?}",
                            r.exit_code,
                            String::from_utf8_lossy(&r.stdout),
                            String::from_utf8_lossy(&r.stderr)
                        ),
                        Err(e) => format!("{e:#}"),
                    };
                    if !errors.contains(&e) && errors.len() < 3 {
                        errors.push(e);
                    }
                }
                Err(e) => {
                    failed += 1;
                    errors.push(format!("task: {e}"));
                }
            }
        }
        n += 1;
        let wall = t0.elapsed();
        // The well-behaved pods' probes begun during the storm.
        let (p50, _, pmax) = probes.percentiles_between(Some((t0, t0 + wall)));
        o.line(format!(
            "storm {n}: {ok} ok, {failed} failed, wall {:.2} s, slowest {:.0} ms; probes meanwhile p50 {p50:.0} ms, max {pmax:.0} ms",
            wall.as_secs_f64(),
            max_ms
        ));
        for e in errors {
            o.note(format!("storm {n}: {e}"));
        }
        let next = t0 + PERIOD;
        if next >= end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    o
}
