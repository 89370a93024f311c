//! Fault injection for drills: decorators that add latency or errors in front of the real
//! broker and store, switched at run time through the admin port. Off by default; `startup`
//! refuses them on `BACKEND=gcp`, so production code paths never carry them.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::config::Faults;
use crate::domain::{RecordFilter, StoredRecord};
use crate::ports::{
    DependencyError, ErrorKind, Idempotency, JsonPage, OutgoingMessage, Published, Publisher,
    RecordQuery, Row, RowWriter,
};
use crate::telemetry::metrics::{DbMetrics, DbOp, MessagingMetrics, MessagingOp};

/// The current fault settings, shared by the decorators and the admin endpoint.
#[derive(Debug, Default)]
pub struct FaultSwitch(RwLock<Faults>);

impl FaultSwitch {
    /// A switch starting at `faults`.
    pub fn new(faults: Faults) -> Self {
        Self(RwLock::new(faults))
    }

    /// The settings now.
    pub fn get(&self) -> Faults {
        *self.0.read().expect("fault switch poisoned")
    }

    /// Replaces the settings.
    pub fn set(&self, faults: Faults) {
        *self.0.write().expect("fault switch poisoned") = faults;
    }
}

/// Sleeps `latency_ms`, then fails with probability `rate`.
async fn inject(latency_ms: u64, rate: f64, what: &str) -> Result<(), DependencyError> {
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    if rate > 0.0 && rand::random::<f64>() < rate {
        return Err(DependencyError::new(
            ErrorKind::Unavailable,
            format!("injected {what} fault"),
        ));
    }
    Ok(())
}

/// A publisher with injected faults.
pub struct FaultyPublisher {
    /// The real publisher.
    pub inner: Arc<dyn Publisher>,
    /// Where the settings live.
    pub faults: Arc<FaultSwitch>,
    /// The broker's metrics, for injected failures.
    pub metrics: MessagingMetrics,
}

#[async_trait]
impl Publisher for FaultyPublisher {
    async fn publish(
        &self,
        messages: Vec<OutgoingMessage>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Published, DependencyError> {
        let f = self.faults.get();
        let started = Instant::now();
        if let Err(e) = inject(f.broker_latency_ms, f.broker_error_rate, "broker").await {
            self.metrics
                .op(MessagingOp::Publish, Some(e.kind), started.elapsed());
            self.metrics.sent(Some(e.kind), messages.len() as u64);
            return Err(e);
        }
        self.inner.publish(messages, idempotency).await
    }

    async fn check(&self) -> Result<(), DependencyError> {
        let f = self.faults.get();
        if f.broker_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.broker_latency_ms)).await;
        }
        if f.broker_error_rate >= 1.0 {
            return Err(DependencyError::new(
                ErrorKind::Unavailable,
                "injected broker fault",
            ));
        }
        self.inner.check().await
    }

    async fn flush(&self) {
        self.inner.flush().await
    }
}

/// A store (writer and query) with injected faults.
pub struct FaultyStore {
    /// The real writer.
    pub writer: Option<Arc<dyn RowWriter>>,
    /// The real query side.
    pub query: Arc<dyn RecordQuery>,
    /// Where the settings live.
    pub faults: Arc<FaultSwitch>,
    /// The store's metrics, for injected failures.
    pub metrics: DbMetrics,
}

#[async_trait]
impl RowWriter for FaultyStore {
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
        let f = self.faults.get();
        let started = Instant::now();
        if let Err(e) = inject(f.store_latency_ms, f.store_error_rate, "store").await {
            self.metrics
                .op(DbOp::Insert, Some(e.kind), started.elapsed());
            return Err(e);
        }
        match &self.writer {
            Some(w) => w.insert(rows).await,
            None => Err(DependencyError::new(ErrorKind::Internal, "no writer")),
        }
    }
}

impl FaultyStore {
    /// The injected latency and failure of a query, counted as the store's own.
    async fn query_fault(&self) -> Result<(), DependencyError> {
        let f = self.faults.get();
        let started = Instant::now();
        inject(f.store_latency_ms, f.store_error_rate, "store")
            .await
            .inspect_err(|e| {
                self.metrics
                    .op(DbOp::Query, Some(e.kind), started.elapsed())
            })
    }
}

#[async_trait]
impl RecordQuery for FaultyStore {
    async fn query(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, DependencyError> {
        self.query_fault().await?;
        self.query.query(filter).await
    }

    async fn query_json(&self, filter: &RecordFilter) -> Result<JsonPage, DependencyError> {
        self.query_fault().await?;
        self.query.query_json(filter).await
    }

    async fn check(&self) -> Result<(), DependencyError> {
        let f = self.faults.get();
        if f.store_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.store_latency_ms)).await;
        }
        if f.store_error_rate >= 1.0 {
            return Err(DependencyError::new(
                ErrorKind::Unavailable,
                "injected store fault",
            ));
        }
        self.query.check().await
    }
}
