//! `POST /challenge-latam-api/ingestData`: validate, publish, answer once durable.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::domain::{parse_records, FieldError, ParseError};
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use crate::ports::{Attributes, DependencyError, ErrorKind, OutgoingMessage};
use crate::telemetry::{self, propagation};

/// Largest body accepted (CONTRACT.md): 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const IDEMPOTENCY_KEY_MAX: usize = 256;

/// The answer to a successful ingest.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestResponse {
    /// Always "Data published successfully".
    #[schema(example = "Data published successfully")]
    pub status: &'static str,
    /// The broker's id for every record, in request order.
    pub message_ids: Vec<String>,
}

/// One record or a batch of 1 to 500 (documentation only; parsing is `parse_records`).
pub struct IngestBody;

impl utoipa::PartialSchema for IngestBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
        use utoipa::openapi::Ref;
        OneOfBuilder::new()
            .item(Ref::from_schema_name("Record"))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("Record"))
                    .min_items(Some(1))
                    .max_items(Some(crate::domain::MAX_BATCH))
                    .description(Some("A batch: all records are published or none.")),
            )
            .description(Some("One record, or a batch of 1 to 500 records."))
            .into()
    }
}

impl ToSchema for IngestBody {}

/// Publishes one record or a batch. Answers 200 only after the broker has durably accepted
/// every record; a batch with any invalid record publishes nothing.
#[utoipa::path(
    post,
    path = "/challenge-latam-api/ingestData",
    tag = "records",
    request_body(content = IngestBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = "^[!-~]+$",
        description = "Passed on as the `idempotency_key` message attribute.")),
    responses(
        (status = 200, description = "Every record was durably published.", body = IngestResponse),
        (status = 400, description = "Malformed JSON or header.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `ingest` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not declared as JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Records break the schema; nothing was published.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable or load shed.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Broker timed out.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(body).await?;
    let records = parse_records(&bytes).map_err(|e| match e {
        ParseError::Malformed(detail) => ApiError::Malformed(detail),
        ParseError::Invalid(errors) => ApiError::Invalid(errors),
    })?;
    let idempotency_key = idempotency_key(&headers)?;

    let span = telemetry::trace_span(|| {
        tracing::info_span!(
            "challenge-latam-records send",
            otel.kind = "producer",
            messaging.system = state.messaging_system,
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %state.topic,
            messaging.batch.message_count = records.len(),
        )
    });
    let mut base = Attributes::new();
    base.insert("content_type".into(), "application/json".into());
    base.insert("schema_version".into(), "1".into());
    if let Some(key) = idempotency_key {
        base.insert("idempotency_key".into(), key);
    }
    propagation::inject(&span, &mut base);
    let messages = records
        .iter()
        .map(|r| OutgoingMessage {
            data: serde_json::to_vec(r)
                .expect("a record always serializes")
                .into(),
            attributes: base.clone(),
        })
        .collect();

    let ids = tokio::time::timeout(state.request_timeout, state.publisher.publish(messages))
        .instrument(span)
        .await
        .unwrap_or_else(|_| {
            Err(DependencyError::new(
                ErrorKind::Timeout,
                "publish timed out",
            ))
        })
        .map_err(|e| ApiError::Dependency("broker", e))?;
    Ok(Json(IngestResponse {
        status: "Data published successfully",
        message_ids: ids,
    }))
}

/// Past the limit, the rest of the body is still read (up to [`DRAIN_CAP`], briefly) before
/// answering 413: a server that answers and closes while the client is still sending makes
/// many clients see a reset instead of the 413.
const DRAIN_CAP: usize = 8 * MAX_BODY_BYTES;

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Malformed(format!("reading the body failed: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            let mut seen = buf.len() + chunk.len();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                while let Some(Ok(c)) = stream.next().await {
                    seen += c.len();
                    if seen > DRAIN_CAP {
                        break;
                    }
                }
            })
            .await;
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let ok = value.to_str().ok().filter(|v| {
        !v.is_empty() && v.len() <= IDEMPOTENCY_KEY_MAX && v.bytes().all(|b| b.is_ascii_graphic())
    });
    ok.map(|v| Some(v.to_owned())).ok_or_else(|| {
        ApiError::BadRequest(vec![FieldError {
            field: "Idempotency-Key".into(),
            message: format!("must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
        }])
    })
}
