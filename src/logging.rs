//! Log output: `tracing` with readable lines by default, one JSON object per line on request.
//! `RUST_LOG`, when set, wins over the configured level.
//!
//! The dispatch path opens a span per owned application (`app.id`) and per command or job
//! (`task.id`), so every line logged while a command runs can be followed by its id: in text the
//! span's fields prefix the line, in JSON they are the `span` object.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber (once, at start-up). Logs go to stderr.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests calling in-process) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}

/// Which of a repeated warning's occurrences to log: the first, then at most one per period,
/// each saying how many were held back since the one before. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    /// At most one logged occurrence per `period`.
    pub const fn new(period: Duration) -> Self {
        Self { period, last: None, held: 0 }
    }

    /// An occurrence at `now`: `Some(held)` to log it, with the number held back since the last
    /// one logged; `None` to hold it back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// The condition ended: the number held back since the last logged occurrence (for a last
    /// line saying so), and the next occurrence is logged at once.
    pub fn reset(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.held)
    }

    /// Whether an occurrence was logged since the last reset: the condition is on.
    pub fn active(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_period_with_the_count_held_back() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.admit(ms(0)), Some(0));
        // Every 100 ms for 10 s: all held back.
        let held = (1..100).filter(|i| limit.admit(ms(i * 100)).is_none()).count();
        assert_eq!(held, 99);
        assert_eq!(limit.admit(ms(10_000)), Some(99));
        assert_eq!(limit.admit(ms(10_100)), None);
        assert!(limit.active());
        // The condition ends, then comes back: its first occurrence is logged at once.
        assert_eq!(limit.reset(), 1);
        assert!(!limit.active());
        assert_eq!(limit.admit(ms(10_200)), Some(0));
        assert_eq!(limit.admit(ms(10_300)), None);
    }
}
