//! The one API error type. Every failure leaves as JSON `{"error": {"code", "message"}}` (plus
//! `fields` for validation errors) with the HTTP status that fits — including malformed JSON,
//! unknown fields, oversized bodies, bad path or query values and unknown routes, which actix
//! would otherwise answer in plain text. Messages say what was wrong and what to do.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

use super::document::Routes;
use crate::store::StoreError;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.command`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Fields are invalid (422), each named.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Each bad field.
        fields: Vec<FieldError>,
    },
    /// No or an unknown token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token's scope does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such route or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// The path is served, but not for this method (405).
    #[error("{message}")]
    MethodNotAllowed {
        /// Summary.
        message: String,
        /// The methods the path takes, for the `Allow` header.
        allow: String,
    },
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body is not sent as JSON (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request names a host this node does not answer to (421).
    #[error("{0}")]
    Misdirected(String),
    /// A dependency (database, membership) is unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on our side (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { .. } => "invalid",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Misdirected(_) => "misdirected_request",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::Invalid {
            message: format!("{field}: {message}"),
            fields: vec![FieldError { field: field.into(), message }],
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": { "code": self.code(), "message": self.to_string() } });
        if let ApiError::Invalid { fields, .. } = self {
            body["error"]["fields"] = json!(fields);
        }
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            resp.insert_header(("Allow", allow.as_str()));
        }
        resp.json(body)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ApiError::Unavailable(format!("database unavailable: {m}")),
            other => {
                tracing::error!(error = %other, "database error in an API request");
                ApiError::Internal("a database operation failed; see the node's log".into())
            }
        }
    }
}

/// JSON bodies: malformed JSON, wrong types, unknown fields and oversized bodies as JSON errors.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::TooLarge(format!("the body is larger than {limit} bytes (api.max_body_bytes)"))
        }
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("send the body as JSON with Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::Invalid { message: e.to_string(), fields: Vec::new() }
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest(format!("the body is not valid JSON: {e}")),
        other => ApiError::BadRequest(format!("cannot read the body: {other}")),
    };
    api.into()
}

/// Path parameters (e.g. an id that is not a number).
pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad path parameter: {err}")).into()
}

/// Query strings (e.g. `limit=lots`, unknown parameters).
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

/// The default service: a served path with another method is a JSON 405 with `Allow`
/// (docs/api.md#errors), anything else a JSON 404.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = req.app_data::<actix_web::web::Data<Routes>>().and_then(|r| r.allowed(req.path()));
    match allowed {
        Some(methods) if !methods.is_empty() => {
            let allow = methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
            ApiError::MethodNotAllowed {
                message: format!("{} {} is not served: this path takes {allow}", req.method(), req.path()),
                allow,
            }
            .error_response()
        }
        _ => ApiError::NotFound(format!("no route for {} {}", req.method(), req.path())).error_response(),
    }
}
