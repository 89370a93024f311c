//! The worker's subscription: Pub/Sub's unary `Pull` (REST), with the leases kept by this
//! process, instead of a `StreamingPull`.
//!
//! Why not the streaming pull (docs/gcp.md, "Subscriber", has the evidence): on Google's Pub/Sub
//! emulator, the only place this worker runs in tests and drills, a streaming pull whose
//! client dies (SIGKILL, or a cancelled stream) is never closed by the emulator, and keeps
//! taking its share of the subscription's messages for as long as the emulator runs; those
//! expire unacknowledged, spend delivery attempts and end in the dead-letter topic, or stall
//! for good once the emulator's backoff redelivery has broken. The emulator also ignores a
//! streaming pull's flow control and pushes the whole backlog. A unary `Pull` leaves nothing
//! behind when the process dies (each call is answered at once and ends), and its
//! `maxMessages` is flow control both Pub/Sub and the emulator honour: the worker asks only
//! for what its pipeline is ready to take.
//!
//! Leases: every message received is under lease until it is acknowledged or nacked. A task
//! extends all leases every [`EXTEND_EVERY`] by [`ACK_DEADLINE`] (so a killed worker's messages
//! are delivered again at most 10 s later), for at most [`MAX_LEASE`] per message, and sends
//! acknowledgements and nacks in batches as soon as the pipeline settles messages. An
//! acknowledgement is sent only while the lease it settles is still valid: past that, Pub/Sub
//! delivers the message again anyway (and the store deduplicates on `message_id`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::MESSAGING_SYSTEM;
use crate::ports::{
    AckHandle, Delivery, DependencyError, ErrorKind, ReceivedMessage, Subscription,
};
use crate::telemetry::metrics::{MessagingMetrics, MessagingOp, PipelineMetrics};

/// Messages under lease at once in this process: the most one receive asks for, and one
/// pipeline batch, so that a worker does not hoard messages that another could be writing.
const MAX_OUTSTANDING: usize = 500;
/// How long Pub/Sub waits for an acknowledgement before delivering a message again, set on
/// every lease extension. A killed worker's messages are delivered again after at most this
/// long (the streaming client's default, 60 s, would spend the freshness objective on one
/// crash). Pub/Sub's minimum.
const ACK_DEADLINE: Duration = Duration::from_secs(10);
/// How often every lease is extended: three tries within one deadline.
const EXTEND_EVERY: Duration = Duration::from_secs(3);
/// How long a message's lease is extended at most. While the store is down the pipeline holds
/// its batch (no nack, so no delivery attempt is spent) and the leases are extended up to this
/// long; only a store outage longer than this makes Pub/Sub deliver them again.
const MAX_LEASE: Duration = Duration::from_secs(60 * 60);
/// How long `receive` waits after a pull that found nothing, so that an idle worker pulls a
/// few times a second, not in a busy loop.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Deadline of each REST call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Ack ids per `acknowledge`/`modifyAckDeadline` request (Pub/Sub takes requests up to
/// 512 KB; an ack id is a few hundred bytes at most).
const IDS_PER_CALL: usize = 1000;

/// Pub/Sub's REST API, for one subscription.
struct Rest {
    http: reqwest::Client,
    /// `{endpoint}/v1`.
    api: String,
    /// `projects/P/subscriptions/S`.
    subscription: String,
    /// Application Default Credentials; none on the emulator.
    credentials: Option<google_cloud_auth::credentials::Credentials>,
}

impl Rest {
    /// POSTs `body` to the subscription's `:{verb}`.
    async fn call(
        &self,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, DependencyError> {
        let path = format!("{}:{verb}", self.subscription);
        self.send(reqwest::Method::POST, &path, Some(body)).await
    }

    /// `method` on `{api}/{path}`; the answer's JSON (`{}` for an empty body).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, DependencyError> {
        let verb = path.rsplit(['/', ':']).next().unwrap_or(path).to_owned();
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.api))
            .timeout(CALL_TIMEOUT);
        if let Some(body) = &body {
            request = request.json(body);
        }
        if let Some(credentials) = &self.credentials {
            let headers = match credentials.headers(http::Extensions::new()).await {
                Ok(google_cloud_auth::credentials::CacheableResource::New { data, .. }) => data,
                Ok(google_cloud_auth::credentials::CacheableResource::NotModified) => {
                    http::HeaderMap::new()
                }
                Err(e) => {
                    return Err(DependencyError::new(
                        ErrorKind::Unavailable,
                        format!("Pub/Sub credentials: {e}"),
                    ))
                }
            };
            request = request.headers(headers);
        }
        let response = request.send().await.map_err(|e| classify_transport(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| classify_transport(&e))?;
        if !status.is_success() {
            return Err(classify_status(status.as_u16(), &text));
        }
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text).map_err(|e| {
            DependencyError::new(
                ErrorKind::Internal,
                format!("Pub/Sub answered {verb} with an unreadable body: {e}"),
            )
        })
    }
}

fn classify_transport(e: &reqwest::Error) -> DependencyError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    DependencyError::new(kind, format!("Pub/Sub: {e}"))
}

/// The kind of a Pub/Sub REST error answer. A missing subscription or a missing permission is
/// a deployment fault the worker cannot fix: "unavailable, retry later" while an operator does.
fn classify_status(status: u16, body: &str) -> DependencyError {
    let kind = match status {
        429 => ErrorKind::ResourceExhausted,
        400 => ErrorKind::Invalid,
        401 | 403 | 404 | 409 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let detail: String = body.chars().take(300).collect();
    DependencyError::new(kind, format!("Pub/Sub answered HTTP {status}: {detail}"))
}

/// One message under lease.
struct Lease {
    received: Instant,
    /// Until when Pub/Sub keeps it for this worker (conservatively: from when the call that
    /// set it was sent).
    valid_until: Instant,
}

#[derive(Default)]
struct LeaseState {
    held: HashMap<String, Lease>,
    /// Settled, not yet sent: ack id and until when its lease is valid.
    acks: Vec<(String, Instant)>,
    nacks: Vec<String>,
}

/// The leases of this process, shared by `receive`, the ack handles and the lease task.
#[derive(Default)]
struct Leases {
    state: Mutex<LeaseState>,
    /// Wakes the lease task when something was settled.
    settled: Notify,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().expect("not poisoned")
    }

    fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn add(&self, ack_id: String, sent: Instant) {
        self.lock().held.insert(
            ack_id,
            Lease {
                received: sent,
                valid_until: sent + ACK_DEADLINE,
            },
        );
    }

    fn ack(&self, ack_id: String) {
        let mut s = self.lock();
        if let Some(lease) = s.held.remove(&ack_id) {
            s.acks.push((ack_id, lease.valid_until));
        }
        drop(s);
        self.settled.notify_one();
    }

    fn nack(&self, ack_id: String) {
        let mut s = self.lock();
        if s.held.remove(&ack_id).is_some() {
            s.nacks.push(ack_id);
        }
        drop(s);
        self.settled.notify_one();
    }

    /// The ack ids to extend now; leases past [`MAX_LEASE`] are given up (Pub/Sub delivers
    /// those messages again when their deadline passes).
    fn to_extend(&self, now: Instant) -> Vec<String> {
        let mut s = self.lock();
        let before = s.held.len();
        s.held
            .retain(|_, l| now.duration_since(l.received) < MAX_LEASE);
        let expired = before - s.held.len();
        if expired > 0 {
            tracing::warn!(
                messages = expired,
                max_lease_s = MAX_LEASE.as_secs(),
                "leases held longer than the maximum are no longer extended; Pub/Sub will deliver these messages again"
            );
        }
        s.held.keys().cloned().collect()
    }

    fn extended(&self, ack_ids: &[String], sent: Instant) {
        let mut s = self.lock();
        for id in ack_ids {
            if let Some(l) = s.held.get_mut(id) {
                l.valid_until = sent + ACK_DEADLINE;
            }
        }
    }

    fn take_settled(&self) -> (Vec<(String, Instant)>, Vec<String>) {
        let mut s = self.lock();
        (std::mem::take(&mut s.acks), std::mem::take(&mut s.nacks))
    }

    /// Acks whose call failed go back in the queue while their lease is still valid; past it,
    /// Pub/Sub delivers the message again anyway, and an acknowledgement that late is what the
    /// emulator cannot take (docs/gcp.md).
    fn retry_acks(&self, acks: Vec<(String, Instant)>, now: Instant) -> usize {
        let keep: Vec<_> = acks
            .into_iter()
            .filter(|(_, valid)| *valid > now + Duration::from_secs(1))
            .collect();
        let n = keep.len();
        self.lock().acks.extend(keep);
        n
    }
}

/// Extends leases and sends acknowledgements and nacks, until the subscription is dropped.
async fn lease_task(rest: Arc<Rest>, leases: Arc<Leases>) {
    let mut extend = tokio::time::interval(EXTEND_EVERY);
    extend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let extend_now = tokio::select! {
            _ = extend.tick() => true,
            _ = leases.settled.notified() => false,
        };
        // Let the rest of a batch's settlements arrive, so they go out in one call.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (acks, nacks) = leases.take_settled();
        for chunk in acks.chunks(IDS_PER_CALL) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            if let Err(e) = rest.call("acknowledge", json!({ "ackIds": ids })).await {
                let kept = leases.retry_acks(chunk.to_vec(), Instant::now());
                tracing::warn!(error = %e, acks = chunk.len(), retried = kept, "acknowledge failed");
            }
        }
        for chunk in nacks.chunks(IDS_PER_CALL) {
            let body = json!({ "ackIds": chunk, "ackDeadlineSeconds": 0 });
            if let Err(e) = rest.call("modifyAckDeadline", body).await {
                // The lease runs out instead: the same redelivery, at most 10 s later.
                tracing::warn!(error = %e, nacks = chunk.len(), "nack failed; the lease will expire instead");
            }
        }
        if extend_now {
            let ids = leases.to_extend(Instant::now());
            for chunk in ids.chunks(IDS_PER_CALL) {
                let sent = Instant::now();
                let body = json!({
                    "ackIds": chunk,
                    "ackDeadlineSeconds": ACK_DEADLINE.as_secs(),
                });
                match rest.call("modifyAckDeadline", body).await {
                    Ok(_) => leases.extended(chunk, sent),
                    Err(e) => tracing::warn!(
                        error = %e,
                        messages = chunk.len(),
                        "lease extension failed; trying again in 3 s"
                    ),
                }
            }
        }
    }
}

/// A pull subscription on one Pub/Sub subscription, with leases kept by this process.
pub struct PubSubSubscription {
    name: String,
    rest: Arc<Rest>,
    leases: Arc<Leases>,
    max_delivery_attempts: u32,
    /// The subscription's dead-letter topic, where the worker moves a message itself on its
    /// last attempt, with the reason; none when the subscription has no dead-letter policy or
    /// it could not be read (then a last-attempt nack lets Pub/Sub move it, without reason).
    dead_letter_topic: Option<Arc<str>>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// The worker's metrics, registered when the subscription is built and shared with its acks.
struct Metrics {
    messaging: MessagingMetrics,
    pipeline: PipelineMetrics,
}

/// What `GET projects/P/subscriptions/S` says of the dead-letter policy.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubscriptionConfig {
    #[serde(default)]
    dead_letter_policy: Option<DeadLetterPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterPolicy {
    #[serde(default)]
    dead_letter_topic: String,
    #[serde(default)]
    max_delivery_attempts: u32,
}

impl PubSubSubscription {
    /// A subscription client for `subscription` (`projects/P/subscriptions/S`) at `endpoint`
    /// (an emulator's `http://host:port`, anonymous) or Pub/Sub with Application Default
    /// Credentials. The dead-letter policy is read from the subscription
    /// (`pubsub.subscriptions.get`); `max_delivery_attempts` (the setting) is used only when it
    /// cannot be read, to tell a last attempt.
    pub async fn connect(
        subscription: &str,
        endpoint: Option<&str>,
        max_delivery_attempts: u32,
    ) -> anyhow::Result<Self> {
        let credentials = match endpoint {
            Some(_) => None,
            None => Some(google_cloud_auth::credentials::Builder::default().build()?),
        };
        let rest = Arc::new(Rest {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()?,
            api: format!("{}/v1", endpoint.unwrap_or("https://pubsub.googleapis.com")),
            subscription: subscription.to_owned(),
            credentials,
        });
        let (max_delivery_attempts, dead_letter_topic) = match rest
            .send(reqwest::Method::GET, subscription, None)
            .await
        {
            Ok(config) => {
                let config: SubscriptionConfig = serde_json::from_value(config).unwrap_or_default();
                match config.dead_letter_policy {
                    Some(p) if !p.dead_letter_topic.is_empty() => {
                        // Pub/Sub's default when the policy leaves it out.
                        let max = if p.max_delivery_attempts == 0 {
                            5
                        } else {
                            p.max_delivery_attempts
                        };
                        if max != max_delivery_attempts {
                            tracing::warn!(
                                subscription = %subscription,
                                subscription_max_delivery_attempts = max,
                                setting = max_delivery_attempts,
                                "MAX_DELIVERY_ATTEMPTS differs from the subscription's dead-letter policy; using the subscription's"
                            );
                        }
                        (max, Some(Arc::from(p.dead_letter_topic)))
                    }
                    _ => (max_delivery_attempts, None),
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    subscription = %subscription,
                    "cannot read the subscription's dead-letter policy; a last attempt is nacked and Pub/Sub moves it without the reason"
                );
                (max_delivery_attempts, None)
            }
        };
        let metrics = Arc::new(Metrics {
            messaging: MessagingMetrics::register(MESSAGING_SYSTEM),
            pipeline: PipelineMetrics::register(),
        });
        // Export the counter from the start, so "no dead letters" reads 0, not absent.
        metrics.pipeline.dead_lettered(0);
        let leases = Arc::new(Leases::default());
        let task = tokio::spawn(lease_task(rest.clone(), leases.clone()));
        Ok(Self {
            name: subscription.to_owned(),
            rest,
            leases,
            max_delivery_attempts,
            dead_letter_topic,
            task,
            metrics,
        })
    }

    /// One `Pull` of at most `max` messages, answered at once; each message received is put
    /// under lease.
    async fn pull(&self, max: usize) -> Result<Vec<Delivery>, DependencyError> {
        let sent = Instant::now();
        let answer = self
            .rest
            .call(
                "pull",
                // returnImmediately: a pull left waiting on the server outlives a worker that
                // is killed, and on the emulator it then takes messages for nobody.
                json!({ "maxMessages": max, "returnImmediately": true }),
            )
            .await?;
        let answer: PullResponse = serde_json::from_value(answer).map_err(|e| {
            DependencyError::new(ErrorKind::Internal, format!("unreadable pull answer: {e}"))
        })?;
        let mut out = Vec::with_capacity(answer.received_messages.len());
        for m in answer.received_messages {
            self.leases.add(m.ack_id.clone(), sent);
            out.push(self.delivery(m));
        }
        Ok(out)
    }

    fn delivery(&self, m: Received) -> Delivery {
        // Pub/Sub counts attempts only on a subscription with a dead-letter policy.
        let dead_letter_policy = m.delivery_attempt > 0;
        let attempt = m.delivery_attempt.max(1);
        let data = base64::engine::general_purpose::STANDARD
            .decode(m.message.data.as_bytes())
            .unwrap_or_else(|_| m.message.data.clone().into_bytes());
        let publish_time_us = m
            .message
            .publish_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
            .unwrap_or_default();
        let last_attempt = dead_letter_policy && attempt >= self.max_delivery_attempts;
        let dead_letter = match (&self.dead_letter_topic, last_attempt) {
            (Some(topic), true) => Some(DeadLetter {
                rest: self.rest.clone(),
                topic: topic.clone(),
                data: m.message.data.clone(),
                attributes: m.message.attributes.clone(),
            }),
            _ => None,
        };
        Delivery {
            message: ReceivedMessage {
                message_id: m.message.message_id.clone(),
                publish_time_us,
                data: Bytes::from(data),
                attributes: m.message.attributes,
                delivery_attempt: attempt,
            },
            ack: Box::new(PubSubAck {
                ack_id: m.ack_id,
                message_id: m.message.message_id,
                attempt,
                leases: self.leases.clone(),
                last_attempt,
                dead_letter,
                metrics: self.metrics.clone(),
            }),
        }
    }
}

impl Drop for PubSubSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullResponse {
    #[serde(default)]
    received_messages: Vec<Received>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Received {
    ack_id: String,
    message: PubsubMessage,
    #[serde(default)]
    delivery_attempt: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PubsubMessage {
    #[serde(default)]
    data: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    message_id: String,
    #[serde(default)]
    publish_time: Option<String>,
}

#[async_trait]
impl Subscription for PubSubSubscription {
    fn name(&self) -> &str {
        &self.name
    }

    /// Pulls until `max` messages (at most [`MAX_OUTSTANDING`] under lease in all) are here or
    /// Pub/Sub has no more; when it had none, waits [`IDLE_WAIT`] before answering with none.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, DependencyError> {
        let started = Instant::now();
        let want = max.min(MAX_OUTSTANDING.saturating_sub(self.leases.held()));
        let mut out = Vec::new();
        while out.len() < want {
            match self.pull(want - out.len()).await {
                Ok(got) if got.is_empty() => break,
                Ok(got) => out.extend(got),
                Err(e) if out.is_empty() => {
                    self.metrics.messaging.op(
                        MessagingOp::Receive,
                        Some(e.kind),
                        started.elapsed(),
                    );
                    return Err(e);
                }
                // Hand over what is here; the next receive meets the error again.
                Err(_) => break,
            }
        }
        if out.is_empty() {
            tokio::time::sleep(IDLE_WAIT).await;
            return Ok(out);
        }
        self.metrics
            .messaging
            .op(MessagingOp::Receive, None, started.elapsed());
        Ok(out)
    }
}

/// Settles one delivery through the lease task (at-least-once: a lost ack is a redelivery,
/// which `insertId` and the query's deduplication absorb).
struct PubSubAck {
    ack_id: String,
    message_id: String,
    attempt: u32,
    leases: Arc<Leases>,
    /// This was the subscription's last attempt: a nack sends it to the dead-letter topic.
    last_attempt: bool,
    /// On the last attempt, what the worker needs to move the message itself.
    dead_letter: Option<DeadLetter>,
    metrics: Arc<Metrics>,
}

/// A copy of a message on its last attempt, for the dead-letter topic.
struct DeadLetter {
    rest: Arc<Rest>,
    topic: Arc<str>,
    /// As received: base64.
    data: String,
    attributes: BTreeMap<String, String>,
}

/// Pub/Sub takes attribute values up to 1024 bytes.
const MAX_ATTRIBUTE_BYTES: usize = 1024;

impl DeadLetter {
    /// Publishes the message to the dead-letter topic as it was published, plus what a row in
    /// the dead-letter table needs to say why: `dead_letter_reason` (the store's or the
    /// decoder's error), the source message id, subscription and attempt (the last two also
    /// under Pub/Sub's own names, as its forwarding writes them).
    async fn publish(
        &self,
        reason: &str,
        message_id: &str,
        attempt: u32,
    ) -> Result<(), DependencyError> {
        let mut attributes = self.attributes.clone();
        let mut reason = reason.to_owned();
        while reason.len() > MAX_ATTRIBUTE_BYTES {
            reason.pop();
        }
        attributes.insert("dead_letter_reason".into(), reason);
        attributes.insert("dead_letter_source_message_id".into(), message_id.into());
        attributes.insert(
            "CloudPubSubDeadLetterSourceSubscription".into(),
            self.rest.subscription.clone(),
        );
        attributes.insert(
            "CloudPubSubDeadLetterSourceDeliveryCount".into(),
            attempt.to_string(),
        );
        let body = json!({ "messages": [{ "data": self.data, "attributes": attributes }] });
        self.rest
            .send(
                reqwest::Method::POST,
                &format!("{}:publish", self.topic),
                Some(body),
            )
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl AckHandle for PubSubAck {
    async fn ack(self: Box<Self>) {
        let started = Instant::now();
        self.leases.ack(self.ack_id);
        self.metrics
            .messaging
            .op(MessagingOp::Ack, None, started.elapsed());
    }

    /// Only for messages the pipeline could not store for a reason of their own (the store
    /// rejected the row, the payload is not a record) or that it hands back at shutdown: a
    /// store outage holds messages instead. Pub/Sub redelivers after the subscription's retry
    /// policy backoff and dead-letters after its maximum attempts.
    async fn nack(self: Box<Self>, error: String) {
        let started = Instant::now();
        if let Some(dead_letter) = &self.dead_letter {
            // Moved by the worker, so that the reason reaches the dead-letter row; then the
            // original is acknowledged (Pub/Sub would otherwise move it a second time).
            match dead_letter
                .publish(&error, &self.message_id, self.attempt)
                .await
            {
                Ok(()) => {
                    tracing::warn!(
                        error = %error,
                        message_id = %self.message_id,
                        delivery_attempt = self.attempt,
                        dead_letter_topic = %dead_letter.topic,
                        "last delivery attempt failed; moved to the dead-letter topic with the reason"
                    );
                    self.metrics.pipeline.dead_lettered(1);
                    self.leases.ack(self.ack_id);
                    self.metrics
                        .messaging
                        .op(MessagingOp::Ack, None, started.elapsed());
                    return;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    message_id = %self.message_id,
                    "publishing to the dead-letter topic failed; nacking, so Pub/Sub moves the message without the reason"
                ),
            }
        }
        if self.last_attempt {
            tracing::warn!(
                error = %error,
                message_id = %self.message_id,
                delivery_attempt = self.attempt,
                "last delivery attempt failed; Pub/Sub moves the message to the dead-letter topic"
            );
            self.metrics.pipeline.dead_lettered(1);
        }
        self.leases.nack(self.ack_id);
        self.metrics
            .messaging
            .op(MessagingOp::Ack, None, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_answer_becomes_messages_with_their_metadata() {
        let answer: PullResponse = serde_json::from_str(
            r#"{"receivedMessages":[{"ackId":"a1","deliveryAttempt":5,
                "message":{"data":"eyJ4IjoxfQ==","attributes":{"traceparent":"t"},
                "messageId":"42","publishTime":"2026-11-28T02:16:46.688761Z"}},
               {"ackId":"a2","message":{"messageId":"43"}}]}"#,
        )
        .unwrap();
        assert_eq!(answer.received_messages.len(), 2);
        let first = &answer.received_messages[0];
        assert_eq!(first.ack_id, "a1");
        assert_eq!(first.delivery_attempt, 5);
        assert_eq!(first.message.message_id, "42");
        assert_eq!(first.message.attributes["traceparent"], "t");
        // No dead-letter policy: no attempt count, no data.
        assert_eq!(answer.received_messages[1].delivery_attempt, 0);
        assert_eq!(answer.received_messages[1].message.data, "");
        let empty: PullResponse = serde_json::from_str("{}").unwrap();
        assert!(empty.received_messages.is_empty());
    }

    #[tokio::test]
    async fn deliveries_decode_data_and_publish_time_and_know_their_last_attempt() {
        let sub = PubSubSubscription::connect(
            "projects/p/subscriptions/s",
            Some("http://127.0.0.1:9"),
            5,
        )
        .await
        .unwrap();
        let answer: PullResponse = serde_json::from_str(
            r#"{"receivedMessages":[{"ackId":"a1","deliveryAttempt":5,
                "message":{"data":"eyJ4IjoxfQ==","messageId":"42",
                "publishTime":"2026-11-28T02:16:46.688761Z"}}]}"#,
        )
        .unwrap();
        let m = answer.received_messages.into_iter().next().unwrap();
        // The subscription could not be read (nothing listens): the setting decides the last
        // attempt, and there is no dead-letter topic to move the message to.
        assert!(sub.dead_letter_topic.is_none());
        let d = sub.delivery(m);
        assert_eq!(&d.message.data[..], br#"{"x":1}"#);
        assert_eq!(d.message.publish_time_us % 1_000_000, 688_761);
        assert_eq!(d.message.delivery_attempt, 5);
    }

    #[test]
    fn rest_errors_map_to_the_dependency_error_kinds() {
        assert_eq!(classify_status(503, "").kind, ErrorKind::Unavailable);
        assert_eq!(classify_status(404, "").kind, ErrorKind::Unavailable);
        assert_eq!(classify_status(403, "").kind, ErrorKind::Unavailable);
        assert_eq!(classify_status(429, "").kind, ErrorKind::ResourceExhausted);
        assert_eq!(classify_status(400, "").kind, ErrorKind::Invalid);
    }

    #[test]
    fn settled_messages_leave_the_lease_and_failed_acks_are_retried_only_while_valid() {
        let leases = Leases::default();
        let now = Instant::now();
        leases.add("a".into(), now);
        leases.add("b".into(), now);
        leases.add("c".into(), now);
        assert_eq!(leases.held(), 3);
        leases.ack("a".into());
        leases.nack("b".into());
        // Settling twice, or something never leased, changes nothing.
        leases.ack("a".into());
        leases.nack("zz".into());
        assert_eq!(leases.held(), 1);
        assert_eq!(leases.to_extend(now), ["c"]);
        let (acks, nacks) = leases.take_settled();
        assert_eq!(acks.len(), 1);
        assert_eq!(nacks, ["b"]);
        // The ack call failed: retried while the lease is valid, dropped once it is not.
        assert_eq!(leases.retry_acks(acks.clone(), now), 1);
        leases.take_settled();
        assert_eq!(leases.retry_acks(acks, now + ACK_DEADLINE), 0);
        // A lease held past the maximum is given up.
        assert!(leases.to_extend(now + MAX_LEASE).is_empty());
        assert_eq!(leases.held(), 0);
    }
}
