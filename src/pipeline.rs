//! The subscriber side of the embedded default (and of the optional GCP worker): receive
//! messages, turn them into rows, write them, and only then acknowledge.
//!
//! A batch is written in one commit. When that fails, each message is written on its own so
//! that one bad row (a poison message) is retried and eventually dead-lettered by the broker
//! while the rest of the batch is stored and acknowledged.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::{Record, StoredRecord};
use crate::ports::{Delivery, DependencyError, ErrorKind, Pipeline, Row, RowWriter};
use crate::telemetry::{self, metrics, propagation};

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
    loop {
        let deliveries = tokio::select! {
            _ = stop.cancelled() => break,
            r = subscription.receive(BATCH) => r,
        };
        match deliveries {
            Ok(d) if d.is_empty() => {}
            Ok(d) => process(d, systems, &name, writer.as_ref(), write_timeout).await,
            Err(e) => {
                tracing::warn!(error = %e, "receive failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }
    tracing::info!("pipeline stopped");
}

struct Pending {
    row: Row,
    delivery: Delivery,
    span: Span,
}

async fn process(
    deliveries: Vec<Delivery>,
    systems: Systems,
    subscription: &str,
    writer: &dyn RowWriter,
    timeout: Duration,
) {
    let mut pending = Vec::with_capacity(deliveries.len());
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
                let row = Row {
                    record: StoredRecord::new(record, m.message_id.clone(), m.publish_time_us),
                    subscription_name: subscription.to_owned(),
                    attributes_json: serde_json::to_string(&m.attributes)
                        .unwrap_or_else(|_| "{}".into()),
                };
                pending.push(Pending {
                    row,
                    delivery,
                    span,
                });
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

    let rows: Vec<Row> = pending.iter().map(|p| p.row.clone()).collect();
    let span = insert_span(&pending, systems.db);
    match write(writer, &rows, timeout).instrument(span).await {
        Ok(()) => settle_ok(pending).await,
        Err(e) if pending.len() == 1 => settle_err(pending, &e).await,
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "batch write failed; writing rows one by one");
            for p in pending {
                let span = insert_span(std::slice::from_ref(&p), systems.db);
                match write(writer, std::slice::from_ref(&p.row), timeout)
                    .instrument(span)
                    .await
                {
                    Ok(()) => settle_ok(vec![p]).await,
                    Err(e) => settle_err(vec![p], &e).await,
                }
            }
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
        metrics::end_to_end((now - p.row.record.publish_time_us) as f64 / 1e6);
        p.delivery.ack.ack().await;
        drop(p.span);
    }
}

async fn settle_err(pending: Vec<Pending>, error: &DependencyError) {
    for p in pending {
        p.span.in_scope(|| {
            tracing::warn!(
                error = %error,
                message_id = %p.row.record.message_id,
                delivery_attempt = p.delivery.message.delivery_attempt,
                "row write failed; message will be redelivered or dead-lettered"
            )
        });
        p.delivery.ack.nack(error.message.clone()).await;
    }
}
