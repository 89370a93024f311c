//! What a JSON log line costs, through the service's own layer and writer
//! (`telemetry::logging::json_layer`): `threads` threads each log `lines` lines shaped like the
//! per-request line, pausing `gap_us` between lines (a server's lines arrive spread out, and a
//! writer that is woken per line pays most then). Prints, on stderr:
//! - the time a logging thread spends in one `info!` (what a request pays),
//! - the writer thread's CPU time per line and its wake-ups per line (voluntary context
//!   switches), read from `/proc/self/task`.
//!
//! Run with stdout discarded (figures go to stderr), on a quiet machine:
//! `cargo run --release --example log_writer -- [threads=2] [lines=100000] [gap_us=0] >/dev/null`

use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let lines: u32 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let gap = Duration::from_micros(args.next().map_or(Ok(0), |a| a.parse())?);

    let (layer, guard) = challenge_latam_api::telemetry::logging::json_layer(None, None)?;
    tracing_subscriber::registry().with(layer).try_init()?;

    let loggers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::Builder::new()
                .name(format!("logger-{t}"))
                .spawn(move || {
                    let mut inside = Duration::ZERO;
                    for i in 0..lines {
                        let start = Instant::now();
                        tracing::info!(
                            http.request.method = "POST",
                            http.route = "/ingest",
                            url.scheme = "http",
                            url.path = "/ingest",
                            client.key_id = "bench",
                            http.response.status_code = 200u64,
                            latency_ms = 0.523,
                            line = i,
                            "request served"
                        );
                        inside += start.elapsed();
                        if !gap.is_zero() {
                            std::thread::sleep(gap);
                        }
                    }
                    inside
                })
        })
        .collect::<Result<_, _>>()?;
    let inside: Duration = loggers
        .into_iter()
        .map(|t| t.join().expect("a logger panicked"))
        .sum();
    // Give the writer its last interval, so the figures count every line written.
    std::thread::sleep(Duration::from_millis(100));
    let writer = writer_thread()?;
    drop(guard);

    let total = f64::from(lines) * threads as f64;
    eprintln!(
        "{threads} threads x {lines} lines, gap {gap:?}: {:.0} ns in info! per line; writer thread ({}) {:.0} ns CPU and {:.3} wake-ups per line",
        inside.as_nanos() as f64 / total,
        writer.name,
        writer.cpu.as_nanos() as f64 / total,
        writer.wakeups as f64 / total,
    );
    Ok(())
}

/// The writer thread's CPU time and voluntary context switches so far.
struct WriterThread {
    name: String,
    cpu: Duration,
    wakeups: u64,
}

/// The one thread that is neither the main thread nor a logger.
fn writer_thread() -> anyhow::Result<WriterThread> {
    let me = std::process::id().to_string();
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let name = std::fs::read_to_string(dir.join("comm"))?.trim().to_owned();
        if name.starts_with("logger-") || dir.ends_with(&me) {
            continue;
        }
        // utime and stime are fields 14 and 15, in clock ticks (100 per second here); the
        // command name (field 2) has no spaces in it for these threads.
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let fields: Vec<&str> = stat.split_whitespace().collect();
        let ticks: u64 = fields[13].parse::<u64>()? + fields[14].parse::<u64>()?;
        let status = std::fs::read_to_string(dir.join("status"))?;
        let wakeups = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .ok_or_else(|| anyhow::anyhow!("no voluntary_ctxt_switches"))?
            .trim()
            .parse()?;
        return Ok(WriterThread {
            name,
            cpu: Duration::from_millis(ticks * 10),
            wakeups,
        });
    }
    anyhow::bail!("no writer thread")
}
