//! The GCP backends behind the same ports as the embedded default: Pub/Sub (publish, and a
//! pull worker when `PUBSUB_SUBSCRIPTION` is set) and BigQuery (`insertAll` and
//! `jobs.query`).
//!
//! Credentials are Application Default Credentials (workload identity on Cloud Run). With
//! `PUBSUB_EMULATOR_HOST` / `BIGQUERY_EMULATOR_HOST` set, that service is reached at the given
//! `host:port` over plain HTTP with anonymous credentials, which is how the emulator tests and
//! `scripts/gcp-stack.sh` run the service. docs/gcp.md says where the emulators differ from the
//! real services and how each difference is covered.

mod bigquery;
mod idempotency;
mod pubsub;
mod pull;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::ports::{Backends, DependencyError, ErrorKind, Pipeline};
use crate::telemetry::metrics::{DbSystem, MessagingSystem};

pub use bigquery::BigQueryStore;
pub use pubsub::PubSubPublisher;
pub use pull::PubSubSubscription;

/// The broker of these adapters.
pub const MESSAGING_SYSTEM: MessagingSystem = MessagingSystem::GcpPubsub;
/// The store of these adapters.
pub const DB_SYSTEM: DbSystem = DbSystem::GcpBigquery;

/// Readiness probes give up after this long, so `/readyz` answers quickly even when a
/// dependency hangs.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Builds the GCP backends for `settings` (which `Settings::from_env` already checked: project,
/// topic, dataset and table are present). The worker pipeline exists only when
/// `PUBSUB_SUBSCRIPTION` is set; production's default path is the native BigQuery
/// subscription, which needs no code in this process.
pub async fn build(settings: &Settings) -> anyhow::Result<Backends> {
    let project = required(&settings.gcp_project, "GCP_PROJECT")?;
    let topic = required(&settings.pubsub_topic, "PUBSUB_TOPIC")?;
    let dataset = required(&settings.bq_dataset, "BQ_DATASET")?;
    let table = required(&settings.bq_table, "BQ_TABLE")?;

    let pubsub_endpoint = settings.pubsub_emulator_host.as_deref().map(emulator_url);
    let publisher = PubSubPublisher::connect(
        &format!("projects/{project}/topics/{topic}"),
        pubsub_endpoint.as_deref(),
        settings.request_timeout,
        settings.idempotency_ttl,
    )
    .await
    .context("connecting the Pub/Sub publisher")?;

    let bigquery_base = settings
        .bigquery_emulator_host
        .as_deref()
        .map(|h| format!("{}/bigquery/v2", emulator_url(h)));
    let store = Arc::new(
        BigQueryStore::connect(
            bigquery::TableRef {
                project: project.to_owned(),
                dataset: dataset.to_owned(),
                table: table.to_owned(),
            },
            bigquery_base.as_deref(),
            settings.bq_maximum_bytes_billed,
            settings.request_timeout,
        )
        .await
        .context("connecting the BigQuery client")?,
    );

    let pipeline = match &settings.pubsub_subscription {
        None => None,
        Some(subscription) => {
            let subscription = PubSubSubscription::connect(
                &format!("projects/{project}/subscriptions/{subscription}"),
                pubsub_endpoint.as_deref(),
                settings.max_delivery_attempts,
            )
            .await
            .context("connecting the Pub/Sub subscriber")?;
            Some(Pipeline {
                subscription: Arc::new(subscription),
                writer: store.clone(),
            })
        }
    };
    tracing::info!(
        pubsub = pubsub_endpoint
            .as_deref()
            .unwrap_or("pubsub.googleapis.com"),
        bigquery = bigquery_base
            .as_deref()
            .unwrap_or("bigquery.googleapis.com"),
        worker = pipeline.is_some(),
        "GCP backends ready"
    );
    Ok(Backends {
        publisher: Arc::new(publisher),
        query: store,
        pipeline,
        messaging_system: MESSAGING_SYSTEM,
        db_system: DB_SYSTEM,
    })
}

fn required<'a>(value: &'a Option<String>, name: &str) -> anyhow::Result<&'a str> {
    value
        .as_deref()
        .with_context(|| format!("{name} is required when BACKEND=gcp"))
}

/// `host:port` (the emulators' convention) as a plain-HTTP base URL.
fn emulator_url(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", host.trim_end_matches('/'))
    }
}

/// Runs `fut` with a deadline; past it the call fails with `Timeout`.
pub(crate) async fn deadline<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, DependencyError>>,
) -> Result<T, DependencyError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(DependencyError::new(
            ErrorKind::Timeout,
            format!("{what} did not finish within {} ms", limit.as_millis()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_hosts_become_plain_http_urls() {
        assert_eq!(emulator_url("127.0.0.1:8085"), "http://127.0.0.1:8085");
        assert_eq!(
            emulator_url("http://localhost:9050/"),
            "http://localhost:9050"
        );
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_a_timeout() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), DependencyError>(())
        };
        let e = deadline(Duration::from_millis(10), "slow call", slow)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
    }
}
