//! The domain: records that are valid by construction, the stored form that `getData` returns,
//! and the query filter with its page token. Nothing here knows about HTTP or backends.

mod query;
mod record;

pub use query::{
    Cursor, FilterKey, MovingBounds, QueryError, RecordFilter, DEFAULT_LIMIT, DEFAULT_WINDOW,
    MAX_LIMIT,
};
pub use record::{
    parse_records, FieldError, Order, ParseError, Record, StoredRecord, MAX_BATCH, MAX_ORDERS,
};
