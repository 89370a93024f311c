//! The service's own handlers and backends with no middleware, for `loadtests/bench.sh`: the
//! same `Application` the binary builds, through `Application::build_bare`, so the only
//! difference from the release binary is the middleware stack (metrics and tracing of each
//! request, auth, the rate limiter, shedding, faults) and the log subscriber. The benchmark
//! loads both in one run; the ratio is what the middleware costs.
//!
//! Takes the binary's settings (`PORT`, `ADMIN_PORT`, `DATA_DIR`, ...).
//! Run: `PORT=18091 ADMIN_PORT=18191 DATA_DIR=/tmp/ho cargo run --release --example handlers_only`

use challenge_latam_api::config::Settings;
use challenge_latam_api::startup::Application;
use challenge_latam_api::telemetry;

/// The service's allocator (see src/main.rs for why and what it costs): both builds of the
/// benchmark must allocate alike for the comparison to isolate the middleware.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    // The metrics recorder stays installed: the adapters record their own operation metrics
    // in both builds, so the comparison isolates the HTTP middleware.
    let metrics = telemetry::metrics::install(None)?;
    let app = Application::build_bare(settings, metrics).await?;
    // The binary's `listening` line, in its JSON shape, so loadtests/lib/service.py reads the
    // ports of a port-0 start the same way for both builds.
    eprintln!(
        r#"{{"message":"listening","target":"handlers_only","port":{},"admin_port":{}}}"#,
        app.port(),
        app.admin_port()
    );
    app.run_until(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    })
    .await
}
