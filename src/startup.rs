//! Wiring: choose the backends once, build the routers, bind the listeners, run until the
//! shutdown signal, then stop in order (stop accepting, drain requests, stop the pipeline,
//! flush the broker).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::faults::{FaultSwitch, FaultyPublisher, FaultyStore};
use crate::config::{Backend, Settings};
use crate::http::auth::Auth;
use crate::http::{self, AppState, Protection, RateLimit};
use crate::pages::{Pages, PagesConfig};
use crate::pipeline;
use crate::ports::{Backends, Pipeline};
use crate::telemetry;
use crate::telemetry::metrics::{DbMetrics, MessagingMetrics};

/// How often idle rate-limit keys are forgotten.
const EVICT_EVERY: Duration = Duration::from_secs(30);

/// The built service, listeners bound, not yet serving.
pub struct Application {
    public: TcpListener,
    admin: TcpListener,
    router: Router,
    admin_router: Router,
    backends: Backends,
    settings: Settings,
}

/// Chooses the backends for `settings`; the only place that knows which exist.
pub async fn backends(settings: &Settings) -> anyhow::Result<Backends> {
    match settings.backend {
        Backend::Local => crate::adapters::local::build(
            &settings.data_dir,
            settings.max_delivery_attempts,
            settings.idempotency_ttl,
        ),
        Backend::Gcp => crate::adapters::gcp::build(settings).await,
    }
}

/// Wraps the local backends in the fault-injection decorators. Never used on GCP.
fn with_faults(b: Backends, faults: &Arc<FaultSwitch>) -> Backends {
    let store = Arc::new(FaultyStore {
        writer: b.pipeline.as_ref().map(|p| p.writer.clone()),
        query: b.query.clone(),
        faults: faults.clone(),
        metrics: DbMetrics::register(b.db_system),
    });
    Backends {
        publisher: Arc::new(FaultyPublisher {
            inner: b.publisher,
            faults: faults.clone(),
            metrics: MessagingMetrics::register(b.messaging_system),
        }),
        query: store.clone(),
        pipeline: b.pipeline.map(|p| Pipeline {
            subscription: p.subscription,
            writer: store,
        }),
        ..b
    }
}

impl Application {
    /// Builds everything and binds both ports (0 picks free ones; see `port`).
    pub async fn build(settings: Settings, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let backends = backends(&settings).await?;
        Self::build_with(settings, metrics, backends, true).await
    }

    /// The same service with only the handlers: no metrics, tracing, auth, limits or
    /// shedding. For the benchmark that measures what the middleware costs.
    pub async fn build_bare(settings: Settings, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        let backends = backends(&settings).await?;
        Self::build_with(settings, metrics, backends, false).await
    }

    async fn build_with(
        settings: Settings,
        metrics: PrometheusHandle,
        backends: Backends,
        middleware: bool,
    ) -> anyhow::Result<Self> {
        telemetry::metrics::spawn_upkeep(metrics.clone(), telemetry::metrics::UPKEEP_EVERY);
        let faults = match settings.backend {
            Backend::Local => Some(Arc::new(FaultSwitch::new(settings.faults))),
            Backend::Gcp => None,
        };
        if settings.faults.any() {
            tracing::warn!(faults = ?settings.faults, "fault injection is ON (drill settings)");
        }
        let backends = match &faults {
            Some(f) => with_faults(backends, f),
            None => backends,
        };
        let pages = Arc::new(Pages::new(
            backends.query.clone(),
            PagesConfig {
                ttl: settings.query_cache_ttl,
                max_bytes: settings.query_cache_max_bytes,
                max_entries: settings.query_cache_max_entries,
                max_in_flight: settings.query_max_in_flight,
                queue_timeout: settings.query_queue_timeout,
            },
            backends.db_system.as_str(),
        ));
        pages.spawn_upkeep(telemetry::metrics::UPKEEP_EVERY);
        // Rows this process commits make the pages they affect stale at once.
        let backends = Backends {
            pipeline: backends.pipeline.map(|p| Pipeline {
                writer: pages.invalidating(p.writer),
                ..p
            }),
            ..backends
        };

        let oidc = if settings.oidc_issuers.is_empty() {
            None
        } else {
            let oidc = http::oidc::Oidc::new(
                &settings.oidc_issuers,
                settings.oidc_audience.as_deref().unwrap_or_default(),
                &settings.oidc_scope_claims,
                &settings.oidc_scope_map,
            )?;
            oidc.start().await;
            oidc.spawn_refresh();
            Some(Arc::new(oidc))
        };
        let auth = match &settings.api_keys_file {
            Some(path) => Auth::from_file(path)?,
            // Tokens only: no key matches, but the service is not open.
            None if oidc.is_some() => Auth::Keys(Vec::new()),
            None => {
                tracing::warn!(
                    "API_KEYS_FILE is not set: authentication is DISABLED (local backend only)"
                );
                Auth::Disabled
            }
        };
        let state = AppState {
            publisher: backends.publisher.clone(),
            query: backends.query.clone(),
            pages,
            messaging_system: backends.messaging_system.as_str(),
            db_system: backends.db_system.as_str(),
            topic: settings
                .pubsub_topic
                .clone()
                .unwrap_or_else(|| "challenge-latam-local-topic".into())
                .into(),
            backend: match settings.backend {
                Backend::Local => "local",
                Backend::Gcp => "gcp",
            },
            auth_mode: auth.mode(),
            oidc: oidc.clone(),
            request_timeout: settings.request_timeout,
            keys_in_flight: Default::default(),
        };
        let router = if middleware {
            let rate_limit =
                RateLimit::new(settings.rate_limit_per_second, settings.rate_limit_burst);
            rate_limit.spawn_eviction(EVICT_EVERY);
            http::router(
                state,
                Protection {
                    auth: Arc::new(auth),
                    oidc,
                    trust_forwarded_for: settings.trust_forwarded_for,
                    max_in_flight: settings.max_in_flight,
                    rate_limit,
                    faults: faults.clone().unwrap_or_default(),
                },
            )
        } else {
            http::api_routes(state)
        };
        let admin_router = http::admin::router(metrics, faults);

        let public = TcpListener::bind((settings.host, settings.port))
            .await
            .map_err(|e| anyhow::anyhow!("binding PORT {}: {e}", settings.port))?;
        let admin = TcpListener::bind((settings.host, settings.admin_port))
            .await
            .map_err(|e| anyhow::anyhow!("binding ADMIN_PORT {}: {e}", settings.admin_port))?;
        Ok(Self {
            public,
            admin,
            router,
            admin_router,
            backends,
            settings,
        })
    }

    /// The public port actually bound.
    pub fn port(&self) -> u16 {
        self.public
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// The admin port actually bound.
    pub fn admin_port(&self) -> u16 {
        self.admin
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for at most
    /// `SHUTDOWN_TIMEOUT_MS`, stops the pipeline after its current batch, and flushes the
    /// publisher.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            public,
            admin,
            router,
            admin_router,
            backends,
            settings,
        } = self;
        let stop_pipeline = CancellationToken::new();
        let pipeline: Option<JoinHandle<()>> = backends.pipeline.clone().map(|p| {
            tokio::spawn(pipeline::run(
                p,
                pipeline::Systems {
                    messaging: backends.messaging_system.as_str(),
                    db: backends.db_system.as_str(),
                },
                settings.request_timeout,
                stop_pipeline.clone(),
            ))
        });

        let stopping = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        let admin_task = {
            let admin_stop = admin_stop.clone();
            tokio::spawn(async move {
                axum::serve(admin, admin_router)
                    .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                    .await
            })
        };

        let signalled = stopping.clone();
        let server = axum::serve(
            public,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown signal: no new connections; draining in-flight requests");
            signalled.cancel();
        });
        let deadline = settings.shutdown_timeout;
        tokio::select! {
            r = server => r?,
            _ = async { stopping.cancelled().await; tokio::time::sleep(deadline).await } => {
                tracing::warn!(deadline_ms = deadline.as_millis() as u64, "drain deadline passed; dropping the requests still in flight");
            }
        }

        stop_pipeline.cancel();
        if let Some(task) = pipeline {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("pipeline did not stop in time; its unacknowledged messages will be redelivered");
            }
        }
        backends.publisher.flush().await;
        admin_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        tracing::info!("stopped");
        Ok(())
    }
}
