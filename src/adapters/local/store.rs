//! The embedded store: the table in `store.db`, with the columns of the BigQuery table
//! (record fields plus the subscription's metadata) and indexes for getData's two queries.
//!
//! One connection writes (the pipeline is the only writer); queries use a small pool of
//! read connections, which WAL lets run beside the writer. All SQL text is fixed here; request
//! values only ever arrive as bound parameters.

use std::path::{Path, PathBuf};
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

/// Most idle read connections kept open.
const READ_POOL: usize = 4;

/// The SQLite table and its connections.
pub struct LocalStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// At most `READ_POOL` queries at once: more would each open a connection (with its own
    /// page cache) on its own blocking thread, growing memory with the number of clients while
    /// adding no throughput on a few cores. A query past the bound waits here (the request
    /// deadline still applies).
    reading: Arc<tokio::sync::Semaphore>,
}

impl LocalStore {
    /// Opens (creating if needed) the table and its indexes.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn =
            sqlite::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
            reading: Arc::new(tokio::sync::Semaphore::new(READ_POOL)),
        })
    }

    /// Runs `f` on a read connection, off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DependencyError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let permit =
            self.reading.clone().acquire_owned().await.map_err(|_| {
                DependencyError::new(ErrorKind::Internal, "store closed".to_string())
            })?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = readers.lock().expect("reader pool poisoned").pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(sqlite::error)?;
                    c.busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(sqlite::error)?;
                    c
                }
            };
            let result = f(&conn).map_err(sqlite::error);
            let mut pool = readers.lock().expect("reader pool poisoned");
            if pool.len() < READ_POOL {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| DependencyError::new(ErrorKind::Internal, format!("query task failed: {e}")))?
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
        metrics::db_op("sqlite", DbOp::Insert, error, started.elapsed());
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
        metrics::db_op("sqlite", DbOp::Query, error, started.elapsed());
        result
    }

    async fn check(&self) -> Result<(), DependencyError> {
        self.read(|conn| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
            .await
    }
}
