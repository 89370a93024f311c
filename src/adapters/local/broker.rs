//! The embedded broker: a durable topic with one subscription, in `broker.db`.
//!
//! One thread owns the database and serves every command (publish, pull, nack) from a
//! channel; acks wait in a buffer that the next group applies (see [`Acks`]). It takes
//! whatever commands are waiting, applies them in one transaction and commits once, so
//! concurrent publishes share a disk flush (group commit) and a publish is answered only after
//! the commit that holds it is on disk.
//!
//! Delivery follows Pub/Sub: a pulled message is leased for the ack deadline and counts a
//! delivery attempt; an ack deletes it (with the next group commit); a nack schedules a
//! redelivery with exponential backoff, or, once the message has used its maximum delivery
//! attempts, moves it to `dead_letters` with its payload, attempts and last error. After a
//! restart every unacknowledged message is delivered again: leases do not outlive the process
//! that took them.
//!
//! Idempotency keys live here too, in `idempotency_keys`: a keyed publish is looked up and
//! stored in the same savepoint as its messages, on the broker thread, so the key and the
//! messages commit together or not at all, and two requests with one key in one group commit
//! are told apart (the second is a replay). Keys older than the window are purged on a
//! schedule, and the table is capped in rows.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
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
/// How long a group of nothing but acks waits for another command to join it.
const ACK_LINGER: Duration = Duration::from_millis(5);
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
    /// Acks are waiting in [`Acks`]: apply them with the next group.
    Acked,
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
    acks: Arc<Acks>,
    published: Arc<Notify>,
    subscription: Arc<str>,
    metrics: Arc<MessagingMetrics>,
}

/// Acknowledged message ids not yet deleted. An ack is not a command of its own: a batch of
/// 500 acks was 500 commands, 500 single-row DELETEs and, when the broker thread woke for the
/// first of them, commits of their own. Acks wait here and the next group commit deletes them
/// all, in one statement per run of consecutive ids (normally one run per batch). They need no
/// commit of their own: a lost ack is only a redelivery, which the store absorbs.
#[derive(Default)]
struct Acks(Mutex<Vec<i64>>);

impl Acks {
    /// Adds `seq`; true when the buffer was empty, so the broker thread must be told.
    fn push(&self, seq: i64) -> bool {
        let mut acks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        acks.push(seq);
        acks.len() == 1
    }

    fn take(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LocalBroker {
    /// Opens the database, voids the leases of a previous process and starts the thread.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Self> {
        let published = Arc::new(Notify::new());
        let acks = Arc::new(Acks::default());
        let actor = Actor::open(config.clone(), published.clone(), acks.clone())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("local-broker".into())
            .spawn(move || {
                defer_to_request_threads();
                actor.run(rx)
            })?;
        Ok(Self {
            tx,
            acks,
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
                                acks: self.acks.clone(),
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
    acks: Arc<Acks>,
    seq: i64,
    metrics: Arc<MessagingMetrics>,
}

#[async_trait]
impl AckHandle for LocalAck {
    async fn ack(self: Box<Self>) {
        let started = Instant::now();
        // A lost ack only means a redelivery, which the store absorbs by message id. Only the
        // first ack into an empty buffer wakes the broker thread.
        let sent = !self.acks.push(self.seq) || self.tx.send(Command::Acked).is_ok();
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
    acks: Arc<Acks>,
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
    fn open(config: BrokerConfig, published: Arc<Notify>, acks: Arc<Acks>) -> anyhow::Result<Self> {
        let conn = sqlite::open(&config.path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", config.path.display()))?;
        // One plan per statement, whatever the bound values (as the store's readers do).
        // Without it our STAT4 build re-planned the pull's `deliver_after <= ?1` on every
        // pull, since `now` differs every time: about 65 k instructions a pull, a quarter of an
        // ingest request's instructions under callgrind (docs/benchmarks.md). The plans the
        // statements need are the obvious ones (the rowid, the key's UNIQUE).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // Every statement below, plus the transaction control ones, stays prepared.
        conn.set_prepared_statement_cache_capacity(32);
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
             -- No index on deliver_after: the pull reads the table in id order and stops at
             -- `max` due rows (the plan SQLite chose even with the index), so an index cost
             -- B-tree work and WAL pages on every publish, lease and ack and served nothing.
             DROP INDEX IF EXISTS messages_due;
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
            acks,
            backlog: backlog as u64,
            last_failure: None,
            keys: keys as u64,
            next_purge: Instant::now(),
            capped_warned: None,
            flushing: true,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let gather = |commands: &mut Vec<Command>| {
            while commands.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
        };
        while let Ok(first) = rx.recv() {
            let mut commands = vec![first];
            gather(&mut commands);
            // Acks alone are not worth a disk flush of their own: the pipeline pulls again
            // right after it acks a batch, so wait briefly for that pull (or a publish) to
            // carry them. A command that arrives ends the wait at once.
            if commands.iter().all(|c| matches!(c, Command::Acked)) {
                if let Ok(c) = rx.recv_timeout(ACK_LINGER) {
                    commands.push(c);
                    gather(&mut commands);
                }
            }
            self.apply(commands);
        }
        // Every handle is gone: store the last acks, so that they are not redelivered.
        self.apply(Vec::new());
    }

    fn apply(&mut self, commands: Vec<Command>) {
        let acked = self.acks.take();
        if commands.is_empty() && acked.is_empty() {
            return;
        }
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
                // From the statement cache: `pragma_update` formats and parses the PRAGMA
                // on every switch, and under load the level switches twice a pipeline batch.
                let level = if flush {
                    "PRAGMA synchronous = FULL"
                } else {
                    "PRAGMA synchronous = NORMAL"
                };
                sqlite::control(&self.conn, level)?;
                self.flushing = flush;
            }
            let tx = &self.conn;
            sqlite::control(tx, "BEGIN")?;
            // First, so that nothing below sees them.
            out.removed += delete_acked(tx, acked)?;
            for command in commands {
                match command {
                    Command::Publish {
                        messages,
                        idempotency,
                        reply,
                    } => {
                        let result = publish(tx, &messages, idempotency.as_ref(), now, ttl_us);
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
                        let messages = pull(tx, max, now, self.config.ack_deadline)?;
                        out.pulls.push((reply, messages));
                    }
                    Command::Acked => {}
                    Command::Nack { seq, error } => {
                        match nack(tx, seq, &error, now, self.config.max_delivery_attempts)? {
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
                match purge_keys(tx, now - ttl_us, over_cap) {
                    Ok((expired, capped)) => {
                        out.keys_purged = expired + capped;
                        out.keys_capped = capped;
                    }
                    Err(e) => {
                        tracing::warn!(error = %sqlite::error(e), "purging idempotency keys failed")
                    }
                }
            }
            sqlite::control(tx, "COMMIT")
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
                // SQLite may have rolled back already (a full disk): then this fails, harmlessly.
                let _ = sqlite::control(&self.conn, "ROLLBACK");
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

/// Runs `f` inside a savepoint: all of its writes or none, whatever the rest of the group does.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    sqlite::control(conn, "SAVEPOINT request")?;
    match f() {
        Ok(v) => {
            sqlite::control(conn, "RELEASE request")?;
            Ok(v)
        }
        Err(e) => {
            // SQLite may have rolled the whole transaction back already (a full disk); then
            // these fail and so does the commit, which fails the whole group.
            let _ = sqlite::control(conn, "ROLLBACK TO request");
            let _ = sqlite::control(conn, "RELEASE request");
            Err(e)
        }
    }
}

/// Inserts one request's messages inside a savepoint (a single message without a key needs
/// none), so a request that fails (a full disk) leaves nothing behind while the rest of the
/// group still commits. With an idempotency key,
/// the key is looked up first (a live key answers a replay or a refusal and inserts nothing)
/// and stored with the ids in the same savepoint, so the key and its messages are durable
/// together or not at all. The flag is true when a key row was added.
fn publish(
    conn: &Connection,
    messages: &[OutgoingMessage],
    idempotency: Option<&Idempotency>,
    now: i64,
    ttl_us: i64,
) -> rusqlite::Result<(Published, bool)> {
    let work = || {
        let mut replaces_expired = false;
        if let Some(idem) = idempotency {
            let found = conn
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
                    // Nothing was written: releasing the savepoint keeps nothing.
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
            let mut insert = conn.prepare_cached(
                "INSERT INTO messages (publish_time, data, attributes) VALUES (?1, ?2, ?3)",
            )?;
            // A request's messages share their attributes (trace context, key): encode once.
            let mut attributes: Option<(&Attributes, String)> = None;
            for m in messages {
                if attributes.as_ref().is_none_or(|(a, _)| *a != &m.attributes) {
                    let json = serde_json::to_string(&m.attributes).unwrap_or_else(|_| "{}".into());
                    attributes = Some((&m.attributes, json));
                }
                let json = attributes.as_ref().map_or("{}", |(_, j)| j.as_str());
                insert.execute(params![now, m.data.as_ref(), json])?;
                ids.push(conn.last_insert_rowid());
            }
        }
        if let (Some(idem), Some(&first)) = (idempotency, ids.first()) {
            // One writer inserting in one savepoint: AUTOINCREMENT hands out consecutive ids.
            debug_assert!(ids.iter().zip(first..).all(|(id, n)| *id == n));
            conn.prepare_cached(
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
        let new_key = idempotency.is_some() && !replaces_expired;
        Ok((
            Published::New(ids.iter().map(i64::to_string).collect()),
            new_key,
        ))
    };
    // One INSERT is all or nothing by itself, and the savepoint is not free: SQLite copies
    // every page the request touches into its statement journal first (about 2 k
    // instructions a request under callgrind).
    if idempotency.is_none() && messages.len() == 1 {
        work()
    } else {
        in_savepoint(conn, work)
    }
}

/// Deletes keys created at or before `expired_at` and, when the table is `over_cap` rows over
/// its cap, that many of the oldest, each at most [`PURGE_BATCH`] at a time. Answers how many
/// of each it deleted.
fn purge_keys(conn: &Connection, expired_at: i64, over_cap: u64) -> rusqlite::Result<(u64, u64)> {
    in_savepoint(conn, || {
        let expired = conn
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE rowid IN
                     (SELECT rowid FROM idempotency_keys WHERE created_at <= ?1
                      ORDER BY created_at LIMIT ?2)",
            )?
            .execute(params![expired_at, PURGE_BATCH as i64])? as u64;
        let over_cap = over_cap.saturating_sub(expired).min(PURGE_BATCH);
        let capped = if over_cap > 0 {
            conn.prepare_cached(
                "DELETE FROM idempotency_keys WHERE rowid IN
                     (SELECT rowid FROM idempotency_keys ORDER BY created_at, rowid LIMIT ?1)",
            )?
            .execute(params![over_cap as i64])? as u64
        } else {
            0
        };
        Ok((expired, capped))
    })
}

/// The pull's SELECT: the due messages, oldest first.
const PULL: &str = "SELECT seq, publish_time, data, attributes, attempts FROM messages
     WHERE deliver_after <= ?1 ORDER BY seq LIMIT ?2";

/// Takes up to `max` due messages, oldest first, and leases them until `now + deadline`,
/// counting a delivery attempt for each.
fn pull(
    conn: &Connection,
    max: usize,
    now: i64,
    deadline: Duration,
) -> rusqlite::Result<Vec<ReceivedMessage>> {
    let mut select = conn.prepare_cached(PULL)?;
    let mut last = None;
    // A request's messages, and with tracing off every message, carry the same attributes
    // text: decode it once a run and clone the map for the rest.
    let mut decoded: Option<(String, Attributes)> = None;
    let messages = select
        .query_map(params![now, max as i64], |r| {
            let seq: i64 = r.get(0)?;
            last = Some(seq);
            let text = r.get_ref(3)?.as_str()?;
            let attributes = match &decoded {
                Some((prev, attributes)) if prev == text => attributes.clone(),
                _ => {
                    let attributes = serde_json::from_str::<Attributes>(text).unwrap_or_default();
                    decoded = Some((text.to_owned(), attributes.clone()));
                    attributes
                }
            };
            Ok(ReceivedMessage {
                message_id: seq.to_string(),
                publish_time_us: r.get(1)?,
                data: Bytes::copy_from_slice(r.get_ref(2)?.as_blob()?),
                attributes,
                delivery_attempt: r.get::<_, u32>(4)? + 1,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (Some(first), Some(last)) = (messages.first(), last) else {
        return Ok(messages);
    };
    // One statement for the whole lease. The due messages with ids up to the last one taken
    // are exactly the ones taken: the SELECT took them in id order, in this transaction.
    let leased = conn
        .prepare_cached(
            "UPDATE messages SET attempts = attempts + 1, deliver_after = ?3
             WHERE seq BETWEEN ?1 AND ?2 AND deliver_after <= ?4",
        )?
        .execute(params![
            first.message_id.parse::<i64>().unwrap_or_default(),
            last,
            now + deadline.as_micros() as i64,
            now
        ])?;
    debug_assert_eq!(leased, messages.len());
    Ok(messages)
}

/// Deletes the acknowledged messages `seqs`, one statement per run of consecutive ids (a batch
/// is pulled in id order, so normally one run). Answers how many rows went.
fn delete_acked(conn: &Connection, mut seqs: Vec<i64>) -> rusqlite::Result<u64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    seqs.sort_unstable();
    seqs.dedup();
    let mut delete = conn.prepare_cached("DELETE FROM messages WHERE seq BETWEEN ?1 AND ?2")?;
    let mut removed = 0;
    // Every id in a run was acknowledged, so the range deletes nothing else.
    for run in seqs.chunk_by(|a, b| b - a == 1) {
        removed += delete.execute([run[0], run[run.len() - 1]])? as u64;
    }
    Ok(removed)
}

enum NackOutcome {
    Redeliver,
    DeadLettered,
    Gone,
}

fn nack(
    conn: &Connection,
    seq: i64,
    error: &str,
    now: i64,
    max_attempts: u32,
) -> rusqlite::Result<NackOutcome> {
    let attempts: Option<u32> = conn
        .prepare_cached("SELECT attempts FROM messages WHERE seq = ?1")?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    let Some(attempts) = attempts else {
        return Ok(NackOutcome::Gone);
    };
    if attempts >= max_attempts {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO dead_letters
                 (message_id, publish_time, data, attributes, delivery_attempts, last_error, dead_lettered_at)
             SELECT CAST(seq AS TEXT), publish_time, data, attributes, attempts, ?2, ?3
             FROM messages WHERE seq = ?1",
        )?
        .execute(params![seq, error, now])?;
        conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
            .execute([seq])?;
        tracing::warn!(message_id = seq, attempts, error, "message dead-lettered");
        return Ok(NackOutcome::DeadLettered);
    }
    let backoff = MIN_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    conn.prepare_cached("UPDATE messages SET deliver_after = ?2, last_error = ?3 WHERE seq = ?1")?
        .execute(params![seq, now + backoff.as_micros() as i64, error])?;
    Ok(NackOutcome::Redeliver)
}

/// Puts the calling thread (the broker's) under Linux's `SCHED_BATCH` policy: same share of
/// the CPU and the same nice level, but its wake-ups do not preempt the running thread.
///
/// Why: a publish wakes the broker thread, and under the default policy the wake-up preempted
/// the runtime thread that sent it, on a busy core, so the broker committed groups of about 6
/// publishes, each group a WAL write, an `fdatasync`, and a context switch on both sides.
/// Deferred until the runtime thread has handled the requests that are ready (or used its
/// slice), it commits about twice as many a group, and an ingest costs some 15 % less CPU
/// (docs/benchmarks.md, "The broker thread yields to requests"). A core with nothing else to
/// run still runs the broker at once, so an idle service answers as fast as before. Failing
/// (a sandbox that refuses the call) only loses the gain.
#[cfg(target_os = "linux")]
fn defer_to_request_threads() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid `sched_param` that the
    // call only reads. SCHED_BATCH needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::info!(%error, "broker thread keeps the default scheduling policy");
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_to_request_threads() {}

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
            Arc::new(Acks::default()),
        )
        .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_broker_thread_is_scheduled_not_to_preempt_request_threads() {
        let policy = std::thread::spawn(|| {
            defer_to_request_threads();
            // The policy is the 41st field of the thread's stat, the 39th after the name.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            after_name
                .split(' ')
                .nth(38)
                .unwrap()
                .parse::<i32>()
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
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

    /// Pulls up to `max` messages as one group commit.
    fn pull_group(actor: &mut Actor, max: usize) -> Vec<ReceivedMessage> {
        let (reply, mut answer) = oneshot::channel();
        actor.apply(vec![Command::Pull { max, reply }]);
        answer
            .try_recv()
            .expect("answered after the commit")
            .unwrap()
    }

    fn seqs(actor: &Actor) -> Vec<i64> {
        let mut stmt = actor
            .conn
            .prepare("SELECT seq FROM messages ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// The pull walks `messages` in id order and stops at `max` due rows: no sort, no index
    /// to keep up to date on every publish, lease and ack (docs/benchmarks.md, "Follow-up: the
    /// broker's unused index").
    #[test]
    fn the_pull_reads_the_table_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = actor(dir.path(), Duration::from_secs(60), 100);
        let mut stmt = a
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PULL}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![0, 500], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        eprintln!("pull plan: {plan:?}");
        assert_eq!(plan, vec!["SCAN messages".to_owned()]);
    }

    #[test]
    fn a_pull_leases_exactly_what_it_takes_and_acks_delete_exactly_the_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = actor(dir.path(), Duration::from_secs(60), 100);
        group(&mut a, vec![(3, None), (1, None), (4, None)]);
        let all = seqs(&a);
        assert_eq!(all.len(), 8);

        let first = pull_group(&mut a, 5);
        let ids: Vec<i64> = first
            .iter()
            .map(|m| m.message_id.parse().unwrap())
            .collect();
        assert_eq!(ids, all[..5], "the oldest five, in order");
        assert!(first.iter().all(|m| m.delivery_attempt == 1));
        // Leased: the next pull gets only the other three, and counts one attempt each.
        let second = pull_group(&mut a, 500);
        let ids: Vec<i64> = second
            .iter()
            .map(|m| m.message_id.parse().unwrap())
            .collect();
        assert_eq!(ids, all[5..]);
        assert!(pull_group(&mut a, 500).is_empty(), "everything is leased");
        let attempts: Vec<i64> = {
            let mut stmt = a.conn.prepare("SELECT attempts FROM messages").unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert_eq!(attempts, vec![1; 8]);

        // Acks in two runs with a hole between (the third message is not acked), out of
        // order and one twice: exactly the acked rows go, with the next group.
        for i in [6, 0, 1, 3, 4, 5, 7, 0] {
            a.acks.push(all[i]);
        }
        a.apply(vec![Command::Acked]);
        assert_eq!(seqs(&a), vec![all[2]]);
        assert_eq!(a.backlog, 1);
        assert!(a.acks.take().is_empty());
    }

    #[test]
    fn a_nacked_message_comes_back_after_its_backoff_and_is_dead_lettered_at_the_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Actor::open(
            BrokerConfig {
                path: dir.path().join("broker.db"),
                max_delivery_attempts: 2,
                ack_deadline: Duration::from_secs(30),
                subscription: "s".into(),
                idempotency_ttl: Duration::from_secs(60),
                max_idempotency_keys: 100,
            },
            Arc::new(Notify::new()),
            Arc::new(Acks::default()),
        )
        .unwrap();
        group(&mut a, vec![(2, None)]);
        let taken = pull_group(&mut a, 500);
        let seq: i64 = taken[0].message_id.parse().unwrap();
        a.apply(vec![Command::Nack {
            seq,
            error: "first".into(),
        }]);
        assert_eq!(pull_group(&mut a, 500).len(), 0, "in backoff (100 ms)");
        std::thread::sleep(MIN_BACKOFF + Duration::from_millis(20));
        let again = pull_group(&mut a, 500);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message_id, taken[0].message_id);
        assert_eq!(again[0].delivery_attempt, 2);
        a.apply(vec![Command::Nack {
            seq,
            error: "second".into(),
        }]);
        assert_eq!(seqs(&a), vec![seq + 1]);
        assert_eq!(count(&a, "dead_letters"), 1);
        assert_eq!(a.backlog, 1);
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
        a.acks.push(ids[0].parse().unwrap());
        a.apply(vec![Command::Pull { max: 10, reply }, Command::Acked]);
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
