//! SQLite settings and error mapping shared by the broker and the store.

use rusqlite::{Connection, ErrorCode};

use crate::ports::{DependencyError, ErrorKind};

/// WAL pages written before a commit checkpoints them into the database file (SQLite's
/// default is 1,000). A checkpoint copies the newest version of every page in the WAL once and
/// flushes both files, so the fewer there are, the fewer times the same pages are copied: the
/// broker's live pages are few and rewritten by every publish, lease and ack, the store's tail
/// pages by every batch. At 10,000 pages (at most about 40 MiB of WAL a database) ingest
/// answered 9 % more requests a second for 7 % less CPU each (medians of six same-minute
/// pairs), and reads did not change (docs/benchmarks.md, "Checkpoints and fdatasync").
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Opens a connection in WAL mode with `synchronous = FULL`: a commit is on disk when it
/// returns, which is what "acknowledged means stored" rests on.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Sorts an SQLite error into the fixed `error_type` set.
pub fn classify(e: &rusqlite::Error) -> ErrorKind {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => ErrorKind::ResourceExhausted,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Unavailable,
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::ReadOnly) => {
            ErrorKind::Unavailable
        }
        Some(ErrorCode::ConstraintViolation) => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

/// Wraps an SQLite error as a dependency error.
pub fn error(e: rusqlite::Error) -> DependencyError {
    DependencyError::new(classify(&e), e.to_string())
}

/// Runs one of the fixed transaction control statements (`BEGIN`, `COMMIT`, `SAVEPOINT` ...)
/// from the connection's statement cache. rusqlite's `Transaction` and `Savepoint` run them
/// through `execute_batch`, which parses the SQL on every call: 4 to 12 k instructions each,
/// several per request on the ingest path (docs/benchmarks.md).
pub fn control(conn: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.raw_execute().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_durable_and_checkpoint_rarely() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        let get = |pragma: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
                .unwrap()
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(get("synchronous"), 2, "FULL");
        assert_eq!(
            get("wal_autocheckpoint"),
            i64::from(WAL_AUTOCHECKPOINT_PAGES)
        );
    }
}
