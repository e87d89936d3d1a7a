//! Timing: milliseconds of a call, median and p90 of samples, the per-step table.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Awaits `call` and returns its value with the time it took, in ms.
pub async fn timed<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, f64)> {
    let t = Instant::now();
    let v = call.await?;
    Ok((v, ms(t.elapsed())))
}

/// (median, p90) of durations in ms; p90 by nearest rank.
pub fn stats(samples: &[f64]) -> (f64, f64) {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p90 = v[((n * 9).div_ceil(10)).max(1) - 1];
    (median, p90)
}

/// The `p`-th percentile (0-100) of samples by nearest rank; NaN for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Samples in ms by step name.
#[derive(Default)]
pub struct Samples(BTreeMap<&'static str, Vec<f64>>);

impl Samples {
    /// Adds one iteration's steps.
    pub fn add(&mut self, steps: impl IntoIterator<Item = (&'static str, f64)>) {
        for (k, v) in steps {
            self.0.entry(k).or_default().push(v);
        }
    }

    /// The samples of `step` (none: empty).
    pub fn get(&self, step: &str) -> &[f64] {
        self.0.get(step).map_or(&[], |v| v.as_slice())
    }

    /// The steps that have samples, in name order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }

    /// Prints `  STEP  median .. ms  p99 .. ms  (n=..)` for each of `steps` (p99 by nearest
    /// rank) and returns them as JSON: `{STEP: {median_ms, p99_ms, n}}`.
    pub fn p99_table(&self, steps: &[&str]) -> Value {
        let mut out = serde_json::Map::new();
        for step in steps {
            let v = self.get(step);
            if v.is_empty() {
                println!("  {step:<24} {:>8}", "-");
                continue;
            }
            let (median, p99) = (stats(v).0, percentile(v, 99.0));
            println!(
                "  {step:<24} median {median:8.2} ms  p99 {p99:8.2} ms  (n={})",
                v.len()
            );
            out.insert(
                step.to_string(),
                json!({"median_ms": median, "p99_ms": p99, "n": v.len()}),
            );
        }
        Value::Object(out)
    }

    /// Prints `  STEP  median  p90` for each of `steps` ("-" when it has no samples) and
    /// returns them as JSON: `{STEP: {median_ms, p90_ms, n}}`.
    pub fn table(&self, steps: &[&str]) -> Value {
        let mut out = serde_json::Map::new();
        for step in steps {
            let Some(v) = self.0.get(step).filter(|v| !v.is_empty()) else {
                println!("  {step:<24} {:>8}", "-");
                continue;
            };
            let (median, p90) = stats(v);
            println!("  {step:<24} {median:8.2} {p90:8.2}");
            out.insert(
                step.to_string(),
                json!({"median_ms": median, "p90_ms": p90, "n": v.len()}),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 15.0);
        assert_eq!(percentile(&v, 90.0), 27.0);
        // Under 100 samples, p99 is the largest.
        assert_eq!(percentile(&v, 99.0), 30.0);
        assert_eq!(percentile(&[4.0], 99.0), 4.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(stats(&v), (15.5, 27.0));
    }
}
