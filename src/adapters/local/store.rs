//! The embedded store: the table in `store.db`, with the columns of the BigQuery table
//! (record fields plus the subscription's metadata) and indexes for getData's two queries.
//!
//! One connection writes (the pipeline is the only writer); queries run on a few reader
//! threads, each with its own read connection, which WAL lets run beside the writer. All SQL
//! text is fixed here; request values only ever arrive as bound parameters.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::sqlite;
use crate::domain::{Cursor, Order, RecordFilter, StoredRecord, StoredRecordJson};
use crate::ports::{DependencyError, ErrorKind, JsonPage, RecordQuery, Row, RowWriter};
use crate::telemetry::metrics::{DbMetrics, DbOp, DbSystem};

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
/// Queries admitted at once: one running on each reader plus 16 waiting for the next free one.
/// Past this, callers wait (async) for a slot, so the queue does not grow with the number of
/// clients, and a caller whose deadline passes while it waits has taken nothing.
const READ_SLOTS: usize = READERS + 16;

/// A query for a reader thread: it runs on that thread's connection and sends the result back,
/// unless the caller has gone (its request deadline passed) by the time a reader takes it.
type ReadJob<C> = Box<dyn FnOnce(&C) + Send>;

/// The reader threads and the one queue they all take from: whichever reader is free takes the
/// next query, so a query never waits behind a slow one while another reader is idle.
///
/// Two earlier designs were worse (docs/benchmarks.md). One tokio receiver behind a lock: every
/// query woke the reader holding the lock and then, through the lock, the next one, a convoy
/// that made some benchmark runs much slower. One queue per reader, filled by least-busy
/// counters: a queued query stayed behind a slow one on its reader. A crossbeam channel is
/// multi-consumer without a lock around the receiver and wakes one waiting reader per query.
struct Readers<C> {
    jobs: crossbeam_channel::Sender<ReadJob<C>>,
    /// `READ_SLOTS` permits; a query holds one from admission until it has run (or panicked,
    /// or been dropped unrun), so the count cannot drift.
    slots: Arc<tokio::sync::Semaphore>,
}

impl<C: Send + 'static> Readers<C> {
    /// Starts one reader thread per connection. The threads end when the `Readers` is dropped
    /// (the last sender goes) after running the queries already queued.
    fn start(connections: Vec<C>) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded::<ReadJob<C>>();
        for (i, conn) in connections.into_iter().enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("store-reader-{i}"))
                .spawn(move || {
                    for job in queue {
                        // A panic in one query fails that query (its answer channel is
                        // dropped), not the reader: the thread keeps serving.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&conn)));
                    }
                })?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(tokio::sync::Semaphore::new(READ_SLOTS)),
        })
    }

    /// Queues `job` for the next free reader, waiting (async) while every slot is taken.
    /// `Err` when the readers are gone.
    async fn submit(&self, job: impl FnOnce(&C) + Send + 'static) -> Result<(), ()> {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| ())?;
        self.jobs
            .send(Box::new(move |conn| {
                // Released when the query returns or unwinds.
                let _slot = slot;
                job(conn)
            }))
            .map_err(|_| ())
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
    readers: Readers<Connection>,
    metrics: DbMetrics,
}

impl LocalStore {
    /// Opens (creating if needed) the table and its indexes, and starts the reader threads.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn =
            sqlite::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        conn.execute_batch(SCHEMA)?;
        let connections = (0..READERS)
            .map(|_| {
                open_reader(path)
                    .map_err(|e| anyhow::anyhow!("opening {} to read: {e}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            writer: Arc::new(Mutex::new(conn)),
            readers: Readers::start(connections)?,
            metrics: DbMetrics::register(DbSystem::Sqlite),
        })
    }

    /// Runs `f` on a reader thread's connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DependencyError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = move |conn: &Connection| {
            // A caller that stopped waiting (deadline, client gone) needs no answer.
            if !done.is_closed() {
                let _ = done.send(f(conn).map_err(sqlite::error));
            }
        };
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

/// A reader thread's connection: read-only, waiting up to 5 s for a lock.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The query planner stability guarantee: one plan per statement, whatever the bound
    // values. Without it SQLite treats `LIMIT ?3` as a value the plan may depend on, and
    // rebinding it expires the cached statement, so every getData re-parsed and re-planned its
    // SQL. With it, handlers-only getData went from 77-95 to 68-70 us of CPU per request
    // (docs/benchmarks.md). The indexes decide the plan anyway.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
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

/// getData's page straight from the rows: text columns borrowed from SQLite and the orders
/// spliced in as the JSON text they were stored as (after a check that it is one JSON value),
/// where decoding them into records and encoding those again cost a fifth of a miss's CPU
/// (docs/benchmarks.md, issue 20). The store's writer stores what serde_json encodes, so the
/// bytes are the same as `JsonPage::from_records` of `query` (the pages tests compare them).
fn json_page(f: &RecordFilter, mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<JsonPage> {
    let limit = f.limit as usize;
    let mut body = Vec::with_capacity(2 + 256 * limit.min(100));
    body.push(b'[');
    let mut next = None;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        if n == limit {
            // The extra row: another page exists, after the last row written.
            return Ok(JsonPage {
                body: close(body),
                next,
            });
        }
        let text = |i: usize| {
            r.get_ref(i)?.as_str().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            })
        };
        let json_error = |e: serde_json::Error| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        };
        let record = StoredRecordJson {
            customer_id: text(0)?,
            name: text(1)?,
            orders: serde_json::from_str(text(2)?).map_err(json_error)?,
            revenue: r.get(3)?,
            message_id: text(4)?,
            publish_time_us: r.get(5)?,
        };
        if n > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &record).map_err(json_error)?;
        n += 1;
        if n == limit {
            next = Some(Cursor {
                publish_time_us: record.publish_time_us,
                message_id: record.message_id.to_owned(),
            });
        }
    }
    Ok(JsonPage {
        body: close(body),
        next: None,
    })
}

fn close(mut body: Vec<u8>) -> Vec<u8> {
    body.push(b']');
    body
}

#[async_trait]
impl RowWriter for LocalStore {
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
        let rows = rows.to_vec();
        let writer = self.writer.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || -> Result<(), DependencyError> {
            let conn = writer.lock().expect("writer poisoned");
            sqlite::control(&conn, "BEGIN").map_err(sqlite::error)?;
            let written = (|| {
                // OR IGNORE: a redelivered message is stored once (message_id is unique).
                let mut insert = conn.prepare_cached(
                    "INSERT OR IGNORE INTO records
                       (message_id, customerId, name, orders, revenue, subscription_name, publish_time, attributes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for row in &rows {
                    let r = &row.record;
                    let orders = serde_json::to_string(&r.orders).unwrap_or_else(|_| "[]".into());
                    insert.execute(params![
                        r.message_id,
                        r.customer_id,
                        r.name,
                        orders,
                        r.revenue,
                        row.subscription_name,
                        r.publish_time_us,
                        row.attributes_json
                    ])?;
                }
                sqlite::control(&conn, "COMMIT")
            })();
            if written.is_err() {
                // SQLite may have rolled back already (a full disk): then this fails, harmlessly.
                let _ = sqlite::control(&conn, "ROLLBACK");
            }
            written.map_err(sqlite::error)
        })
        .await
        .map_err(|e| DependencyError::new(ErrorKind::Internal, format!("insert task failed: {e}")))
        .and_then(|r| r);
        let error = result.as_ref().err().map(|e| e.kind);
        self.metrics.op(DbOp::Insert, error, started.elapsed());
        result
    }
}

#[async_trait]
impl RecordQuery for LocalStore {
    async fn query(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, DependencyError> {
        self.select(filter, |_, rows| rows.mapped(row_to_record).collect())
            .await
    }

    async fn query_json(&self, filter: &RecordFilter) -> Result<JsonPage, DependencyError> {
        self.select(filter, json_page).await
    }

    async fn check(&self) -> Result<(), DependencyError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
            .await
    }
}

impl LocalStore {
    /// Runs getData's query for `filter` on a reader and hands its rows to `collect` there.
    async fn select<T: Send + 'static>(
        &self,
        filter: &RecordFilter,
        collect: fn(&RecordFilter, rusqlite::Rows<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DependencyError> {
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
                    (None, None) => stmt.query(params![f.from_us, f.to_us, limit])?,
                    (None, Some(t)) => {
                        stmt.query(params![f.from_us, f.to_us, limit, t, after_id])?
                    }
                    (Some(c), None) => stmt.query(params![f.from_us, f.to_us, limit, c])?,
                    (Some(c), Some(t)) => {
                        stmt.query(params![f.from_us, f.to_us, limit, t, after_id, c])?
                    }
                };
                collect(&f, rows)
            })
            .await;
        let error = result.as_ref().err().map(|e| e.kind);
        self.metrics.op(DbOp::Query, error, started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A cached query is not re-prepared when its bound values change (see `open_reader`).
    #[test]
    fn reader_statements_are_not_reprepared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        sqlite::open(&path).unwrap().execute_batch(SCHEMA).unwrap();
        let conn = open_reader(&path).unwrap();
        for limit in [1_i64, 2, 3, 101] {
            let mut stmt = conn.prepare_cached(Q_ALL).unwrap();
            let n = stmt
                .query_map(params![0_i64, i64::MAX, limit], |_| Ok(()))
                .unwrap()
                .count();
            assert_eq!(n, 0);
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "getData's statement was re-prepared for LIMIT {limit}"
            );
        }
    }

    /// Only reached when a test fails; generous for a loaded CI machine.
    const WAIT: Duration = Duration::from_secs(30);

    /// Polls until every slot is free again; the last permit is released just after the last
    /// query returns, on the reader thread.
    async fn all_slots_free(readers: &Readers<()>) {
        let free = async {
            while readers.slots.available_permits() != READ_SLOTS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, free)
            .await
            .unwrap_or_else(|_| panic!("{} slots free", readers.slots.available_permits()));
    }

    /// `submit` with a deadline: a broken slot count would otherwise hang the test, and
    /// `cargo test` has no per-test timeout.
    async fn submit(readers: &Readers<()>, job: impl FnOnce(&()) + Send + 'static) {
        tokio::time::timeout(WAIT, readers.submit(job))
            .await
            .expect("no slot came free")
            .expect("readers gone");
    }

    #[tokio::test]
    async fn a_free_reader_takes_the_next_query() {
        let readers = Readers::start(vec![(); READERS]).unwrap();
        // Once for each reader left busy, so a design that pins queued queries to one reader
        // fails whichever reader it would pick.
        for busy in 0..READERS {
            // Occupy every reader, each query held by its own gate.
            let (started, running) = std::sync::mpsc::channel();
            let mut gates = Vec::new();
            for _ in 0..READERS {
                let (open, gate) = std::sync::mpsc::channel::<()>();
                let started = started.clone();
                submit(&readers, move |_| {
                    started.send(()).unwrap();
                    let _ = gate.recv();
                })
                .await;
                gates.push(open);
            }
            for _ in 0..READERS {
                running.recv_timeout(WAIT).expect("a reader did not start");
            }
            let (done, answer) = tokio::sync::oneshot::channel();
            submit(&readers, move |_| done.send(()).unwrap()).await;
            // Free every reader except one: the queued query must run on a freed one rather
            // than wait for the busy one.
            let held = gates.remove(busy);
            drop(gates);
            tokio::time::timeout(WAIT, answer)
                .await
                .unwrap_or_else(|_| panic!("the queued query waited for busy reader {busy}"))
                .unwrap();
            drop(held);
            all_slots_free(&readers).await;
        }
    }

    #[tokio::test]
    async fn slots_come_back_after_panics_and_abandoned_waits() {
        let readers = Readers::start(vec![(); READERS]).unwrap();
        // Panicking queries fail alone (resume_unwind: a panic without the hook's message).
        for _ in 0..2 * READ_SLOTS {
            submit(&readers, |_| {
                std::panic::resume_unwind(Box::new("query failed"))
            })
            .await;
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        submit(&readers, move |_| done.send(()).unwrap()).await;
        tokio::time::timeout(WAIT, answer)
            .await
            .expect("the readers stopped serving after panics")
            .unwrap();
        all_slots_free(&readers).await;

        // Every slot held: the next caller waits, and one that gives up takes nothing.
        let (open, gate) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..READ_SLOTS {
            let gate = gate.clone();
            submit(&readers, move |_| {
                let _ = gate.recv();
            })
            .await;
        }
        assert_eq!(readers.slots.available_permits(), 0);
        let waited = tokio::time::timeout(Duration::from_millis(50), readers.submit(|_| {})).await;
        assert!(waited.is_err(), "a query past READ_SLOTS was admitted");
        drop(open);
        all_slots_free(&readers).await;
    }

    #[tokio::test]
    async fn dropping_the_readers_ends_their_threads() {
        let token = Arc::new(());
        let readers = Readers::start(vec![token.clone(); READERS]).unwrap();
        let (done, answer) = tokio::sync::oneshot::channel();
        readers
            .submit(move |_| done.send(()).unwrap())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, answer)
            .await
            .expect("the query did not run")
            .unwrap();
        drop(readers);
        // Each thread owns one clone; it goes when the thread returns.
        let ended = async {
            while Arc::strong_count(&token) > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, ended)
            .await
            .expect("reader threads still running after the store was dropped");
    }
}
