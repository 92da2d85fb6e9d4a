//! Bearer-token authentication for `/api/v1`: `read` tokens may GET, `admin` tokens may do
//! anything. Health and metrics stay open.
//!
//! With no token configured, the API answers only callers on a loopback address (and `serve`
//! refuses to listen elsewhere without tokens). Tokens are compared in constant time and never
//! logged; the token's *name* is what is recorded as the actor of a change.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::error::ApiError;
use super::ApiState;
use crate::config::Scope;

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`local` without tokens).
    pub name: String,
    /// Its scope.
    pub scope: Scope,
}

/// Equal in constant time for equal lengths (the length itself is not secret enough to hide).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is matched without regard to
/// case (RFC 7235 section 2.1), and spaces around the token are not part of it.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticate one request against the configured tokens.
pub fn authenticate(
    state: &ApiState,
    header: Option<&str>,
    peer_is_loopback: bool,
    write: bool,
) -> Result<Caller, ApiError> {
    if state.tokens.is_empty() {
        return if peer_is_loopback {
            Ok(Caller { name: "local".into(), scope: Scope::Admin })
        } else {
            Err(ApiError::Forbidden("no API token is configured, so only loopback callers are served".into()))
        };
    }
    let Some(header) = header else {
        return Err(ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <token>`".into()));
    };
    let Some(presented) = bearer_token(header) else {
        return Err(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()));
    };
    // Check every token (no early exit) so timing does not tell which one almost matched.
    let mut found = None;
    for t in state.tokens.iter() {
        if same(t.token.as_bytes(), presented.as_bytes()) {
            found = Some(Caller { name: t.name.clone(), scope: t.scope });
        }
    }
    let caller = found.ok_or_else(|| ApiError::Unauthorized("unknown token".into()))?;
    if write && caller.scope != Scope::Admin {
        return Err(ApiError::Forbidden(format!(
            "token `{}` has the read scope; this request needs admin",
            caller.name
        )));
    }
    Ok(caller)
}

/// actix middleware for the `/api/v1` scope.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    let Some(state) = state else {
        return Err(ApiError::Internal("API state missing".into()).into());
    };
    let header = req.headers().get("Authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let write = !matches!(*req.method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD);
    let caller = authenticate(&state, header.as_deref(), loopback, write)?;
    req.extensions_mut().insert(caller);
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", "  bEaReR abc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "", "Token abc"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn constant_time_equality() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(same(b"", b""));
    }
}
