//! The subscriber side of the embedded default (and of the optional GCP worker): receive
//! messages, turn them into rows, write them, and only then acknowledge.
//!
//! A batch is written in one commit. What happens when that fails depends on why:
//!
//! - The store is down, slow or out of quota (`Unavailable`, `Timeout`, `ResourceExhausted`):
//!   nothing is wrong with the messages, so they are neither nacked nor dead-lettered. The
//!   pipeline keeps the batch (the broker keeps its leases: the Pub/Sub worker extends them, the
//!   local broker has one consumer) and writes it again with exponential backoff, 100 ms to
//!   10 s, the same range as the local broker's redeliveries. It receives nothing new meanwhile,
//!   so pulling pauses (the worker pulls only what the pipeline asks for) and no
//!   delivery attempt is spent while the store is out, however long that lasts.
//! - The store rejected the batch (`Invalid`, `Internal`): each message is written on its own,
//!   so that one bad row (a poison message) is nacked, retried with the broker's backoff and
//!   eventually dead-lettered, while the rest of the batch is stored and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{Record, StoredRecord};
use crate::ports::{Delivery, DependencyError, ErrorKind, Pipeline, Row, RowWriter};
use crate::telemetry::metrics::PipelineMetrics;
use crate::telemetry::{self, propagation};

/// The `messaging.system` and `db.system.name` of the backends, for spans.
#[derive(Debug, Clone, Copy)]
pub struct Systems {
    /// `local` or `gcp_pubsub`.
    pub messaging: &'static str,
    /// `sqlite` or `gcp.bigquery`.
    pub db: &'static str,
}

/// Most messages taken per receive.
const BATCH: usize = 500;
/// How long the pipeline waits before its next receive when the last batch was neither a lone
/// message nor a full one (see [`lingers`]).
const LINGER: Duration = Duration::from_millis(10);
/// First wait before writing a held batch again while the store is unavailable; doubles up to
/// [`HOLD_MAX_BACKOFF`]. The local broker's redelivery backoff uses the same range.
const HOLD_MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two writes of a held batch.
const HOLD_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Wait after a failed receive (the broker is down), doubling up to [`RECEIVE_MAX_BACKOFF`].
const RECEIVE_MIN_BACKOFF: Duration = Duration::from_millis(250);
const RECEIVE_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pipeline's metrics: one pipeline runs per process, so its handles are one static.
static METRICS: PipelineMetrics = PipelineMetrics::register();

/// Whether a failed write says the store is out (retry the same rows later, spend no delivery
/// attempt) rather than that it refused these rows (nack, and dead-letter in the end).
fn store_is_down(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::ResourceExhausted
    )
}

/// Whether to wait [`LINGER`] before the next receive, after a batch of `n` messages. Every
/// batch costs the same fixed work whatever its size: a pull and its lease, a store commit with
/// its disk flush, the acks' delete. Receiving again at once took batches of about 60 under wrk
/// (250 store flushes a second, docs/benchmarks.md), so at high rates the pipeline lets more
/// accumulate first. A lone message (a quiet topic) or an empty receive is taken at once, so
/// publish to queryable is unchanged at low rates; a full batch means a backlog, taken at once
/// too. The wait adds at most `LINGER` to publish to queryable, only under load.
fn lingers(n: usize) -> bool {
    n > 1 && n < BATCH
}

/// Runs until `stop` is cancelled; a batch already received is finished first, so nothing is
/// left half-written (unacknowledged messages are delivered again after a restart anyway).
pub async fn run(
    pipeline: Pipeline,
    systems: Systems,
    write_timeout: Duration,
    stop: CancellationToken,
) {
    let Pipeline {
        subscription,
        writer,
    } = pipeline;
    let name: Arc<str> = subscription.name().into();
    let mut retry = RECEIVE_MIN_BACKOFF;
    let mut last_batch = 0;
    loop {
        if lingers(last_batch) {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(LINGER) => {}
            }
        }
        let deliveries = tokio::select! {
            _ = stop.cancelled() => break,
            r = subscription.receive(BATCH) => r,
        };
        match deliveries {
            Ok(d) => {
                retry = RECEIVE_MIN_BACKOFF;
                last_batch = d.len();
                if !d.is_empty() {
                    process(d, systems, &name, writer.as_ref(), write_timeout, &stop).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "receive failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RECEIVE_MAX_BACKOFF);
            }
        }
    }
    tracing::info!("pipeline stopped");
}

/// A message turned into a row, waiting for the write. Its row is kept apart, in the batch's
/// `Vec<Row>`, so that the rows are written without a copy.
struct Pending {
    delivery: Delivery,
    span: Span,
}

async fn process(
    deliveries: Vec<Delivery>,
    systems: Systems,
    subscription: &str,
    writer: &dyn RowWriter,
    timeout: Duration,
    stop: &CancellationToken,
) {
    let mut pending = Vec::with_capacity(deliveries.len());
    let mut rows = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let m = &delivery.message;
        // A consumer span per message, child of the producer span that published it.
        let span = telemetry::trace_span(|| {
            let span = tracing::info_span!(
                "challenge-latam-records process",
                otel.kind = "consumer",
                messaging.system = systems.messaging,
                messaging.operation.type = "process",
                messaging.destination.subscription.name = subscription,
                messaging.message.id = %m.message_id,
                messaging.gcp_pubsub.message.delivery_attempt = m.delivery_attempt,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            let _ = span.set_parent(propagation::from_attributes(&m.attributes));
            record_ids(&span);
            span
        });
        match serde_json::from_slice::<Record>(&m.data) {
            Ok(record) => {
                // A request's messages share their attributes and arrive together: encode
                // them once a run, not once a message.
                let attributes_json = match (pending.last(), rows.last()) {
                    (
                        Some(Pending { delivery: prev, .. }),
                        Some(Row {
                            attributes_json, ..
                        }),
                    ) if prev.message.attributes == m.attributes => attributes_json.clone(),
                    _ => serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".into()),
                };
                rows.push(Row {
                    record: StoredRecord::new(record, m.message_id.clone(), m.publish_time_us),
                    subscription_name: subscription.to_owned(),
                    attributes_json,
                });
                pending.push(Pending { delivery, span });
            }
            Err(e) => {
                // Validated at the edge, so this is a message someone else put on the topic.
                let error = format!("payload is not a record: {e}");
                span.in_scope(|| {
                    tracing::warn!(
                        error = %error,
                        message_id = %m.message_id,
                        delivery_attempt = m.delivery_attempt,
                        "undecodable message"
                    )
                });
                delivery.ack.nack(error).await;
            }
        }
    }
    if pending.is_empty() {
        return;
    }

    let span = insert_span(&pending, systems.db);
    match write_holding(writer, &rows, timeout, stop, &span).await {
        Ok(()) => settle_ok(pending).await,
        // One row, or the store still down when shutdown came: hand the messages back.
        Err(e) if pending.len() == 1 || store_is_down(e.kind) => settle_err(pending, &e).await,
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "batch rejected by the store; writing rows one by one");
            for (p, row) in pending.into_iter().zip(rows) {
                let span = insert_span(std::slice::from_ref(&p), systems.db);
                match write_holding(writer, std::slice::from_ref(&row), timeout, stop, &span).await
                {
                    Ok(()) => settle_ok(vec![p]).await,
                    Err(e) => settle_err(vec![p], &e).await,
                }
            }
        }
    }
}

/// Writes `rows`; while the store is down (see [`store_is_down`]) waits with exponential
/// backoff and writes them again, without settling anything, until the write succeeds, the
/// store rejects the rows, or `stop` is cancelled (then the last error is returned).
async fn write_holding(
    writer: &dyn RowWriter,
    rows: &[Row],
    timeout: Duration,
    stop: &CancellationToken,
    span: &Span,
) -> Result<(), DependencyError> {
    let mut backoff = HOLD_MIN_BACKOFF;
    let mut failures = 0u32;
    let held_since = std::time::Instant::now();
    loop {
        match write(writer, rows, timeout).instrument(span.clone()).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        rows = rows.len(),
                        failed_writes = failures,
                        held_ms = held_since.elapsed().as_millis() as u64,
                        "store is back; held rows written"
                    );
                }
                return Ok(());
            }
            Err(e) if store_is_down(e.kind) && !stop.is_cancelled() => {
                failures += 1;
                tracing::warn!(
                    error = %e,
                    rows = rows.len(),
                    failed_writes = failures,
                    retry_in_ms = backoff.as_millis() as u64,
                    "store unavailable; holding the rows (no nack) and writing them again"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(HOLD_MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The store write span: a child of the first message's consumer span, linked to the others,
/// so a single-record trace reads request -> publish -> process -> insert.
fn insert_span(pending: &[Pending], db_system: &'static str) -> Span {
    if !propagation::exporting() {
        return Span::none();
    }
    let parent = pending
        .first()
        .map(|p| p.span.clone())
        .unwrap_or_else(Span::none);
    let span = tracing::info_span!(
        parent: &parent,
        "INSERT records",
        otel.kind = "client",
        db.system.name = db_system,
        db.operation.name = "insert",
        db.collection.name = "records",
        db.operation.batch.size = pending.len(),
    );
    for p in pending.iter().skip(1) {
        let cx = p.span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
    span
}

fn record_ids(span: &Span) {
    if let Some((trace_id, span_id)) = propagation::ids(span) {
        span.record("trace_id", trace_id.as_str());
        span.record("span_id", span_id.as_str());
    }
}

async fn write(
    writer: &dyn RowWriter,
    rows: &[Row],
    timeout: Duration,
) -> Result<(), DependencyError> {
    match tokio::time::timeout(timeout, writer.insert(rows)).await {
        Ok(r) => r,
        Err(_) => Err(DependencyError::new(
            ErrorKind::Timeout,
            "row write timed out",
        )),
    }
}

async fn settle_ok(pending: Vec<Pending>) {
    let now = chrono::Utc::now().timestamp_micros();
    for p in pending {
        METRICS.end_to_end((now - p.delivery.message.publish_time_us) as f64 / 1e6);
        p.delivery.ack.ack().await;
        drop(p.span);
    }
}

async fn settle_err(pending: Vec<Pending>, error: &DependencyError) {
    for p in pending {
        p.span.in_scope(|| {
            tracing::warn!(
                error = %error,
                message_id = %p.delivery.message.message_id,
                delivery_attempt = p.delivery.message.delivery_attempt,
                "row write failed; message will be redelivered or dead-lettered"
            )
        });
        p.delivery.ack.nack(error.message.clone()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::ports::{AckHandle, ReceivedMessage};

    type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

    struct Handle {
        id: String,
        log: Log,
    }

    #[async_trait]
    impl AckHandle for Handle {
        async fn ack(self: Box<Self>) {
            self.log.lock().unwrap().push((self.id.clone(), "ack"));
        }
        async fn nack(self: Box<Self>, _error: String) {
            self.log.lock().unwrap().push((self.id.clone(), "nack"));
        }
    }

    /// A store that is down (`Unavailable`) for its first `down` writes, and then rejects
    /// (`Invalid`) any write holding a row of customer `bad`.
    struct Store {
        down: Mutex<u32>,
        writes: Mutex<u32>,
        stored: Mutex<Vec<String>>,
        attributes: Mutex<Vec<String>>,
        settled_before_up: Log,
        log: Log,
    }

    #[async_trait]
    impl RowWriter for Store {
        async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
            *self.writes.lock().unwrap() += 1;
            let mut down = self.down.lock().unwrap();
            if *down > 0 {
                *down -= 1;
                // Nothing may be settled while the store is down.
                let settled = self.log.lock().unwrap().clone();
                self.settled_before_up.lock().unwrap().extend(settled);
                return Err(DependencyError::new(ErrorKind::Unavailable, "store down"));
            }
            if rows.iter().any(|r| r.record.customer_id == "bad") {
                return Err(DependencyError::new(ErrorKind::Invalid, "row rejected"));
            }
            let mut stored = self.stored.lock().unwrap();
            stored.extend(rows.iter().map(|r| r.record.message_id.clone()));
            let mut attributes = self.attributes.lock().unwrap();
            attributes.extend(rows.iter().map(|r| r.attributes_json.clone()));
            Ok(())
        }
    }

    fn delivery(id: &str, customer: &str, log: &Log) -> Delivery {
        Delivery {
            message: ReceivedMessage {
                message_id: id.into(),
                publish_time_us: 1,
                data: Bytes::from(format!(r#"{{"customerId":"{customer}","name":"n"}}"#)),
                attributes: Default::default(),
                delivery_attempt: 1,
            },
            ack: Box::new(Handle {
                id: id.into(),
                log: log.clone(),
            }),
        }
    }

    const SYSTEMS: Systems = Systems {
        messaging: "local",
        db: "sqlite",
    };

    fn store(down: u32, log: &Log) -> Store {
        Store {
            down: Mutex::new(down),
            writes: Mutex::new(0),
            stored: Mutex::new(Vec::new()),
            attributes: Mutex::new(Vec::new()),
            settled_before_up: Log::default(),
            log: log.clone(),
        }
    }

    #[tokio::test]
    async fn a_store_outage_holds_the_batch_without_nacking_and_writes_it_when_back() {
        let log = Log::default();
        let store = store(4, &log);
        let batch = vec![delivery("1", "a", &log), delivery("2", "b", &log)];
        let started = std::time::Instant::now();
        let stop = CancellationToken::new();
        process(batch, SYSTEMS, "s", &store, Duration::from_secs(1), &stop).await;
        // 4 failed writes, waits of 100 + 200 + 400 + 800 ms, then the fifth write succeeds.
        assert_eq!(*store.writes.lock().unwrap(), 5);
        assert!(started.elapsed() >= Duration::from_millis(1500));
        assert!(store.settled_before_up.lock().unwrap().is_empty());
        assert_eq!(*store.stored.lock().unwrap(), ["1", "2"]);
        assert_eq!(
            *log.lock().unwrap(),
            [("1".to_owned(), "ack"), ("2".to_owned(), "ack")]
        );
    }

    #[tokio::test]
    async fn a_row_the_store_rejects_is_nacked_and_the_rest_of_the_batch_is_stored() {
        let log = Log::default();
        let store = store(0, &log);
        let batch = vec![
            delivery("1", "a", &log),
            delivery("2", "bad", &log),
            delivery("3", "c", &log),
        ];
        let stop = CancellationToken::new();
        process(batch, SYSTEMS, "s", &store, Duration::from_secs(1), &stop).await;
        assert_eq!(*store.stored.lock().unwrap(), ["1", "3"]);
        assert_eq!(
            *log.lock().unwrap(),
            [
                ("1".to_owned(), "ack"),
                ("2".to_owned(), "nack"),
                ("3".to_owned(), "ack")
            ]
        );
    }

    #[tokio::test]
    async fn shutdown_during_an_outage_hands_the_held_messages_back() {
        let log = Log::default();
        let store = store(u32::MAX, &log);
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let batch = vec![delivery("1", "a", &log)];
        process(batch, SYSTEMS, "s", &store, Duration::from_secs(1), &stop).await;
        assert!(store.stored.lock().unwrap().is_empty());
        assert_eq!(*log.lock().unwrap(), [("1".to_owned(), "nack")]);
    }

    #[tokio::test]
    async fn each_row_carries_its_own_messages_attributes() {
        // Runs of equal attributes share one encoding; a change of attributes must not.
        let log = Log::default();
        let store = store(0, &log);
        let with = |id: &str, key: Option<&str>| {
            let mut d = delivery(id, "a", &log);
            if let Some(key) = key {
                d.message
                    .attributes
                    .insert("idempotency_key".into(), key.into());
            }
            d
        };
        let batch = vec![
            with("1", Some("k1")),
            with("2", Some("k1")),
            with("3", Some("k2")),
            with("4", None),
            with("5", Some("k2")),
        ];
        let stop = CancellationToken::new();
        process(batch, SYSTEMS, "s", &store, Duration::from_secs(1), &stop).await;
        let k1 = r#"{"idempotency_key":"k1"}"#;
        let k2 = r#"{"idempotency_key":"k2"}"#;
        assert_eq!(*store.attributes.lock().unwrap(), [k1, k1, k2, "{}", k2]);
    }

    #[test]
    fn only_a_partial_batch_of_several_messages_is_followed_by_a_wait() {
        // Empty and lone-message receives (a quiet topic) and full batches (a backlog) are
        // followed by the next receive at once.
        assert!(!lingers(0));
        assert!(!lingers(1));
        assert!(lingers(2));
        assert!(lingers(BATCH - 1));
        assert!(!lingers(BATCH));
    }

    #[test]
    fn only_outages_hold_rows() {
        assert!(store_is_down(ErrorKind::Unavailable));
        assert!(store_is_down(ErrorKind::Timeout));
        assert!(store_is_down(ErrorKind::ResourceExhausted));
        assert!(!store_is_down(ErrorKind::Invalid));
        assert!(!store_is_down(ErrorKind::Internal));
    }
}
