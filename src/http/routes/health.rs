//! Liveness and readiness. `/healthz` answers while the process can serve; `/readyz` asks the
//! broker and the store (each with a short deadline) and says which one failed.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::ports::DependencyError;

/// Deadline of each readiness check.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// Readiness report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// `ok`, or the failure class (`timeout`, `unavailable`, ...).
    pub broker: String,
    /// `ok`, or the failure class.
    pub store: String,
    /// `enabled` or `disabled`.
    pub auth: &'static str,
    /// `local` or `gcp`.
    pub backend: &'static str,
    /// Each trusted OIDC issuer: `ok`, `unreachable` (cached keys still verify) or
    /// `unreachable_no_keys` (its tokens are answered 503). Absent without `OIDC_ISSUERS`.
    /// Informational: API keys work without any issuer, so it does not fail readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<std::collections::BTreeMap<String, &'static str>>,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process can serve.", body = serde_json::Value)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: 200 when broker and store answer, else 503 naming the one that failed.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Broker and store answer.", body = Readiness),
        (status = 503, description = "A dependency failed; the body says which.", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    // A dependency slower than the request deadline fails every request with 504, so it is
    // not ready either: the checks get that deadline (capped at CHECK_DEADLINE).
    let deadline = state.request_timeout.min(CHECK_DEADLINE);
    let (broker, store) = tokio::join!(
        within(deadline, state.publisher.check()),
        within(deadline, state.query.check())
    );
    let ok = broker.is_ok() && store.is_ok();
    let describe = |r: &Result<(), DependencyError>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.kind.as_str().to_owned(),
    };
    if let Err(e) = &broker {
        tracing::warn!(error = %e, "readiness: broker failed");
    }
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: store failed");
    }
    let body = Readiness {
        status: if ok { "ready" } else { "unavailable" },
        broker: describe(&broker),
        store: describe(&store),
        auth: state.auth_mode,
        backend: state.backend,
        oidc: state.oidc.as_ref().map(|o| o.status()),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn within(
    deadline: Duration,
    f: impl std::future::Future<Output = Result<(), DependencyError>>,
) -> Result<(), DependencyError> {
    tokio::time::timeout(deadline, f).await.unwrap_or_else(|_| {
        Err(DependencyError::new(
            crate::ports::ErrorKind::Timeout,
            "readiness check timed out",
        ))
    })
}
