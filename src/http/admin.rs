//! The admin listener (`ADMIN_PORT`): `/metrics` for Prometheus and `/admin/faults` for
//! drills. It is a separate port so that Cloud Run, which exposes only `PORT`, never serves
//! it to the internet.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::adapters::faults::FaultSwitch;
use crate::config::Faults;

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    faults: Option<Arc<FaultSwitch>>,
    process: Arc<metrics_process::Collector>,
}

/// The admin router. `faults` is `None` where injection is refused (`BACKEND=gcp`).
pub fn router(metrics: PrometheusHandle, faults: Option<Arc<FaultSwitch>>) -> Router {
    let process = metrics_process::Collector::default();
    process.describe();
    Router::new()
        .route("/metrics", get(render))
        .route("/admin/faults", get(get_faults).put(put_faults))
        .with_state(AdminState {
            metrics,
            faults,
            process: Arc::new(process),
        })
}

async fn render(State(s): State<AdminState>) -> Response {
    s.process.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn get_faults(State(s): State<AdminState>) -> Response {
    match &s.faults {
        Some(f) => Json(f.get()).into_response(),
        None => refused(),
    }
}

async fn put_faults(
    State(s): State<AdminState>,
    Json(patch): Json<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let Some(switch) = &s.faults else {
        return refused();
    };
    let mut current = match serde_json::to_value(switch.get()) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    current.extend(patch);
    let next: Faults = match serde_json::from_value(serde_json::Value::Object(current)) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Err(e) = next.validate() {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    switch.set(next);
    tracing::warn!(faults = ?next, "fault injection changed");
    Json(next).into_response()
}

fn refused() -> Response {
    (
        StatusCode::CONFLICT,
        "fault injection is refused on BACKEND=gcp",
    )
        .into_response()
}
