//! Request bodies of write routes: what counts as "a body", and the extractor for routes whose
//! body is optional.
//!
//! Why an extractor of our own: actix's `Option<Json<T>>` turns *every* failure into `None`, so a
//! misspelled field, malformed JSON or an oversized body was accepted as "no body" and an
//! idempotency key or payload silently lost (a retried deploy ran twice). [`OptionalJson`] is
//! `None` only when the body is empty; anything sent is held to what `web::Json` would do, with
//! the same limit (`api.max_body_bytes`) and the same errors ([`super::error::json_error`]):
//! 400 malformed, 413 too large, 415 not JSON, 422 unknown field. It reads the body itself
//! because an empty chunked body (some clients send an empty POST so) is not known to be empty
//! before it is read.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::json_error;
use super::ApiState;

/// Whether a request says it carries a body of some length: a `Content-Length` above 0. A
/// chunked body (`Transfer-Encoding`) may turn out empty (some clients send an empty POST so);
/// [`OptionalJson`] reads it to know.
pub fn has_length(headers: &HeaderMap) -> bool {
    match headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        None => false,
        // An unparsable length is not "empty": let the reader refuse it.
        Some(v) => v.trim().parse::<u64>().map_or(true, |n| n > 0),
    }
}

/// A JSON body that may be left out: `None` when the body is empty, otherwise what `web::Json<T>`
/// would give, with its errors from [`json_error`] (the limit is `api.max_body_bytes`).
pub struct OptionalJson<T>(pub Option<T>);

impl<T> OptionalJson<T> {
    /// The body, if one was sent.
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = req.app_data::<web::Data<ApiState>>().map_or(usize::MAX, |s| s.max_body_bytes);
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| json_error(JsonPayloadError::Payload(e), &req))?;
                if body.len() + chunk.len() > limit {
                    return Err(json_error(JsonPayloadError::Overflow { limit }, &req));
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                return Ok(OptionalJson(None));
            }
            if !is_json(&req) {
                return Err(json_error(JsonPayloadError::ContentType, &req));
            }
            serde_json::from_slice(&body)
                .map(|v| OptionalJson(Some(v)))
                .map_err(|e| json_error(JsonPayloadError::Deserialize(e), &req))
        })
    }
}

/// The body of a write route that takes no fields: none, or `{}`. Anything else is refused
/// (a field it does not know → 422), rather than ignored as if it had been understood.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn what_counts_as_a_body_of_some_length() {
        assert!(!has_length(&headers(&[])));
        assert!(!has_length(&headers(&[("content-length", "0")])));
        assert!(has_length(&headers(&[("content-length", "2")])));
        assert!(has_length(&headers(&[("content-length", "lots")])));
        assert!(!has_length(&headers(&[("transfer-encoding", "chunked")])));
    }
}
