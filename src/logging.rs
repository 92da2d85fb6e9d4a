//! Log output: `tracing` with readable lines by default, one JSON object per line on request.
//! `RUST_LOG`, when set, wins over the configured level.
//!
//! The dispatch path opens a span per owned application (`app.id`) and per command or job
//! (`task.id`), so every line logged while a command runs can be followed by its id: in text the
//! span's fields prefix the line, in JSON they are the `span` object.

use std::io::IsTerminal;

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
