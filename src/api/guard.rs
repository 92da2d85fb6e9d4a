//! What a browser can make the node do: nothing it was not meant to (docs/security.md).
//!
//! A web page the local user opens can send requests to `127.0.0.1` — directly, with a "simple"
//! cross-origin POST (`Content-Type: text/plain`, no preflight), or through DNS rebinding, where
//! the page's own name resolves to the loopback address and its script then reads the answers as
//! same-origin. A peer-address check stops neither. So, on every route:
//!
//! - **Host** (no tokens only): the names a rebinding page cannot use — `localhost`,
//!   `127.0.0.1`, `[::1]` (any port) and the node's advertise address. With tokens, a page has
//!   no token to send, and nodes may be reached under any name.
//! - **Origin** (every mode): a request that carries one must come from the node's own origin
//!   (`http(s)://<Host>`). Browsers always send it on cross-origin writes; the CLI and monitoring
//!   send none. CORS stays off, so no other origin can read an answer either.
//! - **Content-Type** (writes under `/api/v1` that carry a body): `application/json` only — the
//!   one type a page cannot send cross-origin without a preflight the node never grants.
//!
//! Pure checks here, the middleware at the bottom.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use super::body::has_length;
use super::error::ApiError;
use super::ApiState;

/// The host part of a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`), lowercased.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(h, _)| h).to_string() + "]"
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
            _ => host.to_string(),
        }
    };
    name.to_ascii_lowercase()
}

/// Without tokens: is `host` a name this node may be called by? `advertise` is the node's
/// advertise address (`host:port`).
pub fn check_host(host: &str, advertise: &str) -> Result<(), ApiError> {
    let name = host_name(host);
    if matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") || name == host_name(advertise) {
        return Ok(());
    }
    Err(ApiError::Misdirected(format!(
        "this node has no API token, so it answers only to the Host names localhost, 127.0.0.1, [::1] and its \
         advertise address {advertise}, not `Host: {host}` (a web page can reach a loopback port under a name of \
         its own); call it by one of those names, or configure api.tokens to serve other names"
    )))
}

/// A request with an `Origin` must come from the node's own origin, `http(s)://<Host>`.
pub fn check_origin(origin: &str, host: Option<&str>) -> Result<(), ApiError> {
    let own = host.is_some_and(|h| {
        let h = h.trim().to_ascii_lowercase();
        let o = origin.trim().to_ascii_lowercase();
        o == format!("http://{h}") || o == format!("https://{h}")
    });
    if own {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "`Origin: {origin}` is not this node's own origin (http://{}): the API does not serve other web pages \
         (CORS is off); call it without an Origin header (CLI, scripts) or from the node's own origin",
        host.unwrap_or("<no Host>")
    )))
}

/// A write under `/api/v1` that carries a body must say it is JSON.
pub fn check_content_type(
    method: &Method,
    path: &str,
    with_body: bool,
    content_type: Option<&str>,
) -> Result<(), ApiError> {
    let write = matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if !write || !with_body || !(path == "/api/v1" || path.starts_with("/api/v1/")) {
        return Ok(());
    }
    let essence = content_type.and_then(|c| c.split(';').next()).map(|c| c.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "a write with a body must send it as JSON with `Content-Type: application/json`, not {}",
        content_type.map_or("no Content-Type".to_string(), |c| format!("`{c}`"))
    )))
}

/// actix middleware for the whole server (health and metrics included).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<ApiState>>().cloned() else {
        return Err(ApiError::Internal("API state missing".into()).into());
    };
    let headers = req.headers();
    let text = |v: &actix_web::http::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    // HTTP/2 carries the authority in the URI instead of a Host header.
    let host = headers.get(HOST).map(text).or_else(|| req.uri().authority().map(|a| a.to_string()));
    if state.tokens.is_empty() {
        // No Host at all (HTTP/1.0) is no browser: browsers always send one.
        if let Some(h) = &host {
            check_host(h, &state.advertise)?;
        }
    }
    if let Some(origin) = headers.get(ORIGIN).map(text) {
        check_origin(&origin, host.as_deref())?;
    }
    let content_type = headers.get(CONTENT_TYPE).map(text);
    // A chunked body may be empty (some clients send an empty POST so): it is refused here only
    // if it names another type, and otherwise by the body's reader if it is not empty (415).
    let with_body = has_length(headers) || (headers.contains_key(TRANSFER_ENCODING) && content_type.is_some());
    check_content_type(req.method(), req.path(), with_body, content_type.as_deref())?;
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_the_advertise_address_only() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]",
            "[::1]:80",
            "10.0.0.5:7",
        ] {
            assert!(check_host(ok, "10.0.0.5:8080").is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "127.0.0.1.nip.io",
            "localhost.attacker.example",
            "10.0.0.6:8080",
            "",
        ] {
            let e = check_host(bad, "10.0.0.5:8080").unwrap_err().to_string();
            assert!(e.contains(&format!("`Host: {bad}`")) && e.contains("api.tokens"), "{e}");
        }
    }

    #[test]
    fn only_the_own_origin() {
        assert!(check_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")).is_ok());
        assert!(check_origin("https://rota.example", Some("rota.example")).is_ok());
        for bad in
            ["http://attacker.example", "null", "http://127.0.0.1:8081", "http://127.0.0.1:8080.attacker.example"]
        {
            assert!(check_origin(bad, Some("127.0.0.1:8080")).is_err(), "{bad}");
        }
        assert!(check_origin("http://127.0.0.1:8080", None).is_err());
    }

    #[test]
    fn writes_with_a_body_are_json() {
        let json = Some("application/json; charset=utf-8");
        assert!(check_content_type(&Method::POST, "/api/v1/apps/1/start", true, json).is_ok());
        assert!(check_content_type(&Method::POST, "/api/v1/apps/1/start", false, Some("text/plain")).is_ok());
        assert!(check_content_type(&Method::GET, "/api/v1/apps", true, Some("text/plain")).is_ok());
        for bad in [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data"), None] {
            assert!(check_content_type(&Method::POST, "/api/v1/apps/1/start", true, bad).is_err(), "{bad:?}");
            assert!(check_content_type(&Method::DELETE, "/api/v1/apps/1", true, bad).is_err(), "{bad:?}");
        }
    }
}
