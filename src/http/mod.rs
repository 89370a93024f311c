//! The HTTP edge: the router and the whole middleware stack, in one place so the order in
//! which a request meets them is readable top to bottom.
//!
//! A request to an API route passes, outermost first:
//! 1. `observe`: the request's log fields, RED metrics, one log line, and with OTLP on the
//!    server span (continuing `traceparent`);
//! 2. `admission`: at most `MAX_IN_FLIGHT` API requests at once, else 503 at once; drill faults
//!    (a no-op unless switched on); authentication, 401 without a known key or a valid
//!    bearer JWT (`oidc`), 503 while a token's issuer has never been reachable;
//! 3. the rate limiter (tower_governor), keyed by key id or client address: 429;
//! 4. `admission::RequireLayer`: 403 without the route's scope;
//! 5. the route's method router (405 for another method) and the handler, whose dependency
//!    calls have deadlines (504).
//!
//! Health, readiness and the OpenAPI document skip 2-4 so probes work under load. The layers
//! are plain tower services rather than `axum::middleware::from_fn` functions, which box and
//! clone the whole stack below them on every request (docs/benchmarks.md).

pub mod admin;
mod admission;
pub mod auth;
pub mod error;
mod middleware;
mod observe;
pub mod oidc;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;

use crate::adapters::faults::FaultSwitch;
use crate::ports::{Publisher, RecordQuery};
use admission::{AdmitLayer, RequireLayer};
use auth::{Auth, AuthState, Scope};
pub use middleware::RateLimit;
use observe::ObserveLayer;

/// Path of the ingest route.
pub const INGEST: &str = "/challenge-latam-api/ingestData";
/// Path of the query route.
pub const GET_DATA: &str = "/challenge-latam-api/getData";
/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness.
pub const READYZ: &str = "/readyz";
/// The OpenAPI document.
pub const OPENAPI: &str = "/openapi.json";

/// Every route template the router registers (it registers these constants): the
/// `http_route` label values, for which observe keeps metric handles. A template added to the
/// router but not here is still labelled, only not cached.
pub(crate) const ROUTES: [&str; 5] = [INGEST, GET_DATA, HEALTHZ, READYZ, OPENAPI];

/// What handlers need; built once in `startup`.
#[derive(Clone)]
pub struct AppState {
    /// Publishes ingested records.
    pub publisher: Arc<dyn Publisher>,
    /// The store, for readiness.
    pub query: Arc<dyn RecordQuery>,
    /// Serves getData: cached, coalesced, bounded pages over `query`.
    pub pages: Arc<crate::pages::Pages>,
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
    /// Trusted OIDC issuers, for readiness.
    pub oidc: Option<Arc<oidc::Oidc>>,
    /// Deadline of every dependency call.
    pub request_timeout: Duration,
    /// Idempotency keys whose request is being served now (409 for a second one).
    pub keys_in_flight: Arc<routes::ingest::KeysInFlight>,
}

/// The protection settings of the API routes.
#[derive(Clone)]
pub struct Protection {
    /// Authentication.
    pub auth: Arc<Auth>,
    /// Bearer JWTs from trusted issuers, beside the keys.
    pub oidc: Option<Arc<oidc::Oidc>>,
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
        .route(HEALTHZ, get(routes::health::healthz))
        .route(READYZ, get(routes::health::readyz))
        .route(OPENAPI, get(routes::openapi::openapi))
}

/// The public router with the full middleware stack (see the module docs for the order).
pub fn router(state: AppState, protection: Protection) -> Router {
    let limiter = protection.rate_limit.layer();
    let auth_state = AuthState::new(
        protection.auth.clone(),
        protection.oidc.clone(),
        protection.trust_forwarded_for,
    );
    crate::telemetry::metrics::max_active(protection.max_in_flight);
    let admit = AdmitLayer::new(protection.max_in_flight, protection.faults, auth_state);

    let observe = ObserveLayer::new();

    // Each API route is one tower stack over its method router, registered with
    // `route_service`: axum boxes a route once per `layer` call and clones every box on every
    // request, so one stack is one box where a layer per concern was five.
    let api = |scope: Scope, methods: MethodRouter| {
        ServiceBuilder::new()
            .layer(observe.clone())
            .layer(admit.clone())
            .layer(limiter.clone())
            .layer(RequireLayer(scope))
            .service(methods.fallback(middleware::method_not_allowed))
    };

    Router::new()
        .route_service(
            INGEST,
            api(
                Scope::Ingest,
                post(routes::ingest::ingest).with_state(state.clone()),
            ),
        )
        .route_service(
            GET_DATA,
            api(
                Scope::Read,
                get(routes::query::get_data).with_state(state.clone()),
            ),
        )
        .merge(
            public_routes()
                .fallback(middleware::not_found)
                .method_not_allowed_fallback(middleware::method_not_allowed)
                .with_state(state)
                .layer(observe),
        )
}
