//! `spawn_app` and typed request helpers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The key every default app accepts, with both scopes.
pub const KEY_ALL: &str = "test-key-all-scopes-0f3a9c";
/// A key with only `ingest`.
pub const KEY_INGEST: &str = "test-key-ingest-only-77b1";
/// A second key with both scopes, for rate-limit isolation.
pub const KEY_OTHER: &str = "test-key-other-client-c4d2";

/// Which target the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    Gcp,
    Remote,
}

pub fn target() -> Target {
    if std::env::var("TEST_BASE_URL").is_ok_and(|v| !v.is_empty()) {
        Target::Remote
    } else if std::env::var("TEST_BACKEND").as_deref() == Ok("gcp") {
        Target::Gcp
    } else {
        Target::Local
    }
}

/// Prints why a test does not run on this target; returns true when it must be skipped.
pub fn skip_unless(allowed: &[Target], test: &str, why: &str) -> bool {
    let t = target();
    if allowed.contains(&t) {
        return false;
    }
    // Straight to stderr, past the test harness's capture, so a skip is always in the output.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED on {t:?}: {test}: {why}");
    true
}

/// Options for spawning.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run without a keys file (auth disabled; local only).
    pub no_auth: bool,
    /// Reuse this data directory (restart after a crash).
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:port` or the remote URL.
    pub base: String,
    /// `http://127.0.0.1:admin_port` when we run the process.
    pub admin: Option<String>,
    pub client: reqwest::Client,
    /// The key sent by the helpers.
    pub key: String,
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Everything the process printed (stdout and stderr).
    pub output: Arc<Mutex<String>>,
}

fn keys_file(dir: &Path) -> PathBuf {
    let entry = |id: &str, key: &str, scopes: &[&str]| json!({"id": id, "sha256": hex::encode(Sha256::digest(key.as_bytes())), "scopes": scopes});
    let keys = json!([
        entry("client-all", KEY_ALL, &["ingest", "read"]),
        entry("client-ingest", KEY_INGEST, &["ingest"]),
        entry("client-other", KEY_OTHER, &["ingest", "read"]),
    ]);
    let path = dir.join("api-keys.json");
    std::fs::write(&path, keys.to_string()).unwrap();
    path
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_challenge-latam-api")
}

/// Spawns the app with default options.
/// Where a spawned app writes its `LOG_FILE`, under its data directory.
const LOG_FILE: &str = "logs/app.log";

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

/// Spawns the app (or connects to `TEST_BASE_URL`).
pub async fn spawn_with(opts: Options) -> TestApp {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    if target() == Target::Remote {
        return TestApp {
            base: std::env::var("TEST_BASE_URL")
                .unwrap()
                .trim_end_matches('/')
                .to_owned(),
            admin: None,
            client,
            // A static key where one is given; else the workload identity's ID token, which
            // the deployment accepts as an OIDC bearer token (docs/oidc.md).
            key: std::env::var("TEST_API_KEY")
                .ok()
                .filter(|k| !k.is_empty())
                .or_else(|| {
                    std::env::var("TEST_ID_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                })
                .expect("TEST_API_KEY or TEST_ID_TOKEN is required with TEST_BASE_URL"),
            child: None,
            data_dir: PathBuf::new(),
            _tmp: None,
            output: Default::default(),
        };
    }
    let (tmp, data_dir) = match opts.data_dir.clone() {
        Some(d) => (None, d),
        None => {
            let t = tempfile::tempdir().unwrap();
            let d = t.path().to_owned();
            (Some(t), d)
        }
    };
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_PORT", "0")
        .env("DATA_DIR", &data_dir)
        .env("LOG_FORMAT", "json")
        // As on Cloud Run, where the Datadog sidecar tails this file (see `log_file`).
        .env("LOG_FILE", data_dir.join(LOG_FILE))
        .env("RATE_LIMIT_PER_SECOND", "1000")
        .env("RATE_LIMIT_BURST", "1000")
        .env("SHUTDOWN_TIMEOUT_MS", "5000")
        .env("RUST_LOG", "info");
    if target() == Target::Gcp {
        cmd.env("BACKEND", "gcp");
        for k in [
            "PUBSUB_EMULATOR_HOST",
            "BIGQUERY_EMULATOR_HOST",
            "GCP_PROJECT",
            "PUBSUB_TOPIC",
            "PUBSUB_SUBSCRIPTION",
            "BQ_DATASET",
            "BQ_TABLE",
        ] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        // Each app gets its own subscription: the emulator keeps delivering to the streams of
        // apps a test already killed, and those messages would time out into the dead-letter
        // topic instead of reaching the app under test.
        if let (Ok(host), Ok(project), Ok(topic), Ok(dead)) = (
            std::env::var("PUBSUB_EMULATOR_HOST"),
            std::env::var("GCP_PROJECT"),
            std::env::var("PUBSUB_TOPIC"),
            std::env::var("DEAD_LETTER_TOPIC"),
        ) {
            let sub = unique("api-worker");
            let mut body = json!({
                "topic": format!("projects/{project}/topics/{topic}"),
                "ackDeadlineSeconds": 10,
                "deadLetterPolicy": {
                    "deadLetterTopic": format!("projects/{project}/topics/{dead}"),
                    "maxDeliveryAttempts": 5
                }
            });
            // The same retry policy as the shared worker subscription (scripts/emulators.sh
            // prints it; Terraform's 10s..300s by default).
            if let (Ok(min), Ok(max)) = (
                std::env::var("RETRY_MINIMUM_BACKOFF"),
                std::env::var("RETRY_MAXIMUM_BACKOFF"),
            ) {
                body["retryPolicy"] = json!({"minimumBackoff": min, "maximumBackoff": max});
            }
            let r = client
                .put(format!(
                    "http://{host}/v1/projects/{project}/subscriptions/{sub}"
                ))
                .json(&body)
                .send()
                .await
                .expect("create the app's subscription on the emulator");
            assert!(
                r.status().is_success(),
                "create subscription: {}",
                r.status()
            );
            cmd.env("PUBSUB_SUBSCRIPTION", sub);
        }
    }
    if !opts.no_auth {
        cmd.env("API_KEYS_FILE", keys_file(&data_dir));
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the release binary");

    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<(u16, u16)>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "listening" {
                        let _ = tx.send((
                            v["port"].as_u64().unwrap_or(0) as u16,
                            v["admin_port"].as_u64().unwrap_or(0) as u16,
                        ));
                    }
                }
                let mut o = output.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut o = output.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    let (port, admin_port) = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(p) => p,
        Err(_) => {
            let _ = child.kill();
            panic!("app did not start; output:\n{}", output.lock().unwrap());
        }
    };
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        admin: Some(format!("http://127.0.0.1:{admin_port}")),
        client,
        key: KEY_ALL.to_owned(),
        child: Some(child),
        data_dir,
        _tmp: tmp,
        output,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A unique id for this test run, so tests never see each other's records.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

pub fn record(customer: &str, name: &str) -> Value {
    json!({"customerId": customer, "name": name, "orders": [{"orderId": "1", "total": 10.5}], "revenue": 10.5})
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, rb: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut rb = rb;
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Ok(token) = std::env::var("TEST_ID_TOKEN") {
            // Cloud Run IAM takes its token here, leaving Authorization to the API key.
            rb = rb.header("X-Serverless-Authorization", format!("Bearer {token}"));
        }
        rb
    }

    /// POST a JSON value to ingestData with the default key.
    pub async fn ingest(&self, body: &Value) -> reqwest::Response {
        self.ingest_raw(
            body.to_string().into_bytes(),
            "application/json",
            Some(&self.key.clone()),
        )
        .await
    }

    /// POST raw bytes with a content type and an optional key.
    pub async fn ingest_raw(
        &self,
        body: Vec<u8>,
        content_type: &str,
        key: Option<&str>,
    ) -> reqwest::Response {
        let rb = self
            .client
            .post(self.url("/challenge-latam-api/ingestData"))
            .header("content-type", content_type)
            .body(body);
        self.auth(rb, key).send().await.expect("ingest request")
    }

    /// POST and return the message ids, asserting 200.
    pub async fn ingest_ok(&self, body: &Value) -> Vec<String> {
        let r = self.ingest(body).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "ingest failed: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "Data published successfully");
        v["messageIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    }

    /// POST a raw JSON body with an `Idempotency-Key`, as the caller `api_key`.
    pub async fn ingest_keyed(&self, body: &str, key: &str, api_key: &str) -> reqwest::Response {
        let rb = self
            .client
            .post(self.url("/challenge-latam-api/ingestData"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned());
        self.auth(rb, Some(api_key))
            .send()
            .await
            .expect("ingest request")
    }

    /// GET getData with a raw query string and the default key.
    pub async fn get_data(&self, query: &str) -> reqwest::Response {
        self.get_data_as(query, Some(&self.key.clone())).await
    }

    pub async fn get_data_as(&self, query: &str, key: Option<&str>) -> reqwest::Response {
        let url = if query.is_empty() {
            self.url("/challenge-latam-api/getData")
        } else {
            format!("{}?{query}", self.url("/challenge-latam-api/getData"))
        };
        self.auth(self.client.get(url), key)
            .send()
            .await
            .expect("getData request")
    }

    /// Every record of `customer`, following `Link` pages.
    pub async fn all_of(&self, customer: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut query = format!("customerId={}&limit=1000", urlencode(customer));
        loop {
            let r = self.get_data(&query).await;
            assert_eq!(r.status(), 200);
            let next = next_link(&r);
            let page: Vec<Value> = r.json().await.unwrap();
            out.extend(page);
            match next {
                Some(q) => query = q,
                None => return out,
            }
        }
    }

    /// Polls until `customer` has at least `n` records or `timeout` passes.
    pub async fn wait_for(&self, customer: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.all_of(customer).await;
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        let admin = self.admin.as_ref().expect("metrics need a local process");
        self.client
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Patches the drill faults through `PUT /admin/faults` (a JSON object of the fields to
    /// change), asserting that the process took them.
    pub async fn set_faults(&self, patch: &str) {
        let admin = self.admin.as_ref().expect("faults need a local process");
        let r = self
            .client
            .put(format!("{admin}/admin/faults"))
            .header("content-type", "application/json")
            .body(patch.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{patch}: {}", r.text().await.unwrap());
    }

    /// Sum of a metric's samples whose labels include every `labels` pair.
    pub async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }

    /// Messages the API handed to the broker successfully so far.
    pub async fn published(&self) -> f64 {
        self.metric_sum(
            "messaging_client_sent_messages_total",
            &[("error_type", "")],
        )
        .await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("local process");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        let child = self.child.as_mut().expect("local process");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn logs(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The log lines so far, each parsed as JSON (a line that is not JSON fails the test).
    pub fn log_json(&self) -> Vec<Value> {
        json_lines(&self.logs())
    }

    /// What the app wrote to its `LOG_FILE` so far.
    pub fn log_file(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(LOG_FILE)).unwrap_or_default()
    }
}

/// The `messageIds` of a 200 ingest answer; panics with the body on any other.
pub async fn message_ids(r: reqwest::Response) -> Vec<String> {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "ingest failed: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["messageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// Rows of `customer` as stored in the BigQuery emulator's table, duplicates included
/// (`TEST_BACKEND=gcp` only): what `getData` deduplicates.
pub async fn stored_rows_on_the_emulator(customer: &str) -> usize {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let (host, project) = (var("BIGQUERY_EMULATOR_HOST"), var("GCP_PROJECT"));
    let sql = format!(
        "SELECT COUNT(*) FROM `{project}.{}.{}` WHERE customerId = @customer",
        var("BQ_DATASET"),
        var("BQ_TABLE")
    );
    let body = json!({
        "query": sql,
        "useLegacySql": false,
        "parameterMode": "NAMED",
        "queryParameters": [{
            "name": "customer",
            "parameterType": {"type": "STRING"},
            "parameterValue": {"value": customer}
        }]
    });
    let v: Value = reqwest::Client::new()
        .post(format!(
            "http://{host}/bigquery/v2/projects/{project}/queries"
        ))
        .json(&body)
        .send()
        .await
        .expect("query the BigQuery emulator")
        .json()
        .await
        .unwrap();
    v["rows"][0]["f"][0]["v"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer: {v}"))
}

/// Every line of `text` as JSON; panics naming the first line that is not.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string of the `Link: <...>; rel="next"` header, if any.
pub fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().ok()?;
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    let url = &link[start..end];
    url.split_once('?').map(|(_, q)| q.to_owned())
}

/// Parses Prometheus text and sums the samples of `name` matching `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for (metric, sample_labels, value) in samples(text) {
        if metric == name
            && labels
                .iter()
                .all(|(k, v)| sample_labels.get(*k).map(String::as_str) == Some(*v))
        {
            sum += value;
        }
    }
    sum
}

/// Every sample: (name, labels, value).
pub fn samples(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let value: f64 = match value.parse() {
            Ok(v) => v,
            Err(_) => continue,
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], &head[i + 1..head.len() - 1]),
            None => (head, ""),
        };
        let mut map = HashMap::new();
        let mut rest = labels;
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_owned();
            let after = &rest[eq + 2..];
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            map.insert(key, after[..end].to_owned());
            rest = &after[(end + 1).min(after.len())..];
        }
        out.push((name.to_owned(), map, value));
    }
    out
}
