//! The embedded broker: a durable topic with one subscription, in `broker.db`.
//!
//! One thread owns the database and serves every command (publish, pull, ack, nack) from a
//! channel. It takes whatever commands are waiting, applies them in one transaction and
//! commits once, so concurrent publishes share a disk flush (group commit) and a publish is
//! answered only after the commit that holds it is on disk.
//!
//! Delivery follows Pub/Sub: a pulled message is leased for the ack deadline and counts a
//! delivery attempt; an ack deletes it; a nack schedules a redelivery with exponential backoff,
//! or, once the message has used its maximum delivery attempts, moves it to `dead_letters`
//! with its payload, attempts and last error. After a restart every unacknowledged message is
//! delivered again: leases do not outlive the process that took them.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

use super::sqlite;
use crate::ports::{
    AckHandle, Attributes, Delivery, DependencyError, ErrorKind, Idempotency, OutgoingMessage,
    Published, Publisher, ReceivedMessage, Subscription,
};
use crate::telemetry::metrics;

/// How the broker is set up.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The database file.
    pub path: PathBuf,
    /// Deliveries before a message is dead-lettered.
    pub max_delivery_attempts: u32,
    /// How long a pulled message stays leased before it is delivered again.
    pub ack_deadline: Duration,
    /// The subscription's name, written into every row.
    pub subscription: String,
}

/// First redelivery delay; doubles with every attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest redelivery delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Most commands applied in one commit.
const MAX_GROUP: usize = 4096;
/// How long readiness reports a failed commit when nothing has succeeded since.
const UNHEALTHY_FOR: Duration = Duration::from_secs(5);

type Reply<T> = oneshot::Sender<Result<T, DependencyError>>;
/// A publish request's reply and what it will be told once the group commits.
type PublishOutcome = (Reply<Vec<String>>, Result<Vec<String>, DependencyError>);

enum Command {
    Publish {
        messages: Vec<OutgoingMessage>,
        reply: Reply<Vec<String>>,
    },
    Pull {
        max: usize,
        reply: Reply<Vec<ReceivedMessage>>,
    },
    Ack {
        seq: i64,
    },
    Nack {
        seq: i64,
        error: String,
    },
    Check {
        reply: Reply<()>,
    },
}

/// Handle to the broker thread; cheap to clone.
#[derive(Clone)]
pub struct LocalBroker {
    tx: mpsc::Sender<Command>,
    published: Arc<Notify>,
    subscription: Arc<str>,
}

impl LocalBroker {
    /// Opens the database, voids the leases of a previous process and starts the thread.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Self> {
        let conn = sqlite::open(&config.path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", config.path.display()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 publish_time INTEGER NOT NULL,
                 data BLOB NOT NULL,
                 attributes TEXT NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 deliver_after INTEGER NOT NULL DEFAULT 0,
                 last_error TEXT
             );
             CREATE INDEX IF NOT EXISTS messages_due ON messages (deliver_after, seq);
             CREATE TABLE IF NOT EXISTS dead_letters (
                 message_id TEXT PRIMARY KEY,
                 publish_time INTEGER NOT NULL,
                 data BLOB NOT NULL,
                 attributes TEXT NOT NULL,
                 delivery_attempts INTEGER NOT NULL,
                 last_error TEXT,
                 dead_lettered_at INTEGER NOT NULL
             );
             UPDATE messages SET deliver_after = 0;",
        )?;
        let backlog: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
        metrics::backlog(backlog as u64);
        // Export the counter from the start, so "no dead letters" reads 0, not absent.
        metrics::dead_lettered(0);

        let (tx, rx) = mpsc::channel();
        let published = Arc::new(Notify::new());
        let actor = Actor {
            conn,
            config: config.clone(),
            published: published.clone(),
            backlog: backlog as u64,
            failing_since: None,
        };
        std::thread::Builder::new()
            .name("local-broker".into())
            .spawn(move || actor.run(rx))?;
        Ok(Self {
            tx,
            published,
            subscription: config.subscription.into(),
        })
    }

    /// The publishing side.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.clone())
    }

    /// The subscription side.
    pub fn subscription(&self) -> Arc<dyn Subscription> {
        Arc::new(self.clone())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DependencyError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| DependencyError::new(ErrorKind::Unavailable, "broker thread stopped"))?;
        rx.await.map_err(|_| {
            DependencyError::new(ErrorKind::Internal, "broker thread dropped a reply")
        })?
    }
}

#[async_trait]
impl Publisher for LocalBroker {
    /// Keys are not kept yet: every request is published.
    async fn publish(
        &self,
        messages: Vec<OutgoingMessage>,
        _idempotency: Option<&Idempotency>,
    ) -> Result<Published, DependencyError> {
        let n = messages.len() as u64;
        let started = Instant::now();
        let result = self
            .call(|reply| Command::Publish { messages, reply })
            .await;
        let error = result.as_ref().err().map(|e| e.kind);
        metrics::messaging_op(
            metrics::MESSAGING_LOCAL,
            metrics::MessagingOp::Publish,
            error,
            started.elapsed(),
        );
        metrics::messages_sent(metrics::MESSAGING_LOCAL, error, n);
        result.map(Published::New)
    }

    async fn check(&self) -> Result<(), DependencyError> {
        self.call(|reply| Command::Check { reply }).await
    }

    async fn flush(&self) {
        // Nothing is buffered: every publish returned only after its commit.
    }
}

#[async_trait]
impl Subscription for LocalBroker {
    fn name(&self) -> &str {
        &self.subscription
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, DependencyError> {
        let mut waited = false;
        loop {
            let started = Instant::now();
            let result = self.call(|reply| Command::Pull { max, reply }).await;
            let error = result.as_ref().err().map(|e| e.kind);
            metrics::messaging_op(
                metrics::MESSAGING_LOCAL,
                metrics::MessagingOp::Receive,
                error,
                started.elapsed(),
            );
            let messages = result?;
            if !messages.is_empty() || waited {
                return Ok(messages
                    .into_iter()
                    .map(|m| {
                        let seq = m.message_id.parse().unwrap_or_default();
                        Delivery {
                            message: m,
                            ack: Box::new(LocalAck {
                                tx: self.tx.clone(),
                                seq,
                            }),
                        }
                    })
                    .collect());
            }
            // Wake on the next publish (a permit is kept if it already happened), or soon
            // enough to pick up redeliveries whose backoff has passed.
            let _ =
                tokio::time::timeout(Duration::from_millis(100), self.published.notified()).await;
            waited = true;
        }
    }
}

struct LocalAck {
    tx: mpsc::Sender<Command>,
    seq: i64,
}

#[async_trait]
impl AckHandle for LocalAck {
    async fn ack(self: Box<Self>) {
        let started = Instant::now();
        // A lost ack only means a redelivery, which the store absorbs by message id.
        let sent = self.tx.send(Command::Ack { seq: self.seq }).is_ok();
        let error = (!sent).then_some(ErrorKind::Unavailable);
        metrics::messaging_op(
            metrics::MESSAGING_LOCAL,
            metrics::MessagingOp::Ack,
            error,
            started.elapsed(),
        );
    }

    async fn nack(self: Box<Self>, error: String) {
        let _ = self.tx.send(Command::Nack {
            seq: self.seq,
            error,
        });
    }
}

struct Actor {
    conn: Connection,
    config: BrokerConfig,
    published: Arc<Notify>,
    backlog: u64,
    failing_since: Option<Instant>,
}

/// What one group of commands produced, answered only after the commit.
#[derive(Default)]
struct Outcome {
    publishes: Vec<PublishOutcome>,
    pulls: Vec<(Reply<Vec<ReceivedMessage>>, Vec<ReceivedMessage>)>,
    checks: Vec<Reply<()>>,
    inserted: u64,
    removed: u64,
    dead_lettered: u64,
    redeliveries: bool,
}

impl Actor {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut commands = vec![first];
            while commands.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            self.apply(commands);
        }
    }

    fn apply(&mut self, commands: Vec<Command>) {
        let now = now_us();
        let mut out = Outcome::default();
        let result = (|| -> rusqlite::Result<()> {
            let mut tx = self.conn.transaction()?;
            for command in commands {
                match command {
                    Command::Publish { messages, reply } => {
                        let result = publish(&mut tx, &messages, now);
                        if let Ok(ids) = &result {
                            out.inserted += ids.len() as u64;
                        }
                        out.publishes.push((reply, result.map_err(sqlite::error)));
                    }
                    Command::Pull { max, reply } => {
                        let messages = pull(&tx, max, now, self.config.ack_deadline)?;
                        out.pulls.push((reply, messages));
                    }
                    Command::Ack { seq } => {
                        out.removed +=
                            tx.execute("DELETE FROM messages WHERE seq = ?1", [seq])? as u64;
                    }
                    Command::Nack { seq, error } => {
                        match nack(&tx, seq, &error, now, self.config.max_delivery_attempts)? {
                            NackOutcome::DeadLettered => {
                                out.removed += 1;
                                out.dead_lettered += 1;
                            }
                            NackOutcome::Redeliver => out.redeliveries = true,
                            NackOutcome::Gone => {}
                        }
                    }
                    Command::Check { reply } => out.checks.push(reply),
                }
            }
            tx.commit()
        })();

        match result {
            Ok(()) => {
                if out.inserted > 0 {
                    self.failing_since = None;
                }
                self.backlog = (self.backlog + out.inserted).saturating_sub(out.removed);
                metrics::backlog(self.backlog);
                if out.dead_lettered > 0 {
                    metrics::dead_lettered(out.dead_lettered);
                }
                let failed_publish = out.publishes.iter().any(|(_, r)| r.is_err());
                if failed_publish {
                    self.failing_since.get_or_insert_with(Instant::now);
                }
                for (reply, result) in out.publishes {
                    let _ = reply.send(result);
                }
                for (reply, messages) in out.pulls {
                    let _ = reply.send(Ok(messages));
                }
                let health = match self.failing_since {
                    Some(t) if t.elapsed() < UNHEALTHY_FOR || failed_publish => {
                        Err(DependencyError::new(
                            ErrorKind::Unavailable,
                            "recent commits to broker.db failed",
                        ))
                    }
                    _ => Ok(()),
                };
                for reply in out.checks {
                    let _ = reply.send(health.clone());
                }
                if out.inserted > 0 || out.redeliveries {
                    self.published.notify_one();
                }
            }
            Err(e) => {
                // Nothing of this group is durable: fail every publish in it. Acks and nacks
                // are lost, which only means those messages are delivered again.
                let _ = self.conn.execute_batch("ROLLBACK");
                self.failing_since.get_or_insert_with(Instant::now);
                let error = sqlite::error(e);
                tracing::warn!(error = %error, "broker commit failed");
                for (reply, _) in out.publishes {
                    let _ = reply.send(Err(error.clone()));
                }
                for (reply, _) in out.pulls {
                    let _ = reply.send(Err(error.clone()));
                }
                for reply in out.checks {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Inserts one request's messages inside a savepoint, so a request that fails (a full disk)
/// leaves nothing behind while the rest of the group still commits.
fn publish(
    tx: &mut rusqlite::Transaction<'_>,
    messages: &[OutgoingMessage],
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    let sp = tx.savepoint()?;
    let mut ids = Vec::with_capacity(messages.len());
    {
        let mut insert = sp.prepare_cached(
            "INSERT INTO messages (publish_time, data, attributes) VALUES (?1, ?2, ?3)",
        )?;
        for m in messages {
            let attributes = serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".into());
            insert.execute(params![now, m.data.as_ref(), attributes])?;
            ids.push(sp.last_insert_rowid().to_string());
        }
    }
    sp.commit()?;
    Ok(ids)
}

fn pull(
    tx: &rusqlite::Transaction<'_>,
    max: usize,
    now: i64,
    deadline: Duration,
) -> rusqlite::Result<Vec<ReceivedMessage>> {
    let mut select = tx.prepare_cached(
        "SELECT seq, publish_time, data, attributes, attempts FROM messages
         WHERE deliver_after <= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let messages = select
        .query_map(params![now, max as i64], |r| {
            let attributes: String = r.get(3)?;
            Ok(ReceivedMessage {
                message_id: r.get::<_, i64>(0)?.to_string(),
                publish_time_us: r.get(1)?,
                data: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                attributes: serde_json::from_str::<Attributes>(&attributes).unwrap_or_default(),
                delivery_attempt: r.get::<_, u32>(4)? + 1,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut lease = tx.prepare_cached(
        "UPDATE messages SET attempts = attempts + 1, deliver_after = ?2 WHERE seq = ?1",
    )?;
    let until = now + deadline.as_micros() as i64;
    for m in &messages {
        lease.execute(params![
            m.message_id.parse::<i64>().unwrap_or_default(),
            until
        ])?;
    }
    Ok(messages)
}

enum NackOutcome {
    Redeliver,
    DeadLettered,
    Gone,
}

fn nack(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    error: &str,
    now: i64,
    max_attempts: u32,
) -> rusqlite::Result<NackOutcome> {
    let attempts: Option<u32> = tx
        .query_row("SELECT attempts FROM messages WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(attempts) = attempts else {
        return Ok(NackOutcome::Gone);
    };
    if attempts >= max_attempts {
        tx.execute(
            "INSERT OR REPLACE INTO dead_letters
                 (message_id, publish_time, data, attributes, delivery_attempts, last_error, dead_lettered_at)
             SELECT CAST(seq AS TEXT), publish_time, data, attributes, attempts, ?2, ?3
             FROM messages WHERE seq = ?1",
            params![seq, error, now],
        )?;
        tx.execute("DELETE FROM messages WHERE seq = ?1", [seq])?;
        tracing::warn!(message_id = seq, attempts, error, "message dead-lettered");
        return Ok(NackOutcome::DeadLettered);
    }
    let backoff = MIN_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    tx.execute(
        "UPDATE messages SET deliver_after = ?2, last_error = ?3 WHERE seq = ?1",
        params![seq, now + backoff.as_micros() as i64, error],
    )?;
    Ok(NackOutcome::Redeliver)
}

/// Microseconds since the Unix epoch (BigQuery's TIMESTAMP precision).
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
