//! The embedded default: a durable broker and an SQLite store under `DATA_DIR`, with the
//! semantics of Pub/Sub plus a BigQuery subscription (ack after commit, retries with backoff,
//! dead letters), so the whole system runs on one machine with no cloud account.

mod broker;
mod sqlite;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use broker::{BrokerConfig, LocalBroker};
pub use store::LocalStore;

use crate::ports::{Backends, Pipeline};
use crate::telemetry::metrics::{DbSystem, MessagingSystem};

/// Opens (creating if needed) the broker and store under `data_dir`. Idempotency keys are
/// remembered for `idempotency_ttl`.
pub fn build(
    data_dir: &Path,
    max_delivery_attempts: u32,
    idempotency_ttl: Duration,
) -> anyhow::Result<Backends> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("DATA_DIR {}: {e}", data_dir.display()))?;
    let broker = LocalBroker::open(BrokerConfig {
        path: data_dir.join("broker.db"),
        max_delivery_attempts,
        ack_deadline: Duration::from_secs(30),
        subscription: "challenge-latam-local-subscription".to_owned(),
        idempotency_ttl,
        max_idempotency_keys: broker::MAX_IDEMPOTENCY_KEYS,
    })?;
    let store = Arc::new(LocalStore::open(&data_dir.join("store.db"))?);
    Ok(Backends {
        publisher: broker.publisher(),
        query: store.clone(),
        pipeline: Some(Pipeline {
            subscription: broker.subscription(),
            writer: store,
        }),
        messaging_system: MessagingSystem::Local,
        db_system: DbSystem::Sqlite,
    })
}
