//! `POST /challenge-latam-api/ingestData`: validate, publish, answer once durable; with an
//! `Idempotency-Key`, one request per key at a time, and a retry answered with the first ids.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::{Extension, Json};
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::domain::{parse_records, Idempotency, ParseError};
use crate::http::auth::{ClientKey, Principal};
use crate::http::error::{ApiError, Problem};
use crate::http::AppState;
use crate::ports::{Attributes, DependencyError, ErrorKind, OutgoingMessage, Published};
use crate::telemetry::metrics::{self, IdempotencyOutcome};
use crate::telemetry::{self, propagation};

/// Largest body accepted (CONTRACT.md): 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
        description = "Makes a retry safe: a request that repeats an earlier one from the same caller (same key, \
same body bytes, within `IDEMPOTENCY_TTL_SECONDS`, 24 h by default) publishes nothing and is answered 200 with \
the earlier `messageIds`. Reusing a key with another body is a 409, and so is a second request while the first \
is still being served (with `Retry-After`). Use a new random key (a UUID) for new content, and the same key and \
body when retrying after a 503, a 504 or a lost connection. Also passed on as the `idempotency_key` message \
attribute. docs/api.md says what holds on each backend.")),
    responses(
        (status = 200, description = "Every record was durably published (or, with an `Idempotency-Key` already used \
with this body, had been: nothing new was published and the ids are the first request's).", body = IngestResponse),
        (status = 400, description = "Malformed JSON or header.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `ingest` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The `Idempotency-Key` was used with another body (`idempotency-key-reused`: \
never retry as is), or a request with it is still being served (`idempotency-key-in-flight`, with `Retry-After`: \
retry the same request). Nothing was published.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not declared as JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Records break the schema; nothing was published.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable or load shed.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Broker timed out.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("oidc" = []))
)]
pub async fn ingest(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    client: Option<Extension<ClientKey>>,
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
    let idempotency = idempotency(&headers, &bytes, principal, client)?;
    // Held until the answer is produced (or the request is dropped): one request per key at a
    // time in this process.
    let _claim = match &idempotency {
        Some(idem) => match state.keys_in_flight.claim(idem) {
            Some(claim) => Some(claim),
            None => {
                metrics::idempotent_request(IdempotencyOutcome::InFlight);
                return Err(ApiError::KeyInFlight);
            }
        },
        None => None,
    };

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
    if let Some(idem) = &idempotency {
        base.insert("idempotency_key".into(), idem.key.clone());
    }
    propagation::inject(&span, &mut base);
    // The last message takes `base` itself: a one-record request clones no attributes.
    let last = records.len().saturating_sub(1);
    let messages = records
        .iter()
        .enumerate()
        .map(|(i, r)| OutgoingMessage {
            data: serde_json::to_vec(r)
                .expect("a record always serializes")
                .into(),
            attributes: if i == last {
                std::mem::take(&mut base)
            } else {
                base.clone()
            },
        })
        .collect();

    let published = tokio::time::timeout(
        state.request_timeout,
        state.publisher.publish(messages, idempotency.as_ref()),
    )
    .instrument(span)
    .await
    .unwrap_or_else(|_| {
        Err(DependencyError::new(
            ErrorKind::Timeout,
            "publish timed out",
        ))
    })
    .map_err(|e| ApiError::Dependency("broker", e))?;
    let keyed = idempotency.is_some();
    let ids = match published {
        Published::New(ids) => {
            if keyed {
                metrics::idempotent_request(IdempotencyOutcome::New);
            }
            ids
        }
        Published::Replayed(ids) => {
            metrics::idempotent_request(IdempotencyOutcome::Replayed);
            ids
        }
        Published::KeyReused => {
            metrics::idempotent_request(IdempotencyOutcome::KeyReused);
            return Err(ApiError::KeyReused);
        }
    };
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

/// The request's `Idempotency-Key`, scoped to its caller and bound to its body; 400 naming the
/// header when the key is not 1 to 256 visible ASCII characters.
fn idempotency(
    headers: &HeaderMap,
    body: &[u8],
    principal: Option<Extension<Principal>>,
    client: Option<Extension<ClientKey>>,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    Idempotency::new(scope(principal, client), value.as_bytes(), body)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(vec![e]))
}

/// Who is asking, as idempotency keys are scoped: the API key's id, or, with authentication
/// off, the client's address (the rate limiter's key). Prefixed, so that a key id can never
/// look like an address.
fn scope(principal: Option<Extension<Principal>>, client: Option<Extension<ClientKey>>) -> String {
    match (principal.and_then(|p| p.0.key_id), client) {
        (Some(id), _) => format!("key/{id}"),
        (None, Some(client)) => format!("addr/{}", client.0 .0),
        // Only the bare router of the middleware benchmark has no admission layer.
        (None, None) => "anonymous".to_owned(),
    }
}

/// Idempotency keys whose request is being served by this process. A second request with a
/// key in here is answered 409 at once: it cannot know yet whether the first one will succeed.
/// Each admitted request holds at most one entry, so `MAX_IN_FLIGHT` bounds the set.
#[derive(Debug, Default)]
pub struct KeysInFlight(Mutex<HashSet<(String, String)>>);

impl KeysInFlight {
    /// Claims `idem`'s scope and key, or `None` when another request holds them.
    fn claim(self: &Arc<Self>, idem: &Idempotency) -> Option<KeyClaim> {
        let id = (idem.scope.clone(), idem.key.clone());
        let fresh = self
            .0
            .lock()
            .expect("keys in flight poisoned")
            .insert(id.clone());
        fresh.then(|| KeyClaim {
            keys: self.clone(),
            id,
        })
    }
}

/// A claimed key; released when dropped, whether the request was answered or abandoned.
struct KeyClaim {
    keys: Arc<KeysInFlight>,
    id: (String, String),
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.keys.0.lock() {
            keys.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_per_scope_until_the_claim_is_dropped() {
        let keys = Arc::new(KeysInFlight::default());
        let a = Idempotency::new("key/a".into(), b"k", b"{}").unwrap();
        let b = Idempotency::new("key/b".into(), b"k", b"{}").unwrap();
        let first = keys.claim(&a).expect("a free key");
        assert!(keys.claim(&a).is_none(), "the same key claimed twice");
        let other = keys.claim(&b).expect("another scope's key is its own");
        drop(first);
        assert!(
            keys.claim(&a).is_some(),
            "released when the claim is dropped"
        );
        drop(other);
        assert!(keys.0.lock().unwrap().is_empty());
    }
}
