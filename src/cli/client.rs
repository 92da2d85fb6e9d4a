//! A small blocking client for a node's REST API (`/api/v1`), shared by the admin commands.
//!
//! Why it exists: every command needs the same four things — the base URL, the bearer token,
//! JSON in and out, and one way to turn a failure into a message that says what to do (start the
//! node, set the token, fix a field). Keeping that here lets the command modules read as "call,
//! then print".
//!
//! It must never print the token, talk to the database, or interpret resources: it returns the
//! API's JSON as is ([`serde_json::Value`]) and leaves the shape to the caller.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// How long one HTTP request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the node is and how to authenticate: the flags every admin command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Base URL of a Rota node.
    #[arg(long, env = "ROTA_URL", default_value = "http://127.0.0.1:8080", global = true, value_name = "URL")]
    pub url: String,
    /// API token, sent as `Authorization: Bearer …` (needed when the node has `[api] tokens`).
    #[arg(long, env = "ROTA_TOKEN", hide_env_values = true, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON (one document) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Why a command failed; [`CliError::render`] turns it into the lines printed on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Nothing answered at the URL (refused, unknown host, connect timeout).
    Unreachable {
        /// The base URL tried.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// The API answered with an error document.
    Api {
        /// HTTP status.
        status: u16,
        /// `error.code` (`not_found`, `invalid`, …).
        code: String,
        /// `error.message`.
        message: String,
        /// `error.fields[]` as (field, message).
        fields: Vec<(String, String)>,
    },
    /// The request failed after connecting, or the answer was not the JSON expected.
    Transport(String),
    /// Bad local input the flags could not check (an unreadable file, an unknown name).
    Input(String),
    /// The command ran but its outcome was a failure (a task failed, a wait timed out).
    Failed(String),
}

impl CliError {
    /// The lines for stderr: `error: …`, then each invalid field, then a hint where one helps.
    pub fn render(&self) -> String {
        match self {
            CliError::Unreachable { url, reason } => {
                format!("error: cannot reach the Rota node at {url} (is it running? set --url or ROTA_URL)\n  cause: {reason}")
            }
            CliError::Api { status, message, fields, .. } => {
                let mut out = format!("error: {message}");
                for (field, msg) in fields {
                    out.push_str(&format!("\n  {field}: {msg}"));
                }
                match status {
                    401 => out.push_str("\nhint: set --token or ROTA_TOKEN to one of the node's API tokens ([api] tokens)"),
                    403 => out.push_str("\nhint: this needs an admin token: set --token or ROTA_TOKEN to a token with scope = \"admin\""),
                    _ => {}
                }
                out
            }
            CliError::Transport(m) | CliError::Input(m) | CliError::Failed(m) => format!("error: {m}"),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for CliError {}

/// A client bound to one node and token.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl fmt::Debug for Client {
    // By hand, so the token cannot reach a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Client {
    /// A client for the node at `args.url` (a trailing `/` is ignored).
    pub fn new(args: &ApiArgs) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Client {
            agent,
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
        }
    }

    /// The base URL, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` (path starts with `/api/v1`, may carry its own query), plus `query` pairs.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        self.finish(self.auth(req).call())
    }

    /// `POST path` with a JSON body, or an empty body for `None`.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let req = self.auth(self.agent.post(self.url(path)));
        self.finish(match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        })
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.finish(self.auth(self.agent.patch(self.url(path))).send_json(body))
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.finish(self.auth(self.agent.put(self.url(path))).send_json(body))
    }

    /// `DELETE path` plus `query` pairs; an empty answer (204) is `Value::Null`.
    pub fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let mut req = self.agent.delete(self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        self.finish(self.auth(req).call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, CliError> {
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| self.transport_error(e))?;
        parse_answer(status, &text)
    }

    fn transport_error(&self, e: ureq::Error) -> CliError {
        let unreachable = match &e {
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
            _ => false,
        };
        if unreachable {
            CliError::Unreachable { url: self.base.clone(), reason: e.to_string() }
        } else {
            CliError::Transport(format!("request to {} failed: {e}", self.base))
        }
    }
}

/// Turn a status and body into the JSON document or the API's error.
fn parse_answer(status: u16, text: &str) -> Result<Value, CliError> {
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).map_err(|e| {
            let start: String = text.chars().take(200).collect();
            CliError::Transport(format!("the node answered HTTP {status} with a body that is not JSON ({e}): {start}"))
        })?
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let err = &body["error"];
    let message =
        err["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("the node answered HTTP {status}"));
    let fields = err["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (f["field"].as_str().unwrap_or("?").to_string(), f["message"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Err(CliError::Api { status, code: err["code"].as_str().unwrap_or("").to_string(), message, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_empty_bodies() {
        assert_eq!(parse_answer(200, r#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(parse_answer(204, "").unwrap(), Value::Null);
    }

    #[test]
    fn api_errors_keep_message_and_fields() {
        let body = r#"{"error":{"code":"invalid","message":"spec.command: required","fields":[{"field":"spec.command","message":"required"}]}}"#;
        let err = parse_answer(422, body).unwrap_err();
        let text = err.render();
        assert!(text.starts_with("error: spec.command: required"), "{text}");
        assert!(text.contains("\n  spec.command: required"), "{text}");
    }

    #[test]
    fn auth_errors_hint_at_the_token() {
        let err = parse_answer(401, r#"{"error":{"code":"unauthorized","message":"unknown token"}}"#).unwrap_err();
        assert!(err.render().contains("ROTA_TOKEN"));
        let err = parse_answer(403, r#"{"error":{"code":"forbidden","message":"read scope"}}"#).unwrap_err();
        assert!(err.render().contains("admin"));
    }

    #[test]
    fn non_json_is_a_transport_error() {
        assert!(matches!(parse_answer(502, "<html>bad gateway</html>"), Err(CliError::Transport(_))));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = Client::new(&ApiArgs { url: "http://x/".into(), token: Some("s3cret-s3cret".into()), json: false });
        assert_eq!(c.base(), "http://x");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
