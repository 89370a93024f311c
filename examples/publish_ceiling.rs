//! The ceiling for ingest on `BACKEND=gcp` (`scripts/emulators/bench.sh`): the service's own
//! Pub/Sub adapter (the official `google-cloud-pubsub` client with the service's batching and
//! retry settings) publishing single records straight to the emulator from `clients` closed
//! loops, with no HTTP, parsing, auth or telemetry in front. What the service reaches with as
//! many HTTP connections, measured in the same run, is then a share of this.
//!
//! Run (emulator variables as `scripts/emulators.sh start` prints them):
//! `cargo run --release --example publish_ceiling -- [clients=64] [seconds=15]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use challenge_latam_api::adapters::gcp::PubSubPublisher;
use challenge_latam_api::ports::{Attributes, OutgoingMessage, Publisher};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(15), |a| a.parse())?;
    let var = |name: &str| std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set"));
    let host = var("PUBSUB_EMULATOR_HOST")?;
    let topic = format!(
        "projects/{}/topics/{}",
        var("GCP_PROJECT")?,
        var("PUBSUB_TOPIC")?
    );
    let publisher = Arc::new(
        PubSubPublisher::connect(
            &topic,
            Some(&format!("http://{host}")),
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .await?,
    );

    let warm_until = Instant::now() + Duration::from_secs(2);
    let until = warm_until + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                let (mut latencies_us, mut errors) = (Vec::new(), 0u64);
                let mut attributes = Attributes::new();
                attributes.insert("content_type".into(), "application/json".into());
                attributes.insert("schema_version".into(), "1".into());
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let data = format!(
                        r#"{{"customerId":"ceiling-{client}","name":"Ronald Ramos","orders":[{{"orderId":"{n}","total":50.0}}],"revenue":50.0}}"#
                    );
                    let message = OutgoingMessage {
                        data: data.into_bytes().into(),
                        attributes: attributes.clone(),
                    };
                    let started = Instant::now();
                    let ok = publisher.publish(vec![message], None).await.is_ok();
                    if started >= warm_until {
                        latencies_us.push(started.elapsed().as_micros() as u64);
                        errors += u64::from(!ok);
                    }
                }
                (latencies_us, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "bench: {:<14} {:8.1} req/s  p50 {:7.2} ms  p99 {:7.2} ms  errors {errors}  ({} publishes, {clients} clients)",
        "ceiling",
        latencies.len() as f64 / seconds as f64,
        at(0.5) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0,
        latencies.len()
    );
    publisher.flush().await;
    Ok(())
}
