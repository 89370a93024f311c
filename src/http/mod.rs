//! The HTTP edge: the router and the whole middleware stack, in one place so the order in
//! which a request meets them is readable top to bottom.
//!
//! A request to an API route passes, outermost first:
//! 1. `observe`: server span (continuing `traceparent`), RED metrics, one log line;
//! 2. `shed`: at most `MAX_IN_FLIGHT` API requests at once, else 503 at once;
//! 3. `faults`: injected latency/errors for drills (a no-op unless switched on);
//! 4. `auth::authenticate`: 401 without a known key;
//! 5. the rate limiter (tower_governor), keyed by key id or client address: 429;
//! 6. `auth::require`: 403 without the route's scope;
//! 7. the handler, whose dependency calls have deadlines (504).
//!
//! Health, readiness and the OpenAPI document skip 2-6 so probes work under load.

pub mod admin;
pub mod auth;
pub mod error;
mod middleware;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;

use crate::adapters::faults::FaultSwitch;
use crate::ports::{Publisher, RecordQuery};
use auth::{Auth, AuthState, Scope};
pub use middleware::RateLimit;

/// Path of the ingest route.
pub const INGEST: &str = "/challenge-latam-api/ingestData";
/// Path of the query route.
pub const GET_DATA: &str = "/challenge-latam-api/getData";

/// What handlers need; built once in `startup`.
#[derive(Clone)]
pub struct AppState {
    /// Publishes ingested records.
    pub publisher: Arc<dyn Publisher>,
    /// Serves getData.
    pub query: Arc<dyn RecordQuery>,
    /// `messaging.system` span attribute (`local` / `gcp_pubsub`).
    pub messaging_system: &'static str,
    /// `db.system.name` span attribute (`sqlite` / `gcp.bigquery`).
    pub db_system: &'static str,
    /// Topic name, for spans.
    pub topic: Arc<str>,
    /// `local` or `gcp`, for readiness.
    pub backend: &'static str,
    /// `enabled` or `disabled`, for readiness.
    pub auth_mode: &'static str,
    /// Deadline of every dependency call.
    pub request_timeout: Duration,
}

/// The protection settings of the API routes.
#[derive(Clone)]
pub struct Protection {
    /// Authentication.
    pub auth: Arc<Auth>,
    /// Trust `X-Forwarded-For` for anonymous clients.
    pub trust_forwarded_for: bool,
    /// Requests served at once.
    pub max_in_flight: usize,
    /// Per-client rate.
    pub rate_limit: RateLimit,
    /// Drill faults.
    pub faults: Arc<FaultSwitch>,
}

/// The handlers and nothing else: no metrics, tracing, auth, limits. Used by the benchmark
/// that measures what the middleware costs (`examples/handlers_only.rs`).
pub fn api_routes(state: AppState) -> Router {
    Router::new()
        .route(INGEST, post(routes::ingest::ingest))
        .route(GET_DATA, get(routes::query::get_data))
        .merge(public_routes())
        .with_state(state)
}

fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/openapi.json", get(routes::openapi::openapi))
}

/// The public router with the full middleware stack (see the module docs for the order).
pub fn router(state: AppState, protection: Protection) -> Router {
    let limiter = protection.rate_limit.layer();
    let auth_state = AuthState {
        auth: protection.auth.clone(),
        trust_forwarded_for: protection.trust_forwarded_for,
    };
    let shed = Arc::new(Semaphore::new(protection.max_in_flight));
    crate::telemetry::metrics::max_active(protection.max_in_flight);

    let api = Router::new()
        .route(
            INGEST,
            post(routes::ingest::ingest)
                .route_layer(from_fn(|r, n| auth::require(Scope::Ingest, r, n))),
        )
        .route(
            GET_DATA,
            get(routes::query::get_data)
                .route_layer(from_fn(|r, n| auth::require(Scope::Read, r, n))),
        )
        .layer(limiter)
        .layer(from_fn_with_state(auth_state, auth::authenticate))
        .layer(from_fn_with_state(
            protection.faults.clone(),
            middleware::faults,
        ))
        .layer(from_fn_with_state(shed, middleware::shed));

    Router::new()
        .merge(api)
        .merge(public_routes())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .with_state(state)
        .layer(from_fn(middleware::observe))
}
