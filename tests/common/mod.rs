//! What the two black-box suites share (tests/api and tests/gcp_faults.rs): the release binary
//! started on port 0, its ports read from its `listening` log line (the way
//! loadtests/lib/service.py starts it for the scripts), its keys file, and its admin port's
//! Prometheus text, read by the `prometheus-parse` crate, and the HTTP reads both make of it
//! (`/readyz` as JSON, `/metrics` as text).

// Each suite compiles its own copy of this module and uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_challenge-latam-api")
}

/// What a service on `BACKEND=gcp` is given of the emulators scripts/emulators.sh started.
pub const GCP_SETTINGS: [&str; 7] = [
    "PUBSUB_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "GCP_PROJECT",
    "PUBSUB_TOPIC",
    "PUBSUB_SUBSCRIPTION",
    "BQ_DATASET",
    "BQ_TABLE",
];

/// One run of the release binary; killed (and reaped) on drop.
pub struct Service {
    pub child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// `http://127.0.0.1:admin_port`.
    pub admin: String,
    /// Everything the process printed (stdout and stderr), line by line.
    pub output: Arc<Mutex<String>>,
}

impl Service {
    /// Starts the binary on a clean environment: loopback, port 0 for both listeners, JSON
    /// logs at info, rate limits no test trips unless it sets its own; then `env`, which wins.
    /// Returns once the process has logged `listening` with the ports it bound.
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(env: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("ADMIN_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("RATE_LIMIT_PER_SECOND", "1000")
            .env("RATE_LIMIT_BURST", "1000")
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the release binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
        let streams: [(Box<dyn Read + Send>, _); 2] = [
            (Box::new(child.stdout.take().unwrap()), Some(tx)),
            (Box::new(child.stderr.take().unwrap()), None),
        ];
        for (stream, tx) in streams {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Ok(v)) = (&tx, serde_json::from_str::<Value>(&line)) {
                        if v["message"] == "listening" {
                            let _ = tx.send((
                                v["port"].as_u64().unwrap_or(0),
                                v["admin_port"].as_u64().unwrap_or(0),
                            ));
                        }
                    }
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let (port, admin) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the service did not start; output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            output,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes an `API_KEYS_FILE` in `dir` of `(client id, key, scopes)` entries; returns its path.
pub fn keys_file(dir: &Path, clients: &[(&str, &str, &[&str])]) -> PathBuf {
    let keys: Vec<Value> = clients
        .iter()
        .map(|(id, key, scopes)| {
            json!({"id": id, "sha256": hex::encode(Sha256::digest(key.as_bytes())), "scopes": scopes})
        })
        .collect();
    let path = dir.join("api-keys.json");
    std::fs::write(&path, Value::from(keys).to_string()).unwrap();
    path
}

/// Every sample of a Prometheus text exposition as (name, labels, value), as the text has
/// them: `prometheus-parse` gathers a histogram's buckets into one value, so they are spread
/// back into `<name>_bucket` samples with their `le` (written as Prometheus 2 writes it: `1`,
/// `0.25`, `+Inf`).
pub fn samples(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    use prometheus_parse::{Scrape, Value as V};
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("a Prometheus text exposition");
    let bound = |b: f64| {
        if b == f64::INFINITY {
            "+Inf".to_owned()
        } else {
            b.to_string()
        }
    };
    let mut out = Vec::new();
    for s in scrape.samples {
        let labels: HashMap<String, String> = (*s.labels).clone();
        match s.value {
            V::Counter(v) | V::Gauge(v) | V::Untyped(v) => out.push((s.metric, labels, v)),
            V::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.insert("le".into(), bound(b.less_than));
                    out.push((format!("{}_bucket", s.metric), l, b.count));
                }
            }
            V::Summary(quantiles) => {
                for q in quantiles {
                    let mut l = labels.clone();
                    l.insert("quantile".into(), q.quantile.to_string());
                    out.push((s.metric.clone(), l, q.count));
                }
            }
        }
    }
    out
}

/// Sum of the samples of `name` whose labels include every `labels` pair.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Sends `request` and reads the answer's body as JSON; panics if either fails.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// GET `url`: the status and the body as JSON (`Null` when it is not JSON), so a test can
/// check a 503's body as well as a 200's (`/readyz`).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// GET `url`'s body as text (the admin port's `/metrics`).
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}
