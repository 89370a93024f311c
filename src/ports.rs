//! The seams between the HTTP edge and the backends: publish records, receive them from a
//! subscription, write rows, query rows.
//!
//! `startup` picks one implementation of each (the embedded broker and SQLite store, or Pub/Sub
//! and BigQuery) exactly once; handlers and the pipeline only ever see these traits, so they
//! cannot learn which backend runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{Cursor, RecordFilter, StoredRecord};

use crate::telemetry::metrics::{DbSystem, MessagingSystem};

pub use crate::domain::Idempotency;

/// Attributes carried by every message (CONTRACT.md, "Message attributes").
pub type Attributes = BTreeMap<String, String>;

/// One record on its way to the broker: the record's JSON and its attributes.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// UTF-8 JSON of exactly one validated record (the BigQuery subscription maps its fields to
    /// columns by name, so the payload is the record itself, not an envelope).
    pub data: Bytes,
    /// Trace context, content type, schema version and the client's idempotency key.
    pub attributes: Attributes,
}

/// A message as a subscription hands it out, with the metadata the broker assigned.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// Broker-assigned id; unique per published message and the deduplication key downstream.
    pub message_id: String,
    /// When the broker durably accepted the message, in microseconds since the Unix epoch.
    pub publish_time_us: i64,
    /// The payload exactly as published.
    pub data: Bytes,
    /// The attributes exactly as published.
    pub attributes: Attributes,
    /// 1 on first delivery; grows with every redelivery.
    pub delivery_attempt: u32,
}

/// A received message plus the handle that settles it.
pub struct Delivery {
    /// What was delivered.
    pub message: ReceivedMessage,
    /// Acknowledge only after the row is committed; nack to hand it back for a retry.
    pub ack: Box<dyn AckHandle>,
}

/// Settles one delivery. Acks are at-least-once: a lost ack means a redelivery, which the
/// store absorbs because rows are keyed by `message_id`.
#[async_trait]
pub trait AckHandle: Send {
    /// The row is committed: never deliver this message again.
    async fn ack(self: Box<Self>);
    /// The write failed with `error`: redeliver with backoff, or dead-letter the message once
    /// it has used its maximum delivery attempts.
    async fn nack(self: Box<Self>, error: String);
}

/// A row as it is stored: the record plus the metadata a BigQuery subscription writes with
/// `write_metadata` (`subscription_name`, `message_id`, `publish_time`, `attributes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record and its `message_id`/`publish_time`.
    pub record: StoredRecord,
    /// The subscription that delivered it.
    pub subscription_name: String,
    /// The message attributes as a JSON object.
    pub attributes_json: String,
}

/// Why a dependency call failed, from a small fixed set: these are the `error_type` label
/// values of the messaging and database metrics, and they choose the HTTP status at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The dependency did not answer in time (HTTP 504).
    Timeout,
    /// The dependency is down or refused the call for now (HTTP 503, retry later).
    Unavailable,
    /// The dependency is out of space or quota (HTTP 503).
    ResourceExhausted,
    /// The dependency rejected this input for good; retrying will not help.
    Invalid,
    /// Anything else; a bug or an unexpected answer.
    Internal,
}

impl ErrorKind {
    /// The `error_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Internal => "internal",
        }
    }
}

/// A failed broker or store call: its kind and the cause, for logs only (never for clients).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct DependencyError {
    /// What class of failure this is.
    pub kind: ErrorKind,
    /// The cause chain as text; logged once, never sent to clients.
    pub message: String,
}

impl DependencyError {
    /// A failure of the given kind with its cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What a publish did with one request's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The broker durably accepted every message now; their ids, in request order.
    New(Vec<String>),
    /// The request's idempotency key was already used with the same body: nothing new was
    /// published, and these are the ids the first request was answered with.
    Replayed(Vec<String>),
    /// The request's idempotency key was already used with another body (within its window):
    /// nothing was published.
    KeyReused,
}

/// Publishes validated records to the topic.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes the messages of one request and answers only once the broker has durably
    /// accepted every one of them. With `idempotency`, a request that repeats an earlier one
    /// (same scope, key and body, within the key's window) publishes nothing and is answered
    /// with the earlier ids; one that reuses the key with another body publishes nothing.
    /// What "earlier" can reach depends on the backend (docs/reliability.md).
    async fn publish(
        &self,
        messages: Vec<OutgoingMessage>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Published, DependencyError>;
    /// Whether the broker answers now (readiness).
    async fn check(&self) -> Result<(), DependencyError>;
    /// Sends whatever is buffered; called once at shutdown.
    async fn flush(&self);
}

/// Hands out messages of one subscription, at least once.
#[async_trait]
pub trait Subscription: Send + Sync + 'static {
    /// The subscription's name, written into every row as `subscription_name`.
    fn name(&self) -> &str;
    /// Waits briefly for messages and returns up to `max` of them (possibly none).
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, DependencyError>;
}

/// Writes rows to the table.
#[async_trait]
pub trait RowWriter: Send + Sync + 'static {
    /// Commits all rows or none. Rows whose `message_id` is already stored are skipped, so a
    /// redelivered message is stored once.
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError>;
}

/// Reads stored records with parameterized queries.
#[async_trait]
pub trait RecordQuery: Send + Sync + 'static {
    /// Up to `filter.limit + 1` records matching the filter, newest first (by `publish_time`,
    /// then `message_id`), one per `message_id`. The extra row tells the caller that another
    /// page exists.
    async fn query(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, DependencyError>;
    /// The same query, as getData's page: a store that keeps records as JSON text can answer
    /// without decoding them (the embedded store does); others encode what `query` gives.
    async fn query_json(&self, filter: &RecordFilter) -> Result<JsonPage, DependencyError> {
        Ok(JsonPage::from_records(filter, self.query(filter).await?))
    }
    /// Whether the store answers now (readiness).
    async fn check(&self) -> Result<(), DependencyError>;
}

/// One page of `getData`, encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPage {
    /// The JSON array of at most `filter.limit` records.
    pub body: Vec<u8>,
    /// Where the next page starts (the last record's position), when another page exists.
    pub next: Option<Cursor>,
}

impl JsonPage {
    /// The page of `filter` from the up to `limit + 1` records of [`RecordQuery::query`].
    pub fn from_records(filter: &RecordFilter, mut rows: Vec<StoredRecord>) -> Self {
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
        Self {
            body: serde_json::to_vec(&rows).expect("records always serialize"),
            next,
        }
    }
}

/// The delivery side of the pipeline, when this process stores rows itself: the embedded
/// default always, GCP only with the pull worker (production's default there is the
/// native BigQuery subscription, which needs no code).
#[derive(Clone)]
pub struct Pipeline {
    /// Where messages come from.
    pub subscription: Arc<dyn Subscription>,
    /// Where rows go.
    pub writer: Arc<dyn RowWriter>,
}

/// Everything the service needs from its backends, chosen once at start.
#[derive(Clone)]
pub struct Backends {
    /// Publishes ingested records.
    pub publisher: Arc<dyn Publisher>,
    /// Serves `getData`.
    pub query: Arc<dyn RecordQuery>,
    /// Moves messages into the store, when this process does that.
    pub pipeline: Option<Pipeline>,
    /// The broker (`messaging_system` label, `messaging.system` span attribute).
    pub messaging_system: MessagingSystem,
    /// The store (`db_system_name` label, `db.system.name` span attribute).
    pub db_system: DbSystem,
}
