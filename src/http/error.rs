//! The one error type at the HTTP edge. Every failure a client can see becomes an RFC 9457
//! `application/problem+json` body here; 5xx details are logged once (field `error`) and never
//! sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{FieldError, IDEMPOTENCY_KEY_HEADER};
use crate::ports::{DependencyError, ErrorKind};

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For validation problems: every field that is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Everything that can go wrong for a client.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is not JSON.
    Malformed(String),
    /// 400: the query string or a header is wrong.
    BadRequest(Vec<FieldError>),
    /// 401: no credential, or one we do not know.
    Unauthorized,
    /// 401: a bearer JWT that failed verification (RFC 6750 `invalid_token`).
    InvalidToken,
    /// 503: the token's issuer has not been reachable since start, so no key can verify it.
    IssuerUnavailable,
    /// 403: the credential lacks the scope.
    Forbidden(&'static str),
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 413: the body is over the limit (bytes).
    PayloadTooLarge(usize),
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 422: JSON that breaks the schema.
    Invalid(Vec<FieldError>),
    /// 409: a request with the same idempotency key is being served now; retry later.
    KeyInFlight,
    /// 409: the idempotency key was already used with another body; never retry as is.
    KeyReused,
    /// 429: over the client's rate; retry after this many seconds.
    RateLimited(u64),
    /// 503: shedding load.
    Overloaded,
    /// 503/504/500: a dependency (`broker` or `store`) failed.
    Dependency(&'static str, DependencyError),
    /// 500: injected by a drill.
    InjectedFault,
    /// 500: a bug.
    Internal(String),
}

const RETRY_AFTER_DEPENDENCY: u64 = 2;
const RETRY_AFTER_OVERLOAD: u64 = 1;
/// The request in flight ends within `REQUEST_TIMEOUT_MS` (5 s by default), usually within
/// milliseconds.
const RETRY_AFTER_KEY_IN_FLIGHT: u64 = 1;

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        use ApiError::*;
        match self {
            Malformed(d) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("the body is not valid JSON: {d}"),
            ),
            BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
                "the query or headers are not valid".into(),
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send a known API key as `Authorization: Bearer <key>`".into(),
            ),
            InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "Invalid token",
                "the bearer token is malformed, expired, not yet valid, for another audience or issuer, or its signature does not verify".into(),
            ),
            IssuerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "issuer-unavailable",
                "Token issuer unavailable",
                "the token's issuer has not been reachable, so its keys are unknown; retry later".into(),
            ),
            Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("this credential lacks the `{scope}` scope"),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "no such route".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not accept that method".into(),
            ),
            PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                format!("the body is over {limit} bytes"),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send `Content-Type: application/json`".into(),
            ),
            Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
                "Validation error",
                "the records do not match the schema; nothing was published".into(),
            ),
            KeyInFlight => (
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "Request in flight",
                "a request with this Idempotency-Key is being processed; retry the same request later".into(),
            ),
            KeyReused => (
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different body; nothing was published".into(),
            ),
            RateLimited(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                format!("rate limit exceeded; retry after {s} s"),
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
                "the service is shedding load; retry later".into(),
            ),
            Dependency(which, e) => match e.kind {
                ErrorKind::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "dependency-timeout",
                    "Dependency timed out",
                    format!("the {which} did not answer in time"),
                ),
                ErrorKind::Unavailable | ErrorKind::ResourceExhausted => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dependency-unavailable",
                    "Dependency unavailable",
                    format!("the {which} is unavailable; retry later"),
                ),
                ErrorKind::Invalid | ErrorKind::Internal => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal-error",
                    "Internal error",
                    "the request failed; it has been logged".into(),
                ),
            },
            InjectedFault => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal error",
                "injected fault (drill)".into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal error",
                "the request failed; it has been logged".into(),
            ),
        }
    }

    fn retry_after(&self, status: StatusCode) -> Option<u64> {
        match self {
            ApiError::RateLimited(s) => Some((*s).max(1)),
            ApiError::Overloaded => Some(RETRY_AFTER_OVERLOAD),
            ApiError::KeyInFlight => Some(RETRY_AFTER_KEY_IN_FLIGHT),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_DEPENDENCY),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title, detail) = self.parts();
        match &self {
            ApiError::Dependency(which, e) => {
                tracing::error!(error = %e, dependency = which, error_type = e.kind.as_str(), "dependency call failed")
            }
            ApiError::Internal(e) => tracing::error!(error = %e, "request failed"),
            _ => {}
        }
        let errors = match self {
            ApiError::BadRequest(ref e) | ApiError::Invalid(ref e) => Some(e.clone()),
            ApiError::KeyInFlight => Some(vec![FieldError {
                field: IDEMPOTENCY_KEY_HEADER.into(),
                message: "a request with this key has not been answered yet".into(),
            }]),
            ApiError::KeyReused => Some(vec![FieldError {
                field: IDEMPOTENCY_KEY_HEADER.into(),
                message: "already used with a different body; send a new key for new content"
                    .into(),
            }]),
            _ => None,
        };
        let retry_after = self.retry_after(status);
        let body = Problem {
            // A tag URI: stable and absolute without pretending to be a page (docs/api.md lists them).
            kind: format!("tag:challenge-latam-api,2026:problems/{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // RFC 6750 section 3: an error code only when a credential was sent and refused.
        match self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            ApiError::Forbidden(scope) => {
                if let Ok(v) = HeaderValue::from_str(&format!(
                    r#"Bearer error="insufficient_scope", scope="{scope}""#
                )) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        response
    }
}
