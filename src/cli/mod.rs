//! Command-line front ends that do more than parse flags: each prints for a person by default
//! and one JSON object with `--json`, for scripts.

pub mod ring;
