//! Step timing of one operation (CreateContainer, RemoveContainer), shown
//! in its log line as `step=1.23ms step=0.45ms`.

use std::time::Instant;

/// Step durations of one operation, for its log line.
pub struct Laps {
    last: Instant,
    steps: String,
}

impl Laps {
    pub fn new() -> Laps {
        Laps {
            last: Instant::now(),
            steps: String::new(),
        }
    }

    /// Ends `step`: the time since the previous mark (or since `new`).
    pub fn mark(&mut self, step: &str) {
        use std::fmt::Write;
        let now = Instant::now();
        let sep = if self.steps.is_empty() { "" } else { " " };
        let _ = write!(
            self.steps,
            "{sep}{step}={:.2}ms",
            (now - self.last).as_secs_f64() * 1e3
        );
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.steps)
    }
}
