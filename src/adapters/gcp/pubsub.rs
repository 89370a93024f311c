//! Pub/Sub over the official `google-cloud-pubsub` crate: the publisher behind `ingestData`.
//! The subscription that feeds the worker pipeline is in `pull.rs`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use google_cloud_gax::retry_policy::{NeverRetry, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;

use super::idempotency::{KeyTable, Seen};
use super::{deadline, CHECK_TIMEOUT, MESSAGING_SYSTEM};
use crate::ports::{DependencyError, ErrorKind, Idempotency, OutgoingMessage, Published};
use crate::telemetry::metrics::{MessagingMetrics, MessagingOp};

/// Messages the publisher sends in one RPC: a whole ingest batch (at most 500 records) goes
/// out at once.
const BATCH_MESSAGES: u32 = 500;
/// Bytes per publish RPC: an ingest body is at most 1 MiB, so a whole request fits (Pub/Sub
/// takes up to 10 MB per request).
const BATCH_BYTES: u32 = 2 * 1024 * 1024;
/// How long the publisher waits to fill a batch. Latency first: a request's messages are all
/// handed over at once, so there is little to gain from waiting for other requests.
const BATCH_DELAY: Duration = Duration::from_millis(2);
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
    metrics: MessagingMetrics,
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
            metrics: MessagingMetrics::register(MESSAGING_SYSTEM),
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
        self.metrics
            .op(MessagingOp::Publish, kind, started.elapsed());
        self.metrics.sent(kind, n);
        result
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
    use std::sync::Arc;

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
