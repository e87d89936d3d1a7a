//! StopContainer: the stop signal, then SIGKILL after the timeout, both
//! sent by the pod's monitor, which answers once the exit is recorded.

use std::time::Duration;

use berth_api::v1::ContainerConfig;
use berth_monitor_protocol::{Request, Response};

use super::{ContainerError, Containers, State, internal, monitor};

/// How long StopContainer waits for the SIGKILL it sends after the timeout.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);

impl Containers {
    /// StopContainer: the stop signal, then SIGKILL after `timeout`.
    /// Stopping an exited container is a success.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        let lock = self.op_lock(&rec.id);
        let _op = lock.lock().await;
        self.stop_locked(&rec.id, timeout).await
    }

    pub(super) async fn stop_locked(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<(), ContainerError> {
        let rec = self.must(id)?;
        if rec.state == State::Exited {
            return Ok(());
        }
        // One round trip: the monitor signals, escalates to SIGKILL after
        // the timeout and answers once the exit is recorded.
        tracing::info!(signal = rec.stop_signal, ?timeout, "stopping container");
        let req = Request::Stop {
            id: id.to_string(),
            signal: rec.stop_signal,
            timeout_ms: timeout.as_millis() as u64,
            kill_wait_ms: KILL_WAIT.as_millis() as u64,
        };
        let rec = match monitor::call(&self.monitor_dir(&rec.pod_id), &rec.pod_id, req).await {
            Ok(Response::State(s)) => self.apply(rec, Ok(Some(s)))?,
            Err(e) if e.is_bad_request() => return self.stop_polling(id, timeout).await,
            Err(e) if e.is_not_found() => self.apply(rec, Ok(None))?,
            Err(e @ monitor::CallError::Unreachable { .. }) => self.apply(rec, Err(e))?,
            Err(e) => return Err(internal(e)),
            Ok(other) => {
                return Err(internal(anyhow::anyhow!(
                    "unexpected monitor answer to stop: {other:?}"
                )));
            }
        };
        if rec.state != State::Exited {
            return Err(internal(anyhow::anyhow!(
                "container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
            )));
        }
        Ok(())
    }
}

/// The CRI's stop signal, else the image's `StopSignal`, else SIGTERM. A
/// signal that does not parse (an image's `"0"`, `"-1"`, `"SIGNOPE"`) is
/// SIGTERM with a warning: a bad image must not make every graceful stop
/// fail.
pub(super) fn stop_signal(
    config: &ContainerConfig,
    image: &berth_spec::oci_spec::image::ImageConfiguration,
) -> Result<i32, ContainerError> {
    let cri = berth_api::v1::Signal::try_from(config.stop_signal)
        .unwrap_or(berth_api::v1::Signal::RuntimeDefault);
    let name = if cri != berth_api::v1::Signal::RuntimeDefault {
        berth_api::signal::name(cri).to_string()
    } else {
        image
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone())
            .unwrap_or_default()
    };
    if name.trim().is_empty() {
        return Ok(libc::SIGTERM);
    }
    Ok(parse_signal(&name).unwrap_or_else(|| {
        tracing::warn!(stop_signal = %name, "unknown stop signal; SIGTERM instead");
        libc::SIGTERM
    }))
}

/// A signal as images and the CRI name it: a number (1 to SIGRTMAX), a
/// name with or without `SIG` in any case (`term`, `SIGUSR1`), a real-time
/// signal as `RTMIN+3` / `RTMAX-2` (image configs, as moby parses them) or
/// `RTMINPLUS3` / `RTMAXMINUS2` (the CRI enum's names).
fn parse_signal(name: &str) -> Option<i32> {
    use std::str::FromStr;
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let valid = |n: i32| (1..=max).contains(&n).then_some(n);
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return valid(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str, sep: &[&str]| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = sep.iter().find_map(|s| rest.strip_prefix(s))?;
        digits.parse::<i32>().ok().filter(|n| *n >= 0)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return offset(rest, &["+", "PLUS"]).and_then(|o| valid(min + o).filter(|n| *n <= max));
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return offset(rest, &["-", "MINUS"]).and_then(|o| valid(max - o).filter(|n| *n >= min));
    }
    nix::sys::signal::Signal::from_str(&format!("SIG{bare}"))
        .ok()
        .map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_stop_signal(sig: &str) -> berth_spec::oci_spec::image::ImageConfiguration {
        serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"StopSignal":"{sig}"}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn stop_signal_cri_then_image_then_sigterm() {
        let mut c = ContainerConfig::default();
        let none = image_with_stop_signal("");
        assert_eq!(stop_signal(&c, &none).unwrap(), libc::SIGTERM);
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("SIGQUIT")).unwrap(),
            libc::SIGQUIT
        );
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("usr1")).unwrap(),
            libc::SIGUSR1
        );
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("9")).unwrap(),
            libc::SIGKILL
        );
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("SIGNOPE")).unwrap(),
            libc::SIGTERM
        );
        c.stop_signal = berth_api::v1::Signal::Sigint as i32;
        assert_eq!(
            stop_signal(&c, &image_with_stop_signal("SIGQUIT")).unwrap(),
            libc::SIGINT
        );
    }

    /// Hostile or bogus image StopSignals fall back to SIGTERM; real-time
    /// signals parse in both spellings (create refused SIGRTMIN+3 before).
    #[test]
    fn bogus_stop_signals_fall_back_and_realtime_ones_parse() {
        let c = ContainerConfig::default();
        for bad in [
            "0",
            "-1",
            "65",
            "SIGRTMIN+99",
            "RTMAX-99",
            "SIG",
            "9999999999",
        ] {
            assert_eq!(
                stop_signal(&c, &image_with_stop_signal(bad)).unwrap(),
                libc::SIGTERM,
                "{bad}"
            );
        }
        let rtmin = libc::SIGRTMIN();
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(rtmin + 3));
        assert_eq!(parse_signal("rtmin"), Some(rtmin));
        assert_eq!(parse_signal("SIGRTMAX-1"), Some(libc::SIGRTMAX() - 1));
        assert_eq!(parse_signal("37"), Some(37));
        let cri = ContainerConfig {
            stop_signal: berth_api::v1::Signal::Sigrtminplus3 as i32,
            ..Default::default()
        };
        assert_eq!(
            stop_signal(&cri, &image_with_stop_signal("")).unwrap(),
            rtmin + 3
        );
    }
}
