//! Command-line front ends that do more than parse flags: each prints for a person by default
//! and one JSON object with `--json`, for scripts.
//!
//! `ring` works offline; `app`, `task` and `cluster` (with `events`) are clients of a node's REST
//! API through [`client`] and never touch the database, so they work against any node of a
//! cluster with only a URL and a token.

pub mod alarm;
pub mod app;
pub mod client;
pub mod cluster;
pub mod flags;
pub mod ring;
pub mod schedule;
pub mod table;
pub mod task;
pub mod traffic;
pub mod workflow;

use serde_json::Value;

use client::{CliError, Client};

/// Print one JSON document on stdout (pretty, so it reads well and still parses).
pub fn print_json(v: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError::Transport(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// GET a list (`{"items": [...], "next": ...}`); with `all`, follow `next` links and return every
/// item in one document of the same shape (`next` then null).
pub fn list_pages(client: &Client, path: &str, query: &[(&str, String)], all: bool) -> Result<Value, CliError> {
    let mut page = client.get(path, query)?;
    if !all {
        return Ok(page);
    }
    let mut items = take_items(&mut page);
    while let Some(next) = page["next"].as_str().map(str::to_string) {
        page = client.get(&next, &[])?;
        items.extend(take_items(&mut page));
    }
    Ok(serde_json::json!({ "items": items, "next": null }))
}

fn take_items(page: &mut Value) -> Vec<Value> {
    match page["items"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The `items` of a list document (empty when missing).
pub fn items(page: &Value) -> &[Value] {
    page["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Parse `key=value` for repeatable selector flags (the same rule as node labels).
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    crate::config::parse_label(s).map_err(|e| format!("{e} (write key=value, e.g. dc=dc1)"))
}

/// Parse a JSON flag value (`--spec`, `--payload`): usage errors name the problem.
pub fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

/// Parse an RFC 3339 time flag and give it back in UTC with a `Z` (safe in a query string).
pub fn parse_time(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .map_err(|e| format!("not an RFC 3339 time like 2030-01-01T00:00:00Z: {e}"))
}

/// An application id, or the id of the application with that name (a name that is all digits
/// cannot be used: the id wins). The API has no lookup by name, so names are found by listing.
pub fn resolve_app(client: &Client, app: &str) -> Result<i64, CliError> {
    if let Ok(id) = app.parse::<i64>() {
        return Ok(id);
    }
    let all = list_pages(client, "/api/v1/apps", &[("limit", "500".into())], true)?;
    items(&all)
        .iter()
        .find(|a| a["name"].as_str() == Some(app))
        .and_then(|a| a["id"].as_i64())
        .ok_or_else(|| CliError::Input(format!("no application named `{app}` (see `rota app list`)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_utc() {
        assert_eq!(parse_time("2030-01-01T02:00:00+02:00").unwrap(), "2030-01-01T00:00:00.000Z");
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn json_flags() {
        assert_eq!(parse_json(r#"{"a":1}"#).unwrap()["a"], 1);
        assert!(parse_json("{a:1}").unwrap_err().starts_with("not valid JSON"));
    }
}
