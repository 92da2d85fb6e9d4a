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
        /// `error.message`; empty when it only joined the fields' messages (they are printed
        /// instead, so nothing is said twice).
        message: String,
        /// `error.fields[]` as (field, message): the API's field names until
        /// [`CliError::with_flags`] names them by the flags that set them.
        fields: Vec<(String, String)>,
    },
    /// A flag's value the CLI checks itself before it asks the node (an unreadable
    /// `--spec-file`, nothing to change): exit 2, like clap's own usage errors.
    Usage(String),
    /// The request failed after connecting, or the answer was not the JSON expected.
    Transport(String),
    /// A name that resolves to nothing (`rota app show web` with no application `web`).
    Input(String),
    /// The command ran but its outcome was a failure (a task failed, a wait timed out).
    Failed(String),
}

impl CliError {
    /// The process's exit code: 2 for a usage error (the command line is wrong; the README's
    /// promise, the same as clap's), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The same error with the API's field names replaced by the flags of the command that sent
    /// them ([`super::flags`]), so the message says what to type.
    pub fn with_flags(self, flags: &[super::flags::Flag]) -> CliError {
        match self {
            CliError::Api { status, code, message, fields } => CliError::Api {
                status,
                code,
                message: super::flags::rewrite(&message, flags),
                fields: fields
                    .into_iter()
                    .map(|(f, m)| {
                        // A field's own name in its message stays a word: the flag leads the line.
                        let others: Vec<_> = flags.iter().copied().filter(|fl| fl.api != f).collect();
                        (super::flags::field(&f, flags), super::flags::rewrite(&m, &others))
                    })
                    .collect(),
            },
            other => other,
        }
    }

    /// The lines for stderr, each thing said once: `error: …` (the message, or the one invalid
    /// field), then each invalid field when there are several, then a hint where one helps.
    pub fn render(&self) -> String {
        match self {
            CliError::Unreachable { url, reason } => {
                format!("error: cannot reach the Rota node at {url} (is it running? set --url or ROTA_URL)\n  cause: {reason}")
            }
            CliError::Api { status, message, fields, .. } => {
                let mut out = match (message.is_empty(), fields.as_slice()) {
                    (true, [(field, msg)]) => format!("error: {field}: {msg}"),
                    (true, _) => "error: the node refused these values (nothing was changed):".to_string(),
                    (false, _) => format!("error: {message}"),
                };
                if message.is_empty() && fields.len() == 1 {
                    // Said on the first line.
                } else {
                    for (field, msg) in fields {
                        out.push_str(&format!("\n  {field}: {msg}"));
                    }
                }
                match status {
                    401 => out.push_str("\nhint: set --token or ROTA_TOKEN to one of the node's API tokens ([api] tokens)"),
                    403 => out.push_str("\nhint: this needs an admin token: set --token or ROTA_TOKEN to a token with scope = \"admin\""),
                    _ => {}
                }
                out
            }
            CliError::Transport(m) | CliError::Input(m) | CliError::Failed(m) | CliError::Usage(m) => {
                format!("error: {m}")
            }
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
    let fields: Vec<(String, String)> = err["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (f["field"].as_str().unwrap_or("?").to_string(), f["message"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    // The API's message for invalid fields is the fields' messages joined: print those instead.
    let joined = fields.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ");
    let message = if !fields.is_empty() && message == joined { String::new() } else { message };
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
    fn api_errors_say_each_thing_once() {
        let body = r#"{"error":{"code":"invalid","message":"spec.command: required","fields":[{"field":"spec.command","message":"required"}]}}"#;
        let text = parse_answer(422, body).unwrap_err().render();
        assert_eq!(text, "error: spec.command: required");

        let body = r#"{"error":{"code":"invalid","message":"a: x; b: y","fields":[{"field":"a","message":"x"},{"field":"b","message":"y"}]}}"#;
        let text = parse_answer(422, body).unwrap_err().render();
        assert_eq!(text, "error: the node refused these values (nothing was changed):\n  a: x\n  b: y");

        // A message that says more than its fields is kept, and the fields follow.
        let body = r#"{"error":{"code":"invalid","message":"bad spec","fields":[{"field":"a","message":"x"}]}}"#;
        assert_eq!(parse_answer(422, body).unwrap_err().render(), "error: bad spec\n  a: x");
        let body = r#"{"error":{"code":"not_found","message":"no application with id 1"}}"#;
        assert_eq!(parse_answer(404, body).unwrap_err().render(), "error: no application with id 1");
    }

    #[test]
    fn fields_are_named_by_their_flags() {
        use crate::cli::flags;
        let body = r#"{"error":{"code":"invalid","message":"shard_total: only with routing `sharding`","fields":[{"field":"shard_total","message":"only with routing `sharding`"}]}}"#;
        let err = parse_answer(422, body).unwrap_err().with_flags(flags::TASK_SUBMIT);
        assert_eq!(err.render(), "error: --shards: only with --routing `sharding`");
        let body = r#"{"error":{"code":"invalid","message":"driver: unknown driver `docker`","fields":[{"field":"driver","message":"unknown driver `docker`"}]}}"#;
        let err = parse_answer(422, body).unwrap_err().with_flags(flags::APP_CREATE);
        assert_eq!(err.render(), "error: --driver: unknown driver `docker`");
        let body =
            r#"{"error":{"code":"conflict","message":"not stopped: stop it first, or delete with ?force=true"}}"#;
        let err = parse_answer(409, body).unwrap_err().with_flags(flags::APP_DELETE);
        assert_eq!(err.render(), "error: not stopped: stop it first, or delete with --force");
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Input("x".into()).exit_code(), 1);
        assert_eq!(parse_answer(422, r#"{"error":{"code":"invalid","message":"m"}}"#).unwrap_err().exit_code(), 1);
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
