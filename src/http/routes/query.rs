//! `GET /challenge-latam-api/getData`: newest records first, one per message id, paged by
//! keyset with a `Link: rel="next"` header so the body stays the seed's bare list.

use axum::extract::State;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::Instrument;

use crate::domain::{Cursor, RecordFilter, StoredRecord};
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use crate::ports::{DependencyError, ErrorKind};
use crate::telemetry;

/// Query parameters of getData (documentation; parsing is `RecordFilter::parse`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct GetDataParams {
    /// Rows per page, 1 to 1000 (default 10).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this customer's records (1 to 64 characters).
    #[param(min_length = 1, max_length = 64, rename = "customerId")]
    customer_id: Option<String>,
    /// Inclusive lower bound on publishTime (RFC 3339); default `to` minus 7 days.
    #[param(rename = "from", format = DateTime)]
    from: Option<String>,
    /// Exclusive upper bound on publishTime (RFC 3339); default now.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Opaque token from the previous page's `Link` header.
    #[param(rename = "pageToken")]
    page_token: Option<String>,
}

/// Reads stored records, newest first.
#[utoipa::path(
    get,
    path = "/challenge-latam-api/getData",
    tag = "records",
    params(GetDataParams),
    responses(
        (status = 200, description = "Records, newest first. `Link: <...>; rel=\"next\"` when more exist.", body = Vec<StoredRecord>),
        (status = 400, description = "A query parameter is wrong.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `read` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable or load shed.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Store timed out.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get_data(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let filter = RecordFilter::parse(uri.query(), chrono::Utc::now())
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let span = telemetry::trace_span(|| {
        tracing::info_span!(
            "SELECT records",
            otel.kind = "client",
            db.system.name = state.db_system,
            db.operation.name = "query",
            db.collection.name = "records",
        )
    });
    let mut rows = tokio::time::timeout(state.request_timeout, state.query.query(&filter))
        .instrument(span)
        .await
        .unwrap_or_else(|_| Err(DependencyError::new(ErrorKind::Timeout, "query timed out")))
        .map_err(|e| ApiError::Dependency("store", e))?;

    let limit = filter.limit as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| Cursor {
            publish_time_us: r.publish_time_us,
            message_id: r.message_id.clone(),
        })
    } else {
        None
    };
    let mut response = Json(rows).into_response();
    if let Some(cursor) = next {
        let link = format!(
            "<{}?{}>; rel=\"next\"",
            uri.path(),
            filter.next_page_query(&cursor)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    Ok(response)
}
