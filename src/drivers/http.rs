//! `http`: start, stop and status are HTTP calls to an outside system (a Flink REST endpoint, a
//! deployment API, a webhook).
//!
//! Why it exists: some applications are run by a system with an API; Rota only has to call it
//! from the node that owns the application, and read the state back from the JSON it answers.
//! A hand-off is cheap: nothing runs on the node, only the monitoring moves.
//!
//! Must never: put task parameters into a URL (they go into the body, where the spec has the
//! value `"{{params}}"` — a workflow node's run context where it has `"{{context}}"` — and the
//! caller's identity into `X-Rota-*` headers); retry on its own;
//! block a tokio worker (ureq is blocking, so every call runs in `spawn_blocking`); quote the
//! spec's headers (they may carry credentials) or a URL's query and user info in errors or logs;
//! follow a redirect the spec does not allow, or one to another origin (the agent follows none;
//! `same_origin_hop` decides), so the spec's headers never leave the origin it names.
//!
//! `https://` URLs are verified as [`crate::tls`] says: against Mozilla's roots, or, when the
//! spec names a `ca_file`, against the certificates in it only (a private CA). A spec with a
//! `ca_file` gets an agent of its own for each call (the shared pool's connections were verified
//! against other roots, and the file is read again, so a renewed CA is picked up).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use ureq::http::{HeaderName, HeaderValue, Method, Uri};

use super::secret::{check_marks, pointer, Secret};
use super::spec::{check_ms, join_spec_errors, problem, spec_object};
use super::{BoxFut, Ctx, Driver, DriverError, Observed, SpecError};

/// Default time a call may take, connecting included.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// A JSON value in a request body that is replaced by the task's parameters.
pub const PARAMS_PLACEHOLDER: &str = "{{params}}";
/// A JSON value in a request body that is replaced by a workflow node's run context
/// (docs/workflows.md#context), or `null` outside a workflow: what `ROTA_CONTEXT` is to a command.
pub const CONTEXT_PLACEHOLDER: &str = "{{context}}";
/// Bytes of an error response quoted in the error.
const ERROR_BODY_BYTES: usize = 500;
/// Largest response read; a result goes into a task row.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
const OPERATIONS: [&str; 4] = ["start", "stop", "status", "run"];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const STATES: [&str; 3] = ["running", "stopped", "failed"];
/// Most redirects one call follows (with `redirects: "same_origin"`).
const MAX_REDIRECTS: u32 = 5;
/// Headers Rota sets itself; a spec may not forge them.
const ROTA_HEADER_PREFIX: &str = "x-rota-";

/// The HTTP driver. Stateless; one agent (connection pool) for every call.
#[derive(Debug)]
pub struct HttpDriver {
    agent: ureq::Agent,
}

impl Default for HttpDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpDriver {
    /// A driver with its own connection pool. Non-2xx statuses are answers, not transport errors,
    /// so they can be reported with their body. The agent follows no redirect: it would follow
    /// them to any host with every header but `Authorization`; `call` follows only those the
    /// spec allows.
    pub fn new() -> Self {
        Self { agent: agent(None) }
    }
}

/// An agent that treats statuses as answers, follows no redirect, and trusts `ca`'s
/// certificates, or Mozilla's roots.
fn agent(ca: Option<&crate::tls::CaFile>) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(crate::tls::ureq_config(ca))
        .build();
    ureq::Agent::new_with_config(config)
}

/// One request of the spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    timeout_ms: Option<u64>,
    /// Status only: where the state is in the response.
    state_pointer: Option<String>,
    /// Status only: state value → running | stopped | failed.
    #[serde(default)]
    states: BTreeMap<String, String>,
    /// Which redirects are followed; none by default.
    redirects: Option<Redirects>,
}

/// Which redirects a request follows (docs/drivers.md#http).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Redirects {
    /// None: a 3xx is the answer, and fails the call.
    #[default]
    None,
    /// Those to the origin (scheme, host, port) of the request's `url`, at most
    /// [`MAX_REDIRECTS`] in a row; a redirect elsewhere is the answer, and fails the call.
    SameOrigin,
}

/// The parsed spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    start: Option<RequestSpec>,
    stop: Option<RequestSpec>,
    status: Option<RequestSpec>,
    run: Option<RequestSpec>,
    /// A PEM file of the CA certificates `https://` servers are verified against, instead of
    /// Mozilla's roots.
    ca_file: Option<String>,
    /// Marks of more secret fields: only reads use them.
    #[serde(default, rename = "secrets")]
    _secrets: serde::de::IgnoredAny,
}

impl HttpSpec {
    fn parse(spec: &Value) -> Result<Self, DriverError> {
        validate_http(spec).map_err(|errors| DriverError::Invalid(join_spec_errors(&errors)))?;
        serde_json::from_value(spec.clone()).map_err(|e| DriverError::Invalid(format!("spec: {e}")))
    }

    fn request(self, op: &str) -> Result<(RequestSpec, Option<String>), DriverError> {
        let ca_file = self.ca_file.clone();
        self.request_only(op).map(|r| (r, ca_file))
    }

    fn request_only(self, op: &str) -> Result<RequestSpec, DriverError> {
        let request = match op {
            "start" => self.start,
            "stop" => self.stop,
            "status" => self.status,
            _ => self.run,
        };
        request.ok_or_else(|| DriverError::Invalid(format!("this application has no `{op}` request")))
    }
}

/// What came back.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// The `Location` header, as sent (it may hold credentials: shown only through [`shown`]).
    location: Option<String>,
    /// Redirects followed before this answer.
    redirects: u32,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `"{{params}}"` as a whole JSON value, anywhere in `body`, becomes the parameters, and
/// `"{{context}}"` the workflow run's context (`null` when the task is no workflow node). Only
/// whole values: a string that merely contains a placeholder is left as it is, so nothing is ever
/// spliced into text.
fn substitute(body: &mut Value, params: &Value, context: Option<&Value>) {
    match body {
        Value::String(s) if s == PARAMS_PLACEHOLDER => *body = params.clone(),
        Value::String(s) if s == CONTEXT_PLACEHOLDER => *body = context.cloned().unwrap_or(Value::Null),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, params, context)),
        Value::Object(fields) => fields.values_mut().for_each(|v| substitute(v, params, context)),
        _ => {}
    }
}

/// The URL without user info, query or fragment: safe to show.
fn shown(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***@{}", &url[..scheme + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The first `ERROR_BODY_BYTES` of a body, cut on a character boundary.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(ERROR_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl HttpDriver {
    /// Make the `op` request of the application, following redirects as its `redirects` allows.
    async fn call(&self, ctx: &Ctx, op: &str) -> Result<(RequestSpec, Answer), DriverError> {
        let (spec, ca_file) = HttpSpec::parse(&ctx.spec)?.request(op)?;
        let default_method = if op == "status" { "GET" } else { "POST" };
        let method = spec.method.clone().unwrap_or_else(|| default_method.to_string());
        let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let what = format!("`{op}`: {method} {}", shown(&spec.url));

        let mut headers: Vec<(String, String)> = spec.headers.clone().into_iter().collect();
        let has_content_type = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if let Some(app) = ctx.app_id {
            headers.push(("X-Rota-App-Id".into(), app.to_string()));
        }
        if let Some(task) = ctx.task_id {
            headers.push(("X-Rota-Task-Id".into(), task.to_string()));
        }
        headers.push(("X-Rota-Node-Id".into(), ctx.node_id.clone()));
        // The ring epoch is a fencing token: the outside system may refuse a call from an older one.
        headers.push(("X-Rota-Epoch".into(), ctx.epoch.to_string()));
        let body = match &spec.body {
            Some(template) => {
                let mut body = template.clone();
                substitute(&mut body, &ctx.params, ctx.context.as_ref());
                Some(serde_json::to_vec(&body).map_err(|e| DriverError::Invalid(format!("{what}: body: {e}")))?)
            }
            None => None,
        };
        let outgoing = Outgoing { headers, has_content_type, body };
        // Built once here so that a request that cannot be built is invalid before anything is sent.
        outgoing
            .request(&self.agent, &method, &spec.url, true, timeout)
            .map_err(|e| DriverError::Invalid(format!("{what}: cannot build the request: {e}")))?;
        let origin = url::Url::parse(&spec.url).map_err(|e| DriverError::Invalid(format!("{what}: {e}")))?;
        let follow = spec.redirects.unwrap_or_default() == Redirects::SameOrigin;

        tracing::debug!(app.id = ?ctx.app_id, task.id = ?ctx.task_id, op, url = %shown(&spec.url), "http call");
        let (act_by, epoch, op_name) = (ctx.act_by.clone(), ctx.epoch, format!("the `{op}` request"));
        let shared = self.agent.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let agent = match crate::tls::ca_file(ca_file.as_deref()) {
                Ok(None) => shared,
                Ok(Some(ca)) => agent(Some(&ca)),
                Err(e) => return Err(DriverError::Failed(format!("{what}: ca_file: {e}"))),
            };
            let deadline = std::time::Instant::now() + timeout;
            let timed_out = || DriverError::Timeout(format!("{what}: no answer within {} ms", timeout.as_millis()));
            let (mut method, mut url, mut with_body) = (method, origin.clone(), true);
            let mut redirects = 0;
            loop {
                // Asked again on the thread that sends it, before every request: the hop here is
                // where a paused node would otherwise begin the call after its deadline
                // (`ActBy`). What is left is the time from here to the request on the wire
                // (resolving and connecting), which a pause could still stretch: an outside
                // system should check `X-Rota-Epoch`.
                act_by.left(epoch, &op_name)?;
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                let request = outgoing.request(&agent, &method, url.as_str(), with_body, left).map_err(|e| {
                    DriverError::Failed(format!("{what}: cannot build the request to {}: {e}", shown(url.as_str())))
                })?;
                let answer = send(&agent, request).map_err(|e| match e {
                    ureq::Error::Timeout(_) => timed_out(),
                    ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => timed_out(),
                    e => DriverError::Failed(format!("{what}: {e}")),
                })?;
                let answer = Answer { redirects, ..answer };
                let hop = if follow && redirects < MAX_REDIRECTS {
                    same_origin_hop(answer.status, answer.location.as_deref(), &url, &origin, &method)
                } else {
                    None
                };
                match hop {
                    Some(hop) => {
                        (url, method, with_body) = (hop.url, hop.method, with_body && hop.with_body);
                        redirects += 1;
                    }
                    None => return Ok(answer),
                }
            }
        })
        .await
        .map_err(|e| DriverError::Failed(format!("`{op}`: the call was lost: {e}")))??;
        Ok((spec, answer))
    }

    /// A call whose answer must be 2xx. A redirect that was not followed fails with its status
    /// and why it was not followed; its `Location` is shown without query or user info.
    async fn call_ok(&self, ctx: &Ctx, op: &str) -> Result<(RequestSpec, Answer), DriverError> {
        let (spec, answer) = self.call(ctx, op).await?;
        if answer.is_success() {
            return Ok((spec, answer));
        }
        let method = spec.method.as_deref().unwrap_or(if op == "status" { "GET" } else { "POST" });
        let called = format!("`{op}`: {method} {} answered {}", shown(&spec.url), answer.status);
        if let (true, Some(location)) = (is_followed(answer.status), &answer.location) {
            let to = shown(location);
            let why = match spec.redirects.unwrap_or_default() {
                Redirects::None => {
                    "redirects are not followed unless the request's `redirects` is \"same_origin\"".to_string()
                }
                Redirects::SameOrigin if answer.redirects >= MAX_REDIRECTS => {
                    format!("not followed: {MAX_REDIRECTS} redirects were followed already, the most allowed")
                }
                Redirects::SameOrigin => {
                    "not followed: only redirects to the origin of the request's `url` are".to_string()
                }
            };
            return Err(DriverError::Failed(format!("{called}, a redirect to {to}; {why}")));
        }
        let text = answer.text();
        Err(DriverError::Failed(format!("{called}: {}", excerpt(&text))))
    }
}

/// The statuses that redirect to their `Location`.
fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The next request of a call that follows same-origin redirects.
#[derive(Debug, PartialEq, Eq)]
struct Hop {
    url: url::Url,
    method: String,
    /// False once a redirect turned the request into a GET.
    with_body: bool,
}

/// Where an answer `status` with `location`, to a `method` request to `url`, sends the call
/// next, if it is a redirect to `origin` (scheme, host and port of the spec's `url`): only there,
/// so the spec's headers (which may carry credentials) never go anywhere else and the answer a
/// task's result is made of never comes from anywhere else. As browsers do, 303 (and 301/302
/// after a POST) fetch the new place with GET, without the body.
fn same_origin_hop(
    status: u16,
    location: Option<&str>,
    url: &url::Url,
    origin: &url::Url,
    method: &str,
) -> Option<Hop> {
    if !is_followed(status) {
        return None;
    }
    let next = url.join(location?).ok()?;
    if next.origin() != origin.origin() {
        return None;
    }
    let to_get = status == 303 && method != "GET" || matches!(status, 301 | 302) && method == "POST";
    Some(Hop { url: next, method: if to_get { "GET".into() } else { method.into() }, with_body: !to_get })
}

/// What every request of one call carries: the spec's headers and Rota's, and the body.
struct Outgoing {
    headers: Vec<(String, String)>,
    has_content_type: bool,
    body: Option<Vec<u8>>,
}

impl Outgoing {
    /// The request to `url`, with the body unless `with_body` is false (after a redirect to GET).
    fn request(
        &self,
        agent: &ureq::Agent,
        method: &str,
        url: &str,
        with_body: bool,
        timeout: Duration,
    ) -> Result<ureq::http::Request<Payload>, ureq::http::Error> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        match self.body.as_ref().filter(|_| with_body) {
            Some(bytes) => {
                if !self.has_content_type {
                    builder = builder.header("Content-Type", "application/json");
                }
                let request = builder.body(bytes.clone())?;
                Ok(agent.configure_request(request).timeout_global(Some(timeout)).build().map(Payload::Bytes))
            }
            None => {
                let request = builder.body(())?;
                Ok(agent.configure_request(request).timeout_global(Some(timeout)).build().map(|()| Payload::Empty))
            }
        }
    }
}

/// Send one request (no redirect is followed by the agent) and read its answer.
fn send(agent: &ureq::Agent, request: ureq::http::Request<Payload>) -> Result<Answer, ureq::Error> {
    let response = match request.into_parts() {
        (parts, Payload::Bytes(bytes)) => agent.run(ureq::http::Request::from_parts(parts, bytes)),
        (parts, Payload::Empty) => agent.run(ureq::http::Request::from_parts(parts, ())),
    };
    let mut response = response?;
    let status = response.status().as_u16();
    let location =
        response.headers().get(ureq::http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = response.body_mut().with_config().limit(MAX_RESPONSE_BYTES).read_to_vec()?;
    Ok(Answer { status, body, location, redirects: 0 })
}

/// A request body, or none (so no `Content-Length: 0` is sent with a GET).
enum Payload {
    Bytes(Vec<u8>),
    Empty,
}

impl Driver for HttpDriver {
    fn name(&self) -> &'static str {
        "http"
    }

    /// The spec's shape, then its `ca_file`: read now, so that a path the node cannot read or a
    /// file that is not PEM is refused when the application is made, not at its first call.
    fn validate(&self, spec: &Value) -> Result<(), Vec<SpecError>> {
        validate_http(spec)?;
        if let Some(Err(e)) = spec.get("ca_file").and_then(Value::as_str).map(crate::tls::CaFile::read) {
            return Err(vec![SpecError { field: "ca_file".into(), message: e.to_string() }]);
        }
        Ok(())
    }

    /// Every header value and the credentials in every URL, of every request; what is not of
    /// the expected type (an invalid spec) is hidden whole.
    fn secrets(&self, spec: &Value) -> Vec<Secret> {
        let mut secrets = Vec::new();
        for op in OPERATIONS {
            let Some(request) = spec.get(op) else { continue };
            match request.get("headers") {
                Some(Value::Object(headers)) => {
                    secrets.extend(headers.keys().map(|name| Secret::Whole(pointer(&[op, "headers", name]))))
                }
                Some(_) => secrets.push(Secret::Whole(pointer(&[op, "headers"]))),
                None => {}
            }
            match request.get("url") {
                Some(Value::String(_)) => secrets.push(Secret::UrlParts(pointer(&[op, "url"]))),
                Some(_) => secrets.push(Secret::Whole(pointer(&[op, "url"]))),
                None => {}
            }
        }
        secrets
    }

    fn start<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move { self.call_ok(ctx, "start").await.map(|_| ()) })
    }

    fn stop<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<(), DriverError>> {
        Box::pin(async move { self.call_ok(ctx, "stop").await.map(|_| ()) })
    }

    fn status<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Observed, DriverError>> {
        Box::pin(async move {
            let (spec, answer) = self.call_ok(ctx, "status").await?;
            let pointer = spec.state_pointer.unwrap_or_default();
            let Ok(json) = serde_json::from_slice::<Value>(&answer.body) else {
                return Ok(Observed::Unknown(format!("the status answer is not JSON: {}", excerpt(&answer.text()))));
            };
            let Some(found) = json.pointer(&pointer) else {
                return Ok(Observed::Unknown(format!("the status answer has nothing at `{pointer}`")));
            };
            // Strings are compared as they are; numbers and booleans by their JSON text.
            let value = match found {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(match spec.states.get(&value).map(String::as_str) {
                Some("running") => Observed::Running,
                Some("stopped") => Observed::Stopped,
                Some("failed") => Observed::Failed(format!("`{pointer}` is {value:?}")),
                _ => Observed::Unknown(format!("`{pointer}` is {value:?}, which `states` does not map")),
            })
        })
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFut<'a, Result<Value, DriverError>> {
        Box::pin(async move {
            let (_, answer) = self.call_ok(ctx, "run").await?;
            Ok(match serde_json::from_slice::<Value>(&answer.body) {
                Ok(json) => json,
                Err(_) => json!({ "status": answer.status, "body": answer.text() }),
            })
        })
    }

    fn shutdown(&self) -> BoxFut<'_, ()> {
        // Nothing runs here: the outside system keeps its applications through a node's exit.
        Box::pin(async {})
    }
}

fn validate_http(spec: &Value) -> Result<(), Vec<SpecError>> {
    let mut errors = Vec::new();
    let Some(obj) = spec_object(spec, &mut errors) else { return Err(errors) };
    if !OPERATIONS.iter().any(|op| obj.contains_key(*op)) {
        problem(&mut errors, "", "needs at least one of the requests start, stop, status, run");
    }
    for (key, value) in obj {
        match key.as_str() {
            "start" | "stop" | "status" | "run" => validate_request(&mut errors, key, value),
            "secrets" => check_marks(&mut errors, spec, value),
            "ca_file" => {
                if value.as_str().is_none_or(str::is_empty) {
                    problem(&mut errors, key, "must be the path of a PEM file of the CA certificates to trust");
                }
            }
            _ => problem(&mut errors, key, "unknown field (known: start, stop, status, run, ca_file, secrets)"),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn validate_request(errors: &mut Vec<SpecError>, op: &str, request: &Value) {
    let Some(fields) = request.as_object() else {
        return problem(errors, op, "must be an object with at least `url`");
    };
    let is_status = op == "status";
    match fields.get("url").map(|u| (u, u.as_str())) {
        None => problem(errors, format!("{op}.url"), "required"),
        Some((_, Some(url))) if url.starts_with("http://") || url.starts_with("https://") => {
            if url.parse::<Uri>().is_err() {
                problem(errors, format!("{op}.url"), "is not a valid URL");
            }
        }
        Some(_) => problem(errors, format!("{op}.url"), "must be a string starting with http:// or https://"),
    }
    if is_status {
        if !fields.contains_key("state_pointer") {
            problem(errors, "status.state_pointer", "required: a JSON pointer to the state in the answer, e.g. /state");
        }
        if !fields.contains_key("states") {
            problem(errors, "status.states", "required: maps each state value to running, stopped or failed");
        }
    }
    for (key, value) in fields {
        let field = format!("{op}.{key}");
        match key.as_str() {
            "url" | "body" => {}
            "method" => {
                if !value.as_str().is_some_and(|m| METHODS.contains(&m) && m.parse::<Method>().is_ok()) {
                    problem(errors, field, format!("must be one of {}", METHODS.join(", ")));
                }
            }
            "headers" => match value.as_object() {
                Some(headers) => {
                    for (name, v) in headers {
                        let field = format!("{op}.headers.{name}");
                        if HeaderName::from_bytes(name.as_bytes()).is_err() {
                            problem(errors, &field, "is not a valid header name");
                        } else if name.to_ascii_lowercase().starts_with(ROTA_HEADER_PREFIX) {
                            problem(errors, &field, "X-Rota-* headers are set by Rota");
                        }
                        if v.as_str().is_none_or(|s| HeaderValue::from_str(s).is_err()) {
                            problem(errors, &field, "must be a string without control characters");
                        }
                    }
                }
                None => problem(errors, field, "must be an object of name: \"value\" strings"),
            },
            "timeout_ms" => check_ms(errors, &field, value, 1, u64::MAX),
            "redirects" => {
                if !matches!(value.as_str(), Some("none" | "same_origin")) {
                    problem(errors, field, "must be \"none\" (the default) or \"same_origin\"");
                }
            }
            "state_pointer" if is_status => match value.as_str() {
                Some(p) if p.is_empty() || p.starts_with('/') => {}
                _ => problem(errors, field, "must be a JSON pointer: \"\" or starting with /"),
            },
            "states" if is_status => match value.as_object() {
                Some(states) if !states.is_empty() => {
                    for (name, v) in states {
                        if !v.as_str().is_some_and(|s| STATES.contains(&s)) {
                            problem(errors, format!("{field}.{name}"), "must be running, stopped or failed");
                        }
                    }
                }
                _ => problem(errors, field, "must be a non-empty object: {\"RUNNING\": \"running\", …}"),
            },
            "state_pointer" | "states" => problem(errors, field, "only the status request reads a state"),
            _ => problem(
                errors,
                field,
                "unknown field (known: method, url, headers, body, timeout_ms, redirects; status also state_pointer, states)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::testing::ctx;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    /// A request the test server saw.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: BTreeMap<String, String>,
        body: String,
    }

    /// A small HTTP/1.1 server on 127.0.0.1:0 standing in for the outside system: it answers each
    /// request with `answer(&request)` and records what it saw.
    struct Server {
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    fn read_request(stream: &mut TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        Some(Seen { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }

    fn serve(answer: impl Fn(&Seen) -> (u16, String) + Send + 'static) -> Server {
        serve_with_headers(move |r| {
            let (code, body) = answer(r);
            (code, Vec::new(), body)
        })
    }

    /// [`serve`], with headers in the answers.
    fn serve_with_headers(
        answer: impl Fn(&Seen) -> (u16, Vec<(&'static str, String)>, String) + Send + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else { continue };
                let (code, headers, body) = answer(&request);
                record.lock().unwrap().push(request);
                let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
                let reply = format!(
                    "HTTP/1.1 {code} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Server { base, seen }
    }

    /// Answers by path: /ok → 200 JSON, /fail → 500 with a long body, /state/X → `{"job":{"state":X}}`,
    /// /text → 200 plain text, anything else → 404.
    fn outside_system() -> Server {
        serve(|r| match r.path.split('?').next().unwrap_or_default() {
            "/ok" => (200, r#"{"accepted":true}"#.into()),
            "/fail" => (500, format!("kaboom {}", "x".repeat(1000))),
            "/text" => (200, "plain words".into()),
            p if p.starts_with("/state/") => (200, json!({ "job": { "state": &p[7..] } }).to_string()),
            _ => (404, "no such thing".into()),
        })
    }

    fn status_spec(base: &str, state: &str) -> Value {
        json!({ "status": {
            "url": format!("{base}/state/{state}"),
            "state_pointer": "/job/state",
            "states": { "RUNNING": "running", "FINISHED": "stopped", "FAILED": "failed" }
        } })
    }

    #[tokio::test]
    async fn start_and_stop_send_params_and_identity() {
        let s = outside_system();
        let spec = json!({
            "start": { "url": format!("{}/ok", s.base), "headers": { "Authorization": "Bearer t" },
                       "body": { "args": "{{params}}", "list": ["{{params}}", "x {{params}}"], "n": 1 } },
            "stop": { "method": "DELETE", "url": format!("{}/ok", s.base) }
        });
        let params = json!({ "parallelism": 4 });
        let d = HttpDriver::new();
        let c = ctx(Some(42), spec, params.clone());
        d.start(&c).await.unwrap();
        d.stop(&c).await.unwrap();
        let seen = s.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let start = &seen[0];
        assert_eq!(start.method, "POST");
        assert_eq!(start.headers["x-rota-app-id"], "42");
        assert_eq!(start.headers["x-rota-task-id"], "77");
        assert_eq!(start.headers["x-rota-node-id"], "node-a");
        assert_eq!(start.headers["x-rota-epoch"], "9");
        assert_eq!(start.headers["authorization"], "Bearer t");
        assert_eq!(start.headers["content-type"], "application/json");
        let body: Value = serde_json::from_str(&start.body).unwrap();
        assert_eq!(body, json!({ "args": params, "list": [params, "x {{params}}"], "n": 1 }));
        assert_eq!(seen[1].method, "DELETE");
        assert_eq!(seen[1].body, "");
    }

    #[tokio::test]
    async fn a_node_past_its_deadline_sends_nothing() {
        let s = outside_system();
        let spec = json!({ "start": { "url": format!("{}/ok", s.base) } });
        let fenced = Ctx { act_by: crate::drivers::ActBy::new(|_, _| None), ..ctx(Some(42), spec.clone(), json!({})) };
        let d = HttpDriver::new();
        let err = d.start(&fenced).await.unwrap_err();
        assert!(matches!(&err, DriverError::Fenced(m) if m.contains("`start` request")), "{err:?}");
        d.start(&ctx(Some(42), spec, json!({}))).await.unwrap();
        assert_eq!(s.seen.lock().unwrap().len(), 1, "only the call with time left reached the server");
    }

    #[tokio::test]
    async fn non_2xx_fails_with_status_and_body_excerpt() {
        let s = outside_system();
        let d = HttpDriver::new();
        let c = ctx(Some(1), json!({ "start": { "url": format!("{}/fail?token=secret", s.base) } }), json!({}));
        let err = d.start(&c).await.unwrap_err();
        let DriverError::Failed(msg) = err else { panic!("expected Failed, got {err:?}") };
        assert!(msg.contains("answered 500: kaboom"), "{msg}");
        assert!(!msg.contains("secret"), "the query must not be quoted: {msg}");
        assert!(msg.len() < ERROR_BODY_BYTES + 200, "body not cut: {} bytes", msg.len());
    }

    #[tokio::test]
    async fn status_reads_the_pointer_and_maps_it() {
        let s = outside_system();
        let d = HttpDriver::new();
        let status = |state: &str| ctx(Some(1), status_spec(&s.base, state), json!({}));
        assert_eq!(d.status(&status("RUNNING")).await.unwrap(), Observed::Running);
        assert_eq!(d.status(&status("FINISHED")).await.unwrap(), Observed::Stopped);
        assert!(matches!(d.status(&status("FAILED")).await.unwrap(), Observed::Failed(m) if m.contains("FAILED")));
        assert!(
            matches!(d.status(&status("RESTARTING")).await.unwrap(), Observed::Unknown(m) if m.contains("RESTARTING"))
        );
        assert_eq!(s.seen.lock().unwrap()[0].method, "GET");
        // Nothing at the pointer, and not JSON at all.
        let mut spec = status_spec(&s.base, "RUNNING");
        spec["status"]["state_pointer"] = json!("/missing");
        assert!(matches!(d.status(&ctx(Some(1), spec.clone(), json!({}))).await.unwrap(), Observed::Unknown(_)));
        spec["status"]["url"] = json!(format!("{}/text", s.base));
        assert!(matches!(d.status(&ctx(Some(1), spec, json!({}))).await.unwrap(), Observed::Unknown(_)));
    }

    #[tokio::test]
    async fn run_returns_json_or_status_and_text() {
        let s = outside_system();
        let d = HttpDriver::new();
        let out = d.run(&ctx(None, json!({ "run": { "url": format!("{}/ok", s.base) } }), json!({}))).await.unwrap();
        assert_eq!(out, json!({ "accepted": true }));
        let out = d.run(&ctx(None, json!({ "run": { "url": format!("{}/text", s.base) } }), json!({}))).await.unwrap();
        assert_eq!(out, json!({ "status": 200, "body": "plain words" }));
        // No app id for a job: no X-Rota-App-Id header.
        assert!(!s.seen.lock().unwrap()[0].headers.contains_key("x-rota-app-id"));
    }

    /// The application's server, which redirects: `/same` and `/keep` (307) to its own `/ok`,
    /// `/loop` to itself, `/away` to `foreign` (with a credential in the Location's query).
    fn redirecting(foreign: &str) -> Server {
        let foreign = foreign.to_string();
        serve_with_headers(move |r| match r.path.as_str() {
            "/same" => (302, vec![("Location", "/ok".into())], String::new()),
            "/keep" => (307, vec![("Location", "ok".into())], String::new()),
            "/loop" => (302, vec![("Location", "/loop".into())], String::new()),
            "/away" => (302, vec![("Location", format!("{foreign}/ok?token=loc-secret"))], String::new()),
            "/ok" => (200, Vec::new(), r#"{"accepted":true}"#.into()),
            _ => (404, Vec::new(), "no such thing".into()),
        })
    }

    fn redirect_spec(base: &str, path: &str, redirects: Option<&str>) -> Value {
        let mut request = json!({ "url": format!("{base}{path}"), "headers": { "X-Api-Key": "k-secret" },
                                  "body": { "p": "{{params}}" } });
        if let Some(r) = redirects {
            request["redirects"] = json!(r);
        }
        json!({ "run": request })
    }

    #[tokio::test]
    async fn redirects_are_not_followed_by_default() {
        let foreign = outside_system();
        let s = redirecting(&foreign.base);
        let d = HttpDriver::new();
        for path in ["/away", "/same"] {
            let err = d.run(&ctx(None, redirect_spec(&s.base, path, None), json!({}))).await.unwrap_err();
            let DriverError::Failed(msg) = &err else { panic!("expected Failed, got {err:?}") };
            assert!(msg.contains("answered 302") && msg.contains("redirects are not followed"), "{msg}");
            assert!(!msg.contains("loc-secret") && !msg.contains("k-secret"), "{msg}");
        }
        assert_eq!(s.seen.lock().unwrap().len(), 2, "each call made one request");
        assert!(foreign.seen.lock().unwrap().is_empty(), "the redirect to another origin was followed");
    }

    #[tokio::test]
    async fn same_origin_redirects_are_followed_there_only() {
        let foreign = outside_system();
        let s = redirecting(&foreign.base);
        let d = HttpDriver::new();
        let run = |path: &str| ctx(None, redirect_spec(&s.base, path, Some("same_origin")), json!({ "n": 1 }));
        // 302 after a POST: the new place is fetched with GET, with the same headers.
        assert_eq!(d.run(&run("/same")).await.unwrap(), json!({ "accepted": true }));
        // 307: same method, same body.
        assert_eq!(d.run(&run("/keep")).await.unwrap(), json!({ "accepted": true }));
        {
            let seen = s.seen.lock().unwrap();
            let hops: Vec<(&str, &str)> = seen.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
            assert_eq!(hops, [("POST", "/same"), ("GET", "/ok"), ("POST", "/keep"), ("POST", "/ok")]);
            assert!(seen.iter().all(|r| r.headers["x-api-key"] == "k-secret"), "same origin: the headers go along");
            assert_eq!(seen[1].body, "");
            assert_eq!(seen[3].body, r#"{"p":{"n":1}}"#);
        }
        // Another origin (another port): not followed, nothing sent there.
        let err = d.run(&run("/away")).await.unwrap_err();
        assert!(
            matches!(&err, DriverError::Failed(m) if m.contains("answered 302") && m.contains("only redirects to the origin") && !m.contains("loc-secret")),
            "{err:?}"
        );
        assert!(foreign.seen.lock().unwrap().is_empty(), "the spec's headers were sent to another origin");
        // A loop ends after the most allowed.
        s.seen.lock().unwrap().clear();
        let err = d.run(&run("/loop")).await.unwrap_err();
        assert!(matches!(&err, DriverError::Failed(m) if m.contains("the most allowed")), "{err:?}");
        assert_eq!(s.seen.lock().unwrap().len(), 1 + MAX_REDIRECTS as usize);
    }

    #[tokio::test]
    async fn connection_refused_is_failed() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = HttpDriver::new();
        let c = ctx(Some(1), json!({ "stop": { "url": format!("http://127.0.0.1:{port}/x") } }), json!({}));
        let err = d.stop(&c).await.unwrap_err();
        assert!(matches!(err, DriverError::Failed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts, reads, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        let d = HttpDriver::new();
        let c = ctx(Some(1), json!({ "start": { "url": format!("{base}/slow"), "timeout_ms": 300 } }), json!({}));
        let t = Instant::now();
        let err = d.start(&c).await.unwrap_err();
        assert!(matches!(err, DriverError::Timeout(_)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn https_to_a_server_without_tls_fails_the_call() {
        let s = outside_system();
        let url = format!("{}/ok", s.base.replace("http://", "https://"));
        let d = HttpDriver::new();
        let c = ctx(Some(1), json!({ "start": { "url": url, "timeout_ms": 2000 } }), json!({}));
        let err = d.start(&c).await.unwrap_err();
        assert!(matches!(&err, DriverError::Failed(m) if m.contains("https://")), "{err:?}");
    }

    #[tokio::test]
    async fn missing_request_is_invalid() {
        let d = HttpDriver::new();
        let err =
            d.stop(&ctx(Some(1), json!({ "start": { "url": "http://127.0.0.1:1/" } }), json!({}))).await.unwrap_err();
        assert_eq!(err, DriverError::Invalid("this application has no `stop` request".into()));
    }

    #[test]
    fn placeholders_are_whole_values_and_context_is_null_outside_a_workflow() {
        let template = json!({"p": "{{params}}", "c": ["{{context}}"], "text": "see {{context}}"});
        let mut body = template.clone();
        substitute(&mut body, &json!({"a": 1}), Some(&json!({"extract": {"rows": 3}})));
        assert_eq!(body, json!({"p": {"a": 1}, "c": [{"extract": {"rows": 3}}], "text": "see {{context}}"}));
        let mut body = template;
        substitute(&mut body, &json!({}), None);
        assert_eq!(body["c"], json!([null]));
    }

    #[test]
    fn validate_names_every_field() {
        let d = HttpDriver::new();
        assert!(d.validate(&status_spec("http://flink:8081", "x")).is_ok());
        assert!(d.validate(&json!({ "run": { "url": "http://x/", "redirects": "same_origin" } })).is_ok());
        assert!(d.validate(&json!({ "run": { "url": "http://x/", "redirects": "none" } })).is_ok());
        let errors = d
            .validate(&json!({
                "start": { "method": "FETCH", "url": "ftp://x", "headers": { "X-Rota-App-Id": "1", "A": 2 }, "states": {} },
                "stop": {},
                "status": { "url": "http://x/", "state_pointer": "state", "states": { "RUNNING": "up" } },
                "run": { "url": "http://x/", "timeout_ms": 0, "extra": 1, "redirects": "any" },
                "restart": {}
            }))
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "start.method",
            "start.url",
            "start.headers.X-Rota-App-Id",
            "start.headers.A",
            "start.states",
            "stop.url",
            "status.state_pointer",
            "status.states.RUNNING",
            "run.timeout_ms",
            "run.extra",
            "run.redirects",
            "restart",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let errors = d.validate(&json!({ "status": { "url": "http://x/" } })).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status.state_pointer", "status.states"]);
        assert_eq!(d.validate(&json!({})).unwrap_err()[0].field, "");
    }

    #[test]
    fn only_redirects_to_the_same_origin_are_hops() {
        let origin = url::Url::parse("http://api:8081/v1/jobs?token=t").unwrap();
        let hop = |status, location: &str, method| {
            same_origin_hop(status, Some(location), &origin, &origin, method)
                .map(|h| (h.url.to_string(), h.method, h.with_body))
        };
        assert_eq!(hop(307, "run", "POST"), Some(("http://api:8081/v1/run".into(), "POST".into(), true)));
        assert_eq!(hop(308, "/v2/jobs", "PUT"), Some(("http://api:8081/v2/jobs".into(), "PUT".into(), true)));
        assert_eq!(hop(302, "http://api:8081/x", "POST"), Some(("http://api:8081/x".into(), "GET".into(), false)));
        assert_eq!(hop(301, "/x", "DELETE"), Some(("http://api:8081/x".into(), "DELETE".into(), true)));
        assert_eq!(hop(303, "/x", "PUT"), Some(("http://api:8081/x".into(), "GET".into(), false)));
        // Another port, host or scheme is another origin; a status that does not redirect is no hop.
        for elsewhere in ["http://api:8082/x", "http://other:8081/x", "https://api:8081/x", "//evil/x"] {
            assert_eq!(hop(302, elsewhere, "GET"), None, "{elsewhere}");
        }
        assert_eq!(hop(300, "/x", "GET"), None);
        assert_eq!(hop(304, "/x", "GET"), None);
        assert_eq!(same_origin_hop(302, None, &origin, &origin, "GET"), None);
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(shown("http://user:pw@host:1/a?token=x#f"), "http://***@host:1/a");
        assert_eq!(shown("http://host/a"), "http://host/a");
    }
}
