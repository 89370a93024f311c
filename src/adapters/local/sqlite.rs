//! SQLite settings and error mapping shared by the broker and the store.

use rusqlite::{Connection, ErrorCode};

use crate::ports::{DependencyError, ErrorKind};

/// Opens a connection in WAL mode with `synchronous = FULL`: a commit is on disk when it
/// returns, which is what "acknowledged means stored" rests on.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
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
