//! Pub/Sub over the official `google-cloud-pubsub` crate: the publisher behind `ingestData`,
//! and the streaming-pull subscription that feeds the worker pipeline when this process writes
//! rows itself (emulators, or deployments without a native BigQuery subscription).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use google_cloud_gax::retry_policy::{NeverRetry, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, Subscriber, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::idempotency::{KeyTable, Seen};
use super::{deadline, CHECK_TIMEOUT, MESSAGING_SYSTEM};
use crate::ports::{
    AckHandle, Delivery, DependencyError, ErrorKind, Idempotency, OutgoingMessage, Published,
    ReceivedMessage, Subscription,
};
use crate::telemetry::metrics::{self, MessagingOp};

/// Messages the publisher sends in one RPC: a whole ingest batch (at most 500 records) goes
/// out at once.
const BATCH_MESSAGES: u32 = 500;
/// Bytes per publish RPC: an ingest body is at most 1 MiB, so a whole request fits (Pub/Sub
/// takes up to 10 MB per request).
const BATCH_BYTES: u32 = 2 * 1024 * 1024;
/// How long the publisher waits to fill a batch. Latency first: a request's messages are all
/// handed over at once, so there is little to gain from waiting for other requests.
const BATCH_DELAY: Duration = Duration::from_millis(2);
/// Messages pulled but not yet settled, per process (Pub/Sub flow control and the local
/// buffer): the bound on the worker's concurrency and memory. One pipeline batch, so that a
/// worker does not hoard messages that other workers could be writing.
const MAX_OUTSTANDING: usize = 500;
/// How far each lease extension reaches. The client keeps extending while a message is
/// processed; when a worker dies, Pub/Sub redelivers its messages after at most this long
/// (the client's default, 60 s, would spend the whole freshness objective on one crash).
const LEASE_EXTENSION: Duration = Duration::from_secs(10);
/// How long the client keeps extending a message's lease. While the store is down the
/// pipeline holds its batch (no nack, so no delivery attempt is spent) and the client extends
/// the leases of the held and buffered messages up to this long; only a store outage longer
/// than this makes Pub/Sub deliver them again, spending one attempt per such period. (The
/// client's default, set explicitly because the pipeline relies on it.)
const MAX_LEASE: Duration = Duration::from_secs(60 * 60);
/// How long `receive` waits for a first message before answering with none.
const RECEIVE_WAIT: Duration = Duration::from_millis(250);

/// The message attribute that carries a keyed request's record id, which `getData` returns as
/// `messageId` and deduplicates on (docs/gcp.md).
pub const RECORD_ID_ATTRIBUTE: &str = "record_id";

/// Where a client connects: Google's endpoint with Application Default Credentials, or an
/// emulator with anonymous credentials.
fn anonymous() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
}

/// Publishes to one topic.
pub struct PubSubPublisher {
    publisher: Publisher,
    admin: TopicAdmin,
    topic: String,
    timeout: Duration,
    /// Idempotency keys seen by this instance.
    keys: KeyTable,
}

impl PubSubPublisher {
    /// Connects to `topic` (`projects/P/topics/T`). Transient failures are retried for at most
    /// half of `timeout`, so that a broker that is down answers `Unavailable` (503 with
    /// `Retry-After`) before the request deadline turns it into a 504. Idempotency keys are
    /// remembered by this instance for `idempotency_ttl`.
    pub async fn connect(
        topic: &str,
        endpoint: Option<&str>,
        timeout: Duration,
        idempotency_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let mut builder = Publisher::builder(topic)
            .set_message_count_threshold(BATCH_MESSAGES)
            .set_byte_threshold(BATCH_BYTES)
            .set_delay_threshold(BATCH_DELAY)
            .with_retry_policy(RetryableErrors.with_time_limit(timeout / 2));
        let mut admin = TopicAdmin::builder().with_retry_policy(NeverRetry);
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
            admin = admin.with_endpoint(endpoint).with_credentials(anonymous());
        }
        Ok(Self {
            publisher: builder.build().await?,
            admin: admin.build().await?,
            topic: topic.to_owned(),
            timeout,
            keys: KeyTable::new(idempotency_ttl, super::idempotency::MAX_KEYS),
        })
    }
}

#[async_trait]
impl crate::ports::Publisher for PubSubPublisher {
    /// With an idempotency key, every message carries a record id derived from the scope, key,
    /// body and its index ([`RECORD_ID_ATTRIBUTE`]), and the answer is those ids, not Pub/Sub's:
    /// a retry publishes the same ids wherever and whenever it lands, and the query returns one
    /// row per id. Within this instance, a retry of a request that succeeded publishes nothing,
    /// and another body under the key is refused.
    async fn publish(
        &self,
        mut messages: Vec<OutgoingMessage>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Published, DependencyError> {
        let Some(idem) = idempotency else {
            return self.send(messages).await.map(Published::New);
        };
        let record_ids = |n: usize| (0..n).map(|i| idem.record_id(i)).collect::<Vec<_>>();
        match self.keys.begin(idem) {
            Seen::Published { count } => return Ok(Published::Replayed(record_ids(count))),
            Seen::OtherBody => return Ok(Published::KeyReused),
            Seen::New | Seen::Attempted => {}
        }
        let ids = record_ids(messages.len());
        for (m, id) in messages.iter_mut().zip(&ids) {
            m.attributes
                .insert(RECORD_ID_ATTRIBUTE.to_owned(), id.clone());
        }
        self.send(messages).await?;
        self.keys.published(idem, ids.len());
        Ok(Published::New(ids))
    }

    async fn check(&self) -> Result<(), DependencyError> {
        deadline(CHECK_TIMEOUT, "get topic", async {
            self.admin
                .get_topic()
                .set_topic(&self.topic)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e))
        })
        .await
    }

    async fn flush(&self) {
        // Every request awaits its own messages, so this only matters for a request cut off
        // by shutdown; bounded so a dead broker cannot hold the exit.
        let _ = tokio::time::timeout(self.timeout, self.publisher.flush()).await;
    }
}

impl PubSubPublisher {
    /// Publishes `messages` and answers Pub/Sub's ids once every one has one.
    async fn send(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<String>, DependencyError> {
        let started = Instant::now();
        let n = messages.len() as u64;
        // Pub/Sub has no multi-message transaction. Every message is handed to the batcher
        // at once (one RPC for a whole request), the client retries transient failures within
        // the time limit, and the request succeeds only when every message has an id. The
        // gap that remains (some messages published, the request answered 503/504) is closed
        // by a retry with the same Idempotency-Key (docs/gcp.md).
        let futures: Vec<_> = messages
            .into_iter()
            .map(|m| {
                self.publisher
                    .publish(Message::new().set_data(m.data).set_attributes(m.attributes))
            })
            .collect();
        let result = deadline(self.timeout, "publish", async {
            let results = futures::future::join_all(futures).await;
            let mut ids = Vec::with_capacity(results.len());
            let mut failed = 0usize;
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                None => Ok(ids),
                Some(e) => {
                    let mut error = classify_publish(&e);
                    error.message =
                        format!("{failed} of {n} messages not published: {}", error.message);
                    Err(error)
                }
            }
        })
        .await;
        let kind = result.as_ref().err().map(|e| e.kind);
        metrics::messaging_op(
            MESSAGING_SYSTEM,
            MessagingOp::Publish,
            kind,
            started.elapsed(),
        );
        metrics::messages_sent(MESSAGING_SYSTEM, kind, n);
        result
    }
}

/// A streaming pull on one subscription, buffered for `receive`.
pub struct PubSubSubscription {
    name: String,
    rx: tokio::sync::Mutex<mpsc::Receiver<(Message, Handler)>>,
    /// Why the stream is down, while it is (cleared by the next message).
    down: Arc<Mutex<Option<String>>>,
    max_delivery_attempts: u32,
    task: JoinHandle<()>,
}

impl PubSubSubscription {
    /// Opens a streaming pull on `subscription` (`projects/P/subscriptions/S`).
    /// `max_delivery_attempts` must match the subscription's dead-letter policy; it only
    /// decides when a nack is counted as a dead-lettered message.
    pub async fn connect(
        subscription: &str,
        endpoint: Option<&str>,
        max_delivery_attempts: u32,
    ) -> anyhow::Result<Self> {
        let mut builder = Subscriber::builder();
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous());
        }
        let subscriber = builder.build().await?;
        // Export the counter from the start, so "no dead letters" reads 0, not absent.
        metrics::dead_lettered(0);
        let (tx, rx) = mpsc::channel(MAX_OUTSTANDING);
        let down = Arc::new(Mutex::new(None));
        let task = tokio::spawn(pull(subscriber, subscription.to_owned(), tx, down.clone()));
        Ok(Self {
            name: subscription.to_owned(),
            rx: tokio::sync::Mutex::new(rx),
            down,
            max_delivery_attempts,
            task,
        })
    }

    fn delivery(&self, message: Message, handler: Handler) -> Delivery {
        let dead_letter_policy = handler.delivery_attempt().is_some();
        let attempt = handler.delivery_attempt().unwrap_or(1).max(1) as u32;
        let publish_time_us = message
            .publish_time
            .as_ref()
            .map(|t| t.seconds() * 1_000_000 + i64::from(t.nanos()) / 1_000)
            .unwrap_or_default();
        Delivery {
            message: ReceivedMessage {
                message_id: message.message_id,
                publish_time_us,
                data: message.data,
                attributes: message.attributes.into_iter().collect::<BTreeMap<_, _>>(),
                delivery_attempt: attempt,
            },
            ack: Box::new(PubSubAck {
                handler,
                last_attempt: dead_letter_policy && attempt >= self.max_delivery_attempts,
            }),
        }
    }
}

impl Drop for PubSubSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps one streaming pull open, reopening it with backoff when it fails, and hands messages
/// to `receive` through a bounded channel (flow control covers the rest).
async fn pull(
    subscriber: Subscriber,
    subscription: String,
    tx: mpsc::Sender<(Message, Handler)>,
    down: Arc<Mutex<Option<String>>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut stream = subscriber
            .subscribe(&subscription)
            .set_max_outstanding_messages(MAX_OUTSTANDING as i64)
            .set_max_lease_extension(LEASE_EXTENSION)
            .set_max_lease(MAX_LEASE)
            .build();
        let problem = loop {
            match stream.next().await {
                Some(Ok(item)) => {
                    backoff = Duration::from_millis(100);
                    *down.lock().expect("not poisoned") = None;
                    if tx.send(item).await.is_err() {
                        return; // the subscription was dropped
                    }
                }
                Some(Err(e)) => break format!("streaming pull failed: {e}"),
                None => break "streaming pull ended".to_owned(),
            }
        };
        tracing::warn!(error = %problem, retry_in_ms = backoff.as_millis() as u64, "reopening the streaming pull");
        *down.lock().expect("not poisoned") = Some(problem);
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl Subscription for PubSubSubscription {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, DependencyError> {
        let started = Instant::now();
        let mut rx = self.rx.lock().await;
        let first = match tokio::time::timeout(RECEIVE_WAIT, rx.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => {
                let e = DependencyError::new(ErrorKind::Internal, "the pull task stopped");
                metrics::messaging_op(
                    MESSAGING_SYSTEM,
                    MessagingOp::Receive,
                    Some(e.kind),
                    started.elapsed(),
                );
                return Err(e);
            }
            Err(_) => {
                let down = self.down.lock().expect("not poisoned").clone();
                return match down {
                    None => Ok(Vec::new()),
                    Some(problem) => {
                        metrics::messaging_op(
                            MESSAGING_SYSTEM,
                            MessagingOp::Receive,
                            Some(ErrorKind::Unavailable),
                            started.elapsed(),
                        );
                        Err(DependencyError::new(ErrorKind::Unavailable, problem))
                    }
                };
            }
        };
        let mut out = Vec::with_capacity(max.min(MAX_OUTSTANDING));
        out.push(self.delivery(first.0, first.1));
        while out.len() < max {
            match rx.try_recv() {
                Ok((m, h)) => out.push(self.delivery(m, h)),
                Err(_) => break,
            }
        }
        metrics::messaging_op(
            MESSAGING_SYSTEM,
            MessagingOp::Receive,
            None,
            started.elapsed(),
        );
        Ok(out)
    }
}

/// Settles one streaming-pull delivery. Acks and nacks are sent by the client's lease loop
/// in the background (at-least-once: a lost ack is a redelivery, which `insertId` and the
/// query's deduplication absorb).
struct PubSubAck {
    handler: Handler,
    /// This was the subscription's last attempt: a nack sends it to the dead-letter topic.
    last_attempt: bool,
}

#[async_trait]
impl AckHandle for PubSubAck {
    async fn ack(self: Box<Self>) {
        let started = Instant::now();
        self.handler.ack();
        metrics::messaging_op(MESSAGING_SYSTEM, MessagingOp::Ack, None, started.elapsed());
    }

    /// Only for messages the pipeline could not store for a reason of their own (the store
    /// rejected the row, the payload is not a record) or that it hands back at shutdown: a
    /// store outage holds messages instead. Pub/Sub redelivers after the subscription's retry
    /// policy backoff and dead-letters after its maximum attempts.
    async fn nack(self: Box<Self>, error: String) {
        let started = Instant::now();
        if self.last_attempt {
            tracing::warn!(error = %error, "last delivery attempt failed; Pub/Sub moves the message to the dead-letter topic");
            metrics::dead_lettered(1);
        }
        self.handler.nack();
        metrics::messaging_op(MESSAGING_SYSTEM, MessagingOp::Ack, None, started.elapsed());
    }
}

/// The kind of a failed Pub/Sub call.
fn classify(e: &google_cloud_pubsub::Error) -> DependencyError {
    use google_cloud_gax::error::rpc::Code;
    let kind = if let Some(status) = e.status() {
        match status.code {
            Code::DeadlineExceeded => ErrorKind::Timeout,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
            // A missing topic or a missing permission is a deployment fault this request
            // cannot fix; answer "unavailable, retry later" while the operator fixes it.
            Code::Unavailable
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::Cancelled
            | Code::Internal
            | Code::Unknown => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io() || e.is_connect() || e.is_transport() || e.is_authentication() {
        ErrorKind::Unavailable
    } else if e.is_exhausted() {
        // The retry policy's time limit ran out on transient errors.
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    };
    DependencyError::new(kind, e.to_string())
}

fn classify_publish(e: &PublishError) -> DependencyError {
    match e {
        PublishError::Rpc(inner) => classify(inner),
        PublishError::Shutdown => {
            DependencyError::new(ErrorKind::Unavailable, "the publisher has shut down")
        }
        other => DependencyError::new(ErrorKind::Internal, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::{Code, Status};

    fn status(code: Code) -> google_cloud_pubsub::Error {
        google_cloud_pubsub::Error::service(Status::default().set_code(code).set_message("x"))
    }

    #[test]
    fn transient_status_codes_are_unavailable_and_bad_input_is_invalid() {
        assert_eq!(
            classify(&status(Code::Unavailable)).kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify(&status(Code::NotFound)).kind,
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify(&status(Code::DeadlineExceeded)).kind,
            ErrorKind::Timeout
        );
        assert_eq!(
            classify(&status(Code::ResourceExhausted)).kind,
            ErrorKind::ResourceExhausted
        );
        assert_eq!(
            classify(&status(Code::InvalidArgument)).kind,
            ErrorKind::Invalid
        );
    }

    #[test]
    fn a_publisher_that_shut_down_is_unavailable() {
        assert_eq!(
            classify_publish(&PublishError::Shutdown).kind,
            ErrorKind::Unavailable
        );
        let rpc = PublishError::Rpc(Arc::new(status(Code::Unavailable)));
        assert_eq!(classify_publish(&rpc).kind, ErrorKind::Unavailable);
    }
}
