//! `spawn_app` and typed request helpers.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use crate::common::{binary, metric_sum, samples};
use crate::common::{get_json, get_text, keys_file, Service, GCP_SETTINGS};

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

/// The tests that do not run on every target, with the targets each runs on and why.
const SKIPS: &str = include_str!("skips.txt");

/// (test, targets it runs on, why not on the others) of every entry of skips.txt.
pub fn listed_skips() -> Vec<(&'static str, Vec<Target>, &'static str)> {
    SKIPS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '|').map(str::trim).collect();
            let targets = f[1]
                .split(',')
                .map(|t| match t {
                    "local" => Target::Local,
                    "gcp" => Target::Gcp,
                    "remote" => Target::Remote,
                    other => panic!("skips.txt: unknown target {other:?} in {l:?}"),
                })
                .collect();
            (f[0], targets, f[2])
        })
        .collect()
}

/// True when `test` must not run on this target, as tests/api/skips.txt says (printed, so a
/// skip is always in the output); panics for a test that list does not name.
pub fn skip_here(test: &str) -> bool {
    let (_, runs_on, why) = listed_skips()
        .into_iter()
        .find(|(name, _, _)| *name == test)
        .unwrap_or_else(|| {
            panic!("{test} is not in tests/api/skips.txt: a test skips only as that list says")
        });
    let t = target();
    if runs_on.contains(&t) {
        return false;
    }
    // Straight to stderr, past the test harness's capture; scripts/checks/60-gcp-emulators.sh
    // compares these lines with the list.
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
    /// The process, when we run it (dropped, so killed, before its data directory goes).
    pub process: Option<Service>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Everything the process printed (stdout and stderr).
    pub output: Arc<Mutex<String>>,
}

/// Where a spawned app writes its `LOG_FILE`, under its data directory.
const LOG_FILE: &str = "logs/app.log";

/// Spawns the app with default options.
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
            process: None,
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
    let mut env: Vec<(String, OsString)> = vec![
        ("DATA_DIR".into(), data_dir.clone().into()),
        // As on Cloud Run, where the Datadog sidecar tails this file (see `log_file`).
        ("LOG_FILE".into(), data_dir.join(LOG_FILE).into()),
        ("SHUTDOWN_TIMEOUT_MS".into(), "5000".into()),
    ];
    if target() == Target::Gcp {
        env.push(("BACKEND".into(), "gcp".into()));
        for k in GCP_SETTINGS {
            if let Ok(v) = std::env::var(k) {
                env.push((k.into(), v.into()));
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
            env.push(("PUBSUB_SUBSCRIPTION".into(), sub.into()));
        }
    }
    if !opts.no_auth {
        let keys = keys_file(
            &data_dir,
            &[
                ("client-all", KEY_ALL, &["ingest", "read"]),
                ("client-ingest", KEY_INGEST, &["ingest"]),
                ("client-other", KEY_OTHER, &["ingest", "read"]),
            ],
        );
        env.push(("API_KEYS_FILE".into(), keys.into()));
    }
    env.extend(opts.env.into_iter().map(|(k, v)| (k, v.into())));
    let process = Service::start(env);
    TestApp {
        base: process.base.clone(),
        admin: Some(process.admin.clone()),
        client,
        key: KEY_ALL.to_owned(),
        output: process.output.clone(),
        process: Some(process),
        data_dir,
        _tmp: tmp,
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
        message_ids(self.ingest(body).await).await
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
        get_text(&self.client, &format!("{admin}/metrics")).await
    }

    /// `/readyz`: its status and its JSON body.
    pub async fn readyz(&self) -> (u16, Value) {
        get_json(&self.client, &self.url("/readyz")).await
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
        self.process.as_mut().expect("local process").terminate()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        self.process.as_mut().expect("local process").kill();
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
    assert_eq!(v["status"], "Data published successfully");
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

#[test]
fn every_listed_skip_is_called_once_and_every_call_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // The quoted name after `skip_here(`, on the next line where rustfmt wraps it.
            for part in text.split("skip_here(").skip(1) {
                let Some(rest) = part.trim_start().strip_prefix('"') else {
                    continue;
                };
                let name = rest.split('"').next().unwrap();
                // A test's name, not this test's own search strings.
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    calls.push(name.to_owned());
                }
            }
        }
    }
    let listed: Vec<&str> = listed_skips().into_iter().map(|(n, _, _)| n).collect();
    for name in &listed {
        let n = calls.iter().filter(|c| c == name).count();
        assert_eq!(n, 1, "{name} is in skips.txt but called {n} times");
    }
    for call in &calls {
        assert!(
            listed.contains(&call.as_str()),
            "skip_here(\"{call}\") is not in skips.txt"
        );
    }
}
