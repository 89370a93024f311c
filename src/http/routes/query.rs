//! `GET /challenge-latam-api/getData`: newest records first, one per message id, paged by
//! keyset with a `Link: rel="next"` header so the body stays the seed's bare list. The page
//! comes from [`crate::pages`] (cached, coalesced, bounded) with an `ETag`, and an
//! `If-None-Match` that names it is answered 304 with no body.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::domain::{RecordFilter, StoredRecord};
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use crate::pages;
use crate::ports::{DependencyError, ErrorKind};

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
    params(GetDataParams,
        ("If-None-Match" = Option<String>, Header,
            description = "An `ETag` of this page from an earlier answer: 304 without a body while the page is unchanged.")),
    responses(
        (status = 200, description = "Records, newest first. `Link: <...>; rel=\"next\"` when more exist. `ETag` validates the page; it may be served from a cache for up to `QUERY_CACHE_TTL_MS`.", body = Vec<StoredRecord>,
            headers(("ETag" = String, description = "Validator of this page, for `If-None-Match`."))),
        (status = 304, description = "Not modified: `If-None-Match` names this page's `ETag`.",
            headers(("ETag" = String, description = "Validator of this page."))),
        (status = 400, description = "A query parameter is wrong.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `read` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable, too many store queries running, or load shed (`Retry-After`).", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Store timed out.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("oidc" = []))
)]
pub async fn get_data(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let filter = RecordFilter::parse(uri.query(), chrono::Utc::now())
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let page = tokio::time::timeout(state.request_timeout, state.pages.get(&filter))
        .await
        .unwrap_or_else(|_| Err(DependencyError::new(ErrorKind::Timeout, "query timed out")))
        .map_err(|e| ApiError::Dependency("store", e))?;

    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| pages::matches(v.as_bytes(), &page.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            page.body.clone(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, page.etag.clone());
    // The page depends on the caller's credentials: no shared cache may keep it, and a
    // client's own cache must revalidate (which the ETag makes cheap).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Some(link) = &page.link {
        h.insert(header::LINK, link.clone());
    }
    Ok(response)
}
