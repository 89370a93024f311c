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
//!
//! Idempotency keys live here too, in `idempotency_keys`: a keyed publish is looked up and
//! stored in the same savepoint as its messages, on the broker thread, so the key and the
//! messages commit together or not at all, and two requests with one key in one group commit
//! are told apart (the second is a replay). Keys older than the window are purged on a
//! schedule, and the table is capped in rows.

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
use crate::telemetry::metrics::{MessagingMetrics, MessagingOp, MessagingSystem, PipelineMetrics};

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
    /// How long an idempotency key is remembered (`IDEMPOTENCY_TTL_SECONDS`).
    pub idempotency_ttl: Duration,
    /// Most idempotency keys kept; past it the oldest are forgotten before their window ends.
    pub max_idempotency_keys: u64,
}

/// The default of [`BrokerConfig::max_idempotency_keys`]: about 100 bytes a key (more with
/// long keys), so some 100 MiB of `broker.db` at most.
pub const MAX_IDEMPOTENCY_KEYS: u64 = 1_000_000;

/// First redelivery delay; doubles with every attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest redelivery delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Most commands applied in one commit.
const MAX_GROUP: usize = 4096;
/// How long readiness reports the last failed commit when nothing has succeeded since. Counted
/// from the *last* failure: counted from the first, a disk that stays full turned readiness
/// back to 200 after 5 s while every publish still failed.
const UNHEALTHY_FOR: Duration = Duration::from_secs(5);
/// How often expired idempotency keys are purged (with the next group after this has passed).
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// Most keys one purge deletes, so that no commit grows long; a full batch purges again with
/// the next group.
const PURGE_BATCH: u64 = 10_000;

type Reply<T> = oneshot::Sender<Result<T, DependencyError>>;
/// A publish request's reply and what it will be told once the group commits.
type PublishOutcome = (Reply<Published>, Result<Published, DependencyError>);

enum Command {
    Publish {
        messages: Vec<OutgoingMessage>,
        idempotency: Option<Idempotency>,
        reply: Reply<Published>,
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
    metrics: Arc<MessagingMetrics>,
}

impl LocalBroker {
    /// Opens the database, voids the leases of a previous process and starts the thread.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Self> {
        let published = Arc::new(Notify::new());
        let actor = Actor::open(config.clone(), published.clone())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("local-broker".into())
            .spawn(move || actor.run(rx))?;
        Ok(Self {
            tx,
            published,
            subscription: config.subscription.into(),
            metrics: Arc::new(MessagingMetrics::register(MessagingSystem::Local)),
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
    async fn publish(
        &self,
        messages: Vec<OutgoingMessage>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Published, DependencyError> {
        let n = messages.len() as u64;
        let started = Instant::now();
        let idempotency = idempotency.cloned();
        let result = self
            .call(|reply| Command::Publish {
                messages,
                idempotency,
                reply,
            })
            .await;
        let error = result.as_ref().err().map(|e| e.kind);
        self.metrics
            .op(MessagingOp::Publish, error, started.elapsed());
        // A replay or a refused key sent nothing.
        if matches!(result, Ok(Published::New(_)) | Err(_)) {
            self.metrics.sent(error, n);
        }
        result
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
            self.metrics
                .op(MessagingOp::Receive, error, started.elapsed());
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
                                metrics: self.metrics.clone(),
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
    metrics: Arc<MessagingMetrics>,
}

#[async_trait]
impl AckHandle for LocalAck {
    async fn ack(self: Box<Self>) {
        let started = Instant::now();
        // A lost ack only means a redelivery, which the store absorbs by message id.
        let sent = self.tx.send(Command::Ack { seq: self.seq }).is_ok();
        let error = (!sent).then_some(ErrorKind::Unavailable);
        self.metrics.op(MessagingOp::Ack, error, started.elapsed());
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
    metrics: PipelineMetrics,
    /// When a publish last failed, until one succeeds.
    last_failure: Option<Instant>,
    /// Rows in `idempotency_keys`, as of the last commit.
    keys: u64,
    /// When expired keys are purged next.
    next_purge: Instant,
    /// When the key cap last forgot keys before their window (warned at most once a minute).
    capped_warned: Option<Instant>,
    /// Whether the connection is at `synchronous = FULL` (every commit flushed to disk) or
    /// `NORMAL` (no flush; durable across a process crash, not a power loss).
    flushing: bool,
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
    /// Idempotency keys added minus keys purged, applied to the count after the commit.
    keys_added: u64,
    keys_purged: u64,
    /// Keys forgotten before their window ended because of the cap.
    keys_capped: u64,
}

impl Actor {
    /// Opens the database, creating its tables, and voids the leases of a previous process.
    fn open(config: BrokerConfig, published: Arc<Notify>) -> anyhow::Result<Self> {
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
             -- A request's ids are consecutive (one writer, one savepoint, AUTOINCREMENT), so
             -- the first and the count stand for all of them.
             CREATE TABLE IF NOT EXISTS idempotency_keys (
                 scope TEXT NOT NULL,
                 key TEXT NOT NULL,
                 fingerprint BLOB NOT NULL,
                 first_message_id INTEGER NOT NULL,
                 message_count INTEGER NOT NULL,
                 created_at INTEGER NOT NULL,
                 UNIQUE (scope, key)
             );
             CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
             UPDATE messages SET deliver_after = 0;",
        )?;
        let backlog: i64 = conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?;
        let keys: i64 =
            conn.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))?;
        let metrics = PipelineMetrics::register();
        metrics.backlog(backlog as u64);
        // Export the counter from the start, so "no dead letters" reads 0, not absent.
        metrics.dead_lettered(0);

        Ok(Actor {
            conn,
            metrics,
            config,
            published,
            backlog: backlog as u64,
            last_failure: None,
            keys: keys as u64,
            next_purge: Instant::now(),
            capped_warned: None,
            flushing: true,
        })
    }

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
        let ttl_us = self.config.idempotency_ttl.as_micros() as i64;
        let purge = Instant::now() >= self.next_purge;
        // Only a publish is answered as durable, so only a group that holds one waits for a disk
        // flush. Leases, acks, nacks and purges commit without one (`synchronous = NORMAL`: in
        // WAL mode still atomic and durable across a process crash; a power loss may roll them
        // back, which only means a redelivery the store absorbs by message id), and the next
        // flushed commit makes them durable too, the WAL being one sequential file. Flushing
        // every group made each message cost three flushes on this one thread: with 30 ms
        // flushes (a slow cloud disk) the k6 smoke's 10 ingests a second queued behind the
        // worker's leases and acks and their p99 went from 4 ms to over 1 s.
        let flush = commands
            .iter()
            .any(|c| matches!(c, Command::Publish { .. }));
        let mut out = Outcome::default();
        let result = (|| -> rusqlite::Result<()> {
            if flush != self.flushing {
                let level = if flush { "FULL" } else { "NORMAL" };
                self.conn.pragma_update(None, "synchronous", level)?;
                self.flushing = flush;
            }
            let mut tx = self.conn.transaction()?;
            for command in commands {
                match command {
                    Command::Publish {
                        messages,
                        idempotency,
                        reply,
                    } => {
                        let result = publish(&mut tx, &messages, idempotency.as_ref(), now, ttl_us);
                        if let Ok((published, new_key)) = &result {
                            if let Published::New(ids) = published {
                                out.inserted += ids.len() as u64;
                            }
                            out.keys_added += u64::from(*new_key);
                        }
                        let result = result.map(|(p, _)| p).map_err(sqlite::error);
                        out.publishes.push((reply, result));
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
            if purge {
                let over_cap =
                    (self.keys + out.keys_added).saturating_sub(self.config.max_idempotency_keys);
                // In a savepoint of its own: a purge that fails (a full disk) is tried again
                // later and takes no publish of this group down with it.
                match purge_keys(&mut tx, now - ttl_us, over_cap) {
                    Ok((expired, capped)) => {
                        out.keys_purged = expired + capped;
                        out.keys_capped = capped;
                    }
                    Err(e) => {
                        tracing::warn!(error = %sqlite::error(e), "purging idempotency keys failed")
                    }
                }
            }
            tx.commit()
        })();

        match result {
            Ok(()) => {
                if out.inserted > 0 {
                    self.last_failure = None;
                }
                self.keys = (self.keys + out.keys_added).saturating_sub(out.keys_purged);
                if purge {
                    // A full batch means more may be waiting: purge again with the next group.
                    let more = out.keys_purged >= PURGE_BATCH
                        || self.keys > self.config.max_idempotency_keys;
                    self.next_purge = if more {
                        Instant::now()
                    } else {
                        Instant::now() + PURGE_EVERY
                    };
                }
                if out.keys_capped > 0
                    && self
                        .capped_warned
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.capped_warned = Some(Instant::now());
                    tracing::warn!(
                        forgotten = out.keys_capped,
                        max_keys = self.config.max_idempotency_keys,
                        "idempotency keys forgotten before their window ended: the key table is full"
                    );
                }
                self.backlog = (self.backlog + out.inserted).saturating_sub(out.removed);
                self.metrics.backlog(self.backlog);
                if out.dead_lettered > 0 {
                    self.metrics.dead_lettered(out.dead_lettered);
                }
                let failed_publish = out.publishes.iter().any(|(_, r)| r.is_err());
                if failed_publish {
                    self.last_failure = Some(Instant::now());
                }
                for (reply, result) in out.publishes {
                    let _ = reply.send(result);
                }
                for (reply, messages) in out.pulls {
                    let _ = reply.send(Ok(messages));
                }
                let health = match self.last_failure {
                    Some(t) if t.elapsed() < UNHEALTHY_FOR => Err(DependencyError::new(
                        ErrorKind::Unavailable,
                        "recent commits to broker.db failed",
                    )),
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
                self.last_failure = Some(Instant::now());
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
/// leaves nothing behind while the rest of the group still commits. With an idempotency key,
/// the key is looked up first (a live key answers a replay or a refusal and inserts nothing)
/// and stored with the ids in the same savepoint, so the key and its messages are durable
/// together or not at all. The flag is true when a key row was added.
fn publish(
    tx: &mut rusqlite::Transaction<'_>,
    messages: &[OutgoingMessage],
    idempotency: Option<&Idempotency>,
    now: i64,
    ttl_us: i64,
) -> rusqlite::Result<(Published, bool)> {
    let sp = tx.savepoint()?;
    let mut replaces_expired = false;
    if let Some(idem) = idempotency {
        let found = sp
            .prepare_cached(
                "SELECT fingerprint, first_message_id, message_count, created_at
                 FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
            )?
            .query_row(params![idem.scope, idem.key], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        match found {
            Some((fingerprint, first, count, created_at)) if created_at > now - ttl_us => {
                // Nothing was written: dropping the savepoint rolls back nothing.
                return Ok(if fingerprint == idem.fingerprint {
                    (
                        Published::Replayed(
                            (first..first + count).map(|id| id.to_string()).collect(),
                        ),
                        false,
                    )
                } else {
                    (Published::KeyReused, false)
                });
            }
            // Past its window: the key is free again, and its row is replaced below.
            Some(_) => replaces_expired = true,
            None => {}
        }
    }
    let mut ids = Vec::with_capacity(messages.len());
    {
        let mut insert = sp.prepare_cached(
            "INSERT INTO messages (publish_time, data, attributes) VALUES (?1, ?2, ?3)",
        )?;
        for m in messages {
            let attributes = serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".into());
            insert.execute(params![now, m.data.as_ref(), attributes])?;
            ids.push(sp.last_insert_rowid());
        }
    }
    if let (Some(idem), Some(&first)) = (idempotency, ids.first()) {
        // One writer inserting in one savepoint: AUTOINCREMENT hands out consecutive ids.
        debug_assert!(ids.iter().zip(first..).all(|(id, n)| *id == n));
        sp.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys
                 (scope, key, fingerprint, first_message_id, message_count, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            idem.scope,
            idem.key,
            idem.fingerprint.as_slice(),
            first,
            ids.len() as i64,
            now
        ])?;
    }
    sp.commit()?;
    let new_key = idempotency.is_some() && !replaces_expired;
    Ok((
        Published::New(ids.iter().map(i64::to_string).collect()),
        new_key,
    ))
}

/// Deletes keys created at or before `expired_at` and, when the table is `over_cap` rows over
/// its cap, that many of the oldest, each at most [`PURGE_BATCH`] at a time. Answers how many
/// of each it deleted.
fn purge_keys(
    tx: &mut rusqlite::Transaction<'_>,
    expired_at: i64,
    over_cap: u64,
) -> rusqlite::Result<(u64, u64)> {
    let sp = tx.savepoint()?;
    let expired = sp
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE rowid IN
                 (SELECT rowid FROM idempotency_keys WHERE created_at <= ?1
                  ORDER BY created_at LIMIT ?2)",
        )?
        .execute(params![expired_at, PURGE_BATCH as i64])? as u64;
    let over_cap = over_cap.saturating_sub(expired).min(PURGE_BATCH);
    let capped = if over_cap > 0 {
        sp.prepare_cached(
            "DELETE FROM idempotency_keys WHERE rowid IN
                 (SELECT rowid FROM idempotency_keys ORDER BY created_at, rowid LIMIT ?1)",
        )?
        .execute(params![over_cap as i64])? as u64
    } else {
        0
    };
    sp.commit()?;
    Ok((expired, capped))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(dir: &std::path::Path, ttl: Duration, max_keys: u64) -> Actor {
        Actor::open(
            BrokerConfig {
                path: dir.join("broker.db"),
                max_delivery_attempts: 5,
                ack_deadline: Duration::from_secs(30),
                subscription: "s".into(),
                idempotency_ttl: ttl,
                max_idempotency_keys: max_keys,
            },
            Arc::new(Notify::new()),
        )
        .unwrap()
    }

    fn message(data: &str) -> OutgoingMessage {
        OutgoingMessage {
            data: Bytes::from(data.to_owned()),
            attributes: Attributes::new(),
        }
    }

    fn idem(scope: &str, key: &str, body: &str) -> Idempotency {
        Idempotency::new(scope.into(), key.as_bytes(), body.as_bytes()).unwrap()
    }

    type Answer = oneshot::Receiver<Result<Published, DependencyError>>;

    fn publish_command(n: usize, idempotency: Option<Idempotency>) -> (Command, Answer) {
        let (reply, answer) = oneshot::channel();
        let messages = (0..n).map(|i| message(&format!("{{\"i\":{i}}}"))).collect();
        (
            Command::Publish {
                messages,
                idempotency,
                reply,
            },
            answer,
        )
    }

    /// Applies `requests` as one group commit and returns their answers in order.
    fn group(actor: &mut Actor, requests: Vec<(usize, Option<Idempotency>)>) -> Vec<Published> {
        let (commands, answers): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|(n, idem)| publish_command(n, idem))
            .unzip();
        actor.apply(commands);
        answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("answered after the commit").unwrap())
            .collect()
    }

    fn count(actor: &Actor, table: &str) -> i64 {
        actor
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn only_a_group_holding_a_publish_waits_for_a_disk_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = actor(dir.path(), Duration::from_secs(60), 100);
        // SQLite's codes: 1 is NORMAL (no flush in WAL mode), 2 is FULL.
        let level = |a: &Actor| -> i64 {
            a.conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        let Published::New(ids) = &group(&mut a, vec![(2, None)])[0] else {
            panic!("a new publish")
        };
        assert_eq!(level(&a), 2, "a publish commits with a flush");

        let (reply, _answer) = oneshot::channel();
        a.apply(vec![
            Command::Pull { max: 10, reply },
            Command::Ack {
                seq: ids[0].parse().unwrap(),
            },
        ]);
        assert_eq!(level(&a), 1, "a lease and an ack commit without one");
        assert_eq!(count(&a, "messages"), 1, "the ack is applied all the same");

        let (pull, publish) = (oneshot::channel().0, publish_command(1, None));
        a.apply(vec![
            Command::Pull {
                max: 10,
                reply: pull,
            },
            publish.0,
        ]);
        assert_eq!(level(&a), 2, "a group with a publish flushes again");
        assert_eq!(count(&a, "messages"), 2);
    }

    #[test]
    fn two_requests_with_one_key_in_one_group_commit_publish_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = actor(dir.path(), Duration::from_secs(60), 100);
        let k = idem("key/a", "k1", "[1,2,3]");
        let answers = group(&mut a, vec![(3, Some(k.clone())), (3, Some(k.clone()))]);
        let Published::New(ids) = &answers[0] else {
            panic!("{answers:?}")
        };
        assert_eq!(answers[1], Published::Replayed(ids.clone()));
        assert_eq!(count(&a, "messages"), 3);

        // A later group, another body under the key, another caller under the key.
        let answers = group(
            &mut a,
            vec![
                (3, Some(k.clone())),
                (1, Some(idem("key/a", "k1", "[9]"))),
                (3, Some(idem("key/b", "k1", "[1,2,3]"))),
            ],
        );
        assert_eq!(answers[0], Published::Replayed(ids.clone()));
        assert_eq!(answers[1], Published::KeyReused);
        let Published::New(other) = &answers[2] else {
            panic!("{answers:?}")
        };
        assert!(other.iter().all(|id| !ids.contains(id)));
        assert_eq!(count(&a, "messages"), 6);
        assert_eq!(a.keys, 2);
    }

    #[test]
    fn a_key_is_stored_with_its_messages_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = actor(dir.path(), Duration::from_secs(60), 100);
        // The key's insert fails: its messages must go with it.
        a.conn
            .execute_batch(
                "CREATE TRIGGER refuse_key BEFORE INSERT ON idempotency_keys
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let (command, mut answer) = publish_command(2, Some(idem("key/a", "k", "[1,2]")));
        let (plain, mut plain_answer) = publish_command(1, None);
        a.apply(vec![command, plain]);
        assert!(answer.try_recv().unwrap().is_err());
        assert!(matches!(
            plain_answer.try_recv().unwrap(),
            Ok(Published::New(_))
        ));
        assert_eq!(count(&a, "messages"), 1, "only the other request's message");
        assert_eq!(count(&a, "idempotency_keys"), 0);
        assert_eq!(a.keys, 0);
    }

    #[test]
    fn keys_survive_a_reopen_and_expire_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let k = idem("key/a", "k", "[1]");
        let ids = {
            let mut a = actor(dir.path(), Duration::from_secs(60), 100);
            let answers = group(&mut a, vec![(1, Some(k.clone()))]);
            let Published::New(ids) = answers[0].clone() else {
                panic!("{answers:?}")
            };
            ids
        };
        let mut a = actor(dir.path(), Duration::from_millis(500), 100);
        assert_eq!(a.keys, 1);
        assert_eq!(
            group(&mut a, vec![(1, Some(k.clone()))]),
            vec![Published::Replayed(ids.clone())]
        );
        std::thread::sleep(Duration::from_millis(600));
        // Past the window: another body is accepted, and the key row replaced, not added.
        let answers = group(&mut a, vec![(1, Some(idem("key/a", "k", "[2]")))]);
        assert!(
            matches!(&answers[0], Published::New(new) if *new != ids),
            "{answers:?}"
        );
        assert_eq!(count(&a, "idempotency_keys"), 1);
        assert_eq!(a.keys, 1);
    }

    #[test]
    fn expired_keys_are_purged_and_the_table_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = actor(dir.path(), Duration::from_millis(50), 3);
        group(
            &mut a,
            (0..2)
                .map(|i| (1, Some(idem("s", &format!("old{i}"), "[1]"))))
                .collect(),
        );
        std::thread::sleep(Duration::from_millis(60));
        a.next_purge = Instant::now();
        group(
            &mut a,
            (0..5)
                .map(|i| (1, Some(idem("s", &format!("new{i}"), "[1]"))))
                .collect(),
        );
        // The two expired keys went, then the oldest of the new ones down to the cap.
        assert_eq!(count(&a, "idempotency_keys"), 3);
        assert_eq!(a.keys, 3);
        let oldest: String = a
            .conn
            .query_row(
                "SELECT key FROM idempotency_keys ORDER BY created_at, rowid LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(oldest, "new2");
    }
}
