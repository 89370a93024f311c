//! The domain: records that are valid by construction, the stored form that `getData` returns,
//! the query filter with its page token, and the idempotency key of a request. Nothing here
//! knows about HTTP or backends.

mod idempotency;
mod query;
mod record;

pub use idempotency::{Idempotency, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX};
pub use query::{
    Cursor, FilterKey, MovingBounds, QueryError, RecordFilter, DEFAULT_LIMIT, DEFAULT_WINDOW,
    MAX_LIMIT,
};
pub use record::{
    parse_records, FieldError, Order, ParseError, Record, StoredRecord, StoredRecordJson,
    MAX_BATCH, MAX_ORDERS,
};
