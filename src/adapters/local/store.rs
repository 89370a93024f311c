//! The embedded store: the table in `store.db`, with the columns of the BigQuery table
//! (record fields plus the subscription's metadata) and indexes for getData's two queries.
//!
//! One connection writes (the pipeline is the only writer); queries run on a few reader
//! threads, each with its own read connection, which WAL lets run beside the writer. All SQL
//! text is fixed here; request values only ever arrive as bound parameters.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::sqlite;
use crate::domain::{Order, RecordFilter, StoredRecord};
use crate::ports::{DependencyError, ErrorKind, RecordQuery, Row, RowWriter};
use crate::telemetry::metrics::{self, DbOp};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    message_id TEXT NOT NULL UNIQUE,
    customerId TEXT NOT NULL,
    name TEXT NOT NULL,
    orders TEXT NOT NULL,          -- JSON array of {orderId, total}; REPEATED RECORD in BigQuery
    revenue REAL,
    subscription_name TEXT NOT NULL,
    publish_time INTEGER NOT NULL, -- microseconds since the epoch, like BigQuery's TIMESTAMP
    attributes TEXT NOT NULL       -- JSON object
);
CREATE INDEX IF NOT EXISTS records_by_time ON records (publish_time DESC, message_id DESC);
CREATE INDEX IF NOT EXISTS records_by_customer
    ON records (customerId, publish_time DESC, message_id DESC);
";

/// Newest first inside the window; the cursor variants continue after the last row seen.
/// Row values let SQLite use the index for the keyset condition.
const Q_ALL: &str =
    "SELECT customerId, name, orders, revenue, message_id, publish_time FROM records
    WHERE publish_time >= ?1 AND publish_time < ?2
    ORDER BY publish_time DESC, message_id DESC LIMIT ?3";
const Q_ALL_AFTER: &str =
    "SELECT customerId, name, orders, revenue, message_id, publish_time FROM records
    WHERE publish_time >= ?1 AND publish_time < ?2 AND (publish_time, message_id) < (?4, ?5)
    ORDER BY publish_time DESC, message_id DESC LIMIT ?3";
const Q_CUSTOMER: &str =
    "SELECT customerId, name, orders, revenue, message_id, publish_time FROM records
    WHERE customerId = ?4 AND publish_time >= ?1 AND publish_time < ?2
    ORDER BY publish_time DESC, message_id DESC LIMIT ?3";
const Q_CUSTOMER_AFTER: &str =
    "SELECT customerId, name, orders, revenue, message_id, publish_time FROM records
    WHERE customerId = ?6 AND publish_time >= ?1 AND publish_time < ?2
      AND (publish_time, message_id) < (?4, ?5)
    ORDER BY publish_time DESC, message_id DESC LIMIT ?3";

/// Reader threads, each with its own read-only connection.
const READERS: usize = 4;
/// Queries waiting for each reader beyond the one it runs (16 in all); past this, callers wait
/// (async) to enqueue, so the queues do not grow with the number of clients.
const READ_QUEUE: usize = 4;

/// A query for a reader thread: it runs `f` and sends the result back, unless the caller
/// has gone (its request deadline passed) by the time a reader takes it.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// One queue per reader thread. A shared queue needed a lock around its receiver: every query
/// woke the reader holding the lock and then, through the lock, the next one, and under load
/// that hand-off made some benchmark runs much slower (docs/benchmarks.md). Here a query goes
/// to the reader with the fewest queries queued or running at that moment and wakes exactly
/// that reader; once queued it stays there, so it can still wait behind a slow query while
/// another reader has become idle (an MPMC channel would avoid that; not done yet).
struct Readers {
    queues: Vec<tokio::sync::mpsc::Sender<ReadJob>>,
    /// Per reader: queries sent to it and not yet finished.
    pending: Arc<[AtomicUsize; READERS]>,
}

impl Readers {
    /// Queues `job` on the least busy reader; waits (async) while that reader's queue is full.
    /// `Err` when the readers are gone.
    async fn submit(&self, job: ReadJob) -> Result<(), ()> {
        let least = (0..READERS)
            .min_by_key(|&i| self.pending[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        // Counted before the send so that concurrent callers spread out; uncounted again if
        // the send fails or this future is dropped while waiting (its request's deadline).
        let claim = Claim(&self.pending[least]);
        claim.0.fetch_add(1, Ordering::Relaxed);
        self.queues[least].send(job).await.map_err(|_| ())?;
        // Sent: the reader uncounts it when the query has run.
        std::mem::forget(claim);
        Ok(())
    }
}

/// A query counted on a reader that has not reached its queue yet.
struct Claim<'a>(&'a AtomicUsize);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The SQLite table and its connections.
pub struct LocalStore {
    writer: Arc<Mutex<Connection>>,
    /// Queries go to `READERS` long-lived threads. `spawn_blocking` would do the same work
    /// but tokio starts a fresh blocking thread whenever none is idle at that instant: under
    /// load both benchmark builds ran about 30 threads (and their malloc arenas) for 4
    /// concurrent reads. Fixed threads keep the thread count, the connections and their page
    /// caches bounded, and getData was faster for it (docs/benchmarks.md).
    readers: Arc<Readers>,
}

impl LocalStore {
    /// Opens (creating if needed) the table and its indexes, and starts the reader threads.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn =
            sqlite::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        conn.execute_batch(SCHEMA)?;
        let mut queues = Vec::with_capacity(READERS);
        let pending: Arc<[AtomicUsize; READERS]> = Arc::new(Default::default());
        for i in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| anyhow::anyhow!("opening {} to read: {e}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            let (jobs, mut queue) = tokio::sync::mpsc::channel::<ReadJob>(READ_QUEUE);
            queues.push(jobs);
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("store-reader-{i}"))
                // Ends when every sender is gone: the store was dropped.
                .spawn(move || {
                    while let Some(job) = queue.blocking_recv() {
                        // A panic in one query fails that query (its answer channel is
                        // dropped), not the reader: the thread keeps serving.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
                        pending[i].fetch_sub(1, Ordering::Relaxed);
                    }
                })?;
        }
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Readers { queues, pending }),
        })
    }

    /// Runs `f` on a reader thread's connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DependencyError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // A caller that stopped waiting (deadline, client gone) needs no answer.
            if !done.is_closed() {
                let _ = done.send(f(conn).map_err(sqlite::error));
            }
        });
        let closed = || DependencyError::new(ErrorKind::Internal, "store closed".to_string());
        self.readers.submit(job).await.map_err(|()| closed())?;
        // A reader that panicked drops the job, and with it the sender.
        result.await.map_err(|_| {
            DependencyError::new(
                ErrorKind::Internal,
                "query failed on the reader".to_string(),
            )
        })?
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    let orders: String = r.get(2)?;
    let orders: Vec<Order> = serde_json::from_str(&orders).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(StoredRecord {
        customer_id: r.get(0)?,
        name: r.get(1)?,
        orders,
        revenue: r.get(3)?,
        message_id: r.get(4)?,
        publish_time_us: r.get(5)?,
    })
}

#[async_trait]
impl RowWriter for LocalStore {
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
        let rows = rows.to_vec();
        let writer = self.writer.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || -> Result<(), DependencyError> {
            let mut conn = writer.lock().expect("writer poisoned");
            let tx = conn.transaction().map_err(sqlite::error)?;
            {
                // OR IGNORE: a redelivered message is stored once (message_id is unique).
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO records
                           (message_id, customerId, name, orders, revenue, subscription_name, publish_time, attributes)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(sqlite::error)?;
                for row in &rows {
                    let r = &row.record;
                    let orders = serde_json::to_string(&r.orders).unwrap_or_else(|_| "[]".into());
                    insert
                        .execute(params![
                            r.message_id,
                            r.customer_id,
                            r.name,
                            orders,
                            r.revenue,
                            row.subscription_name,
                            r.publish_time_us,
                            row.attributes_json
                        ])
                        .map_err(sqlite::error)?;
                }
            }
            tx.commit().map_err(sqlite::error)
        })
        .await
        .map_err(|e| DependencyError::new(ErrorKind::Internal, format!("insert task failed: {e}")))
        .and_then(|r| r);
        let error = result.as_ref().err().map(|e| e.kind);
        metrics::db_op(metrics::DB_LOCAL, DbOp::Insert, error, started.elapsed());
        result
    }
}

#[async_trait]
impl RecordQuery for LocalStore {
    async fn query(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, DependencyError> {
        let f = filter.clone();
        let started = Instant::now();
        let result = self
            .read(move |conn| {
                let sql = match (&f.customer_id, &f.after) {
                    (None, None) => Q_ALL,
                    (None, Some(_)) => Q_ALL_AFTER,
                    (Some(_), None) => Q_CUSTOMER,
                    (Some(_), Some(_)) => Q_CUSTOMER_AFTER,
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let limit = i64::from(f.limit) + 1;
                let (after_t, after_id) = match &f.after {
                    Some(c) => (Some(c.publish_time_us), Some(c.message_id.clone())),
                    None => (None, None),
                };
                let rows = match (&f.customer_id, after_t) {
                    (None, None) => {
                        stmt.query_map(params![f.from_us, f.to_us, limit], row_to_record)?
                    }
                    (None, Some(t)) => stmt.query_map(
                        params![f.from_us, f.to_us, limit, t, after_id],
                        row_to_record,
                    )?,
                    (Some(c), None) => {
                        stmt.query_map(params![f.from_us, f.to_us, limit, c], row_to_record)?
                    }
                    (Some(c), Some(t)) => stmt.query_map(
                        params![f.from_us, f.to_us, limit, t, after_id, c],
                        row_to_record,
                    )?,
                };
                rows.collect()
            })
            .await;
        let error = result.as_ref().err().map(|e| e.kind);
        metrics::db_op(metrics::DB_LOCAL, DbOp::Query, error, started.elapsed());
        result
    }

    async fn check(&self) -> Result<(), DependencyError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
            .await
    }
}
