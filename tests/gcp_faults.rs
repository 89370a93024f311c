//! Faults on `BACKEND=gcp`, against real emulators that each test starts for itself (through
//! `scripts/emulators.sh`, on free loopback ports, in its own state directory) and stops when
//! it ends, by the PIDs the script recorded:
//!
//! - the Pub/Sub emulator dies: ingest answers 503 with `Retry-After` within the deadline and
//!   `/readyz` names the broker; it comes back: the same process publishes again, and its
//!   pull worker writes rows again, without a restart;
//! - the BigQuery emulator dies: `getData` answers 503 with `Retry-After` and `/readyz` names
//!   the store; it comes back: `getData` answers again;
//! - a message the worker rejects (a payload that is not a record) is nacked and dead-lettered
//!   after the subscription's maximum attempts; a valid record while the table is missing is
//!   not: the worker holds it (no nack, no attempt spent) and stores it once the table is back.
//!
//! Tests take turns (a lock): each one runs two emulators, and the machine has two cores.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use common::{get_json, get_text, json_of, keys_file, metric_sum, samples, Service, GCP_SETTINGS};

const KEY: &str = "gcp-faults-test-key-5be1";
/// The service's dependency deadline in these tests.
const REQUEST_TIMEOUT_MS: u64 = 3000;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Emulators started by one test, stopped on drop.
struct Emulators {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Emulators {
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(repo().join("scripts/emulators.sh"))
            .args(args)
            .env("EMULATOR_DIR", self.dir.path())
            .env("PUBSUB_PORT", "0")
            .env("BQ_PORT", "0")
            .env("BQ_GRPC_PORT", "0")
            // A short retry policy, so that a rejected message reaches the dead-letter topic
            // in seconds rather than Terraform's minutes (10s doubling to 300s); the emulator
            // honours it the same way.
            .env("RETRY_MINIMUM_BACKOFF", "1s")
            .env("RETRY_MAXIMUM_BACKOFF", "2s")
            .output()
            .expect("run scripts/emulators.sh");
        assert!(
            out.status.success(),
            "scripts/emulators.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start() -> Self {
        let mut e = Emulators {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
        };
        let printed = e.script(&["start"]);
        for line in printed.lines() {
            if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                e.env.insert(k.to_owned(), v.to_owned());
            }
        }
        assert!(e.env.contains_key("PUBSUB_EMULATOR_HOST"), "{printed}");
        e
    }

    fn var(&self, k: &str) -> &str {
        &self.env[k]
    }

    fn pubsub(&self, path: &str) -> String {
        format!(
            "http://{}/v1/projects/{}/{path}",
            self.var("PUBSUB_EMULATOR_HOST"),
            self.var("GCP_PROJECT")
        )
    }

    fn bigquery(&self, path: &str) -> String {
        format!(
            "http://{}/bigquery/v2/projects/{}/{path}",
            self.var("BIGQUERY_EMULATOR_HOST"),
            self.var("GCP_PROJECT")
        )
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/emulators.sh"))
            .arg("stop")
            .env("EMULATOR_DIR", self.dir.path())
            .status();
    }
}

/// The release binary on BACKEND=gcp with the worker subscription, on free ports.
struct App {
    service: Service,
    base: String,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl App {
    fn spawn(emu: &Emulators) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_file(dir.path(), &[("faults", KEY, &["ingest", "read"])]);
        let mut env: Vec<(&str, std::ffi::OsString)> = vec![
            ("BACKEND", "gcp".into()),
            ("DATA_DIR", dir.path().into()),
            ("API_KEYS_FILE", keys.into()),
            ("REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS.to_string().into()),
            ("SHUTDOWN_TIMEOUT_MS", "2000".into()),
        ];
        for k in GCP_SETTINGS {
            env.push((k, emu.var(k).into()));
        }
        let service = Service::start(env);
        App {
            base: service.base.clone(),
            admin: service.admin.clone(),
            service,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    async fn ingest(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/challenge-latam-api/ingestData", self.base))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get_data(&self, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/challenge-latam-api/getData?{query}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
    }

    async fn readyz(&self) -> (u16, Value) {
        get_json(&self.client, &format!("{}/readyz", self.base)).await
    }

    async fn metrics(&self) -> String {
        get_text(&self.client, &format!("{}/metrics", self.admin)).await
    }

    fn log(&self) -> String {
        self.service.output()
    }
}

fn record(customer: &str) -> Value {
    json!({"customerId": customer, "name": "Ronald Ramos", "orders": [{"orderId": "1", "total": 50.0}], "revenue": 50.0})
}

/// An id no other test run shares (emulators are fresh per test, but be safe).
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{nanos}-{n}")
}

/// Polls `f` every 250 ms until it returns Some, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, log: impl Fn() -> String, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > until {
            panic!(
                "{what}: not within {limit:?}; service log tail:\n{}",
                tail(&log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True when `customer`'s records appear in getData.
async fn stored(app: &App, customer: &str) -> Option<Vec<Value>> {
    let r = app.get_data(&format!("customerId={customer}")).await;
    if r.status() != 200 {
        return None;
    }
    let rows: Vec<Value> = r.json().await.ok()?;
    (!rows.is_empty()).then_some(rows)
}

/// With the dependency `down` stopped, `request` (the `route`) answers 503 with Retry-After
/// within the call deadline (and a second), and /readyz is 503 naming `down`, not `up`.
async fn refused_in_time(
    app: &App,
    route: &str,
    request: impl std::future::Future<Output = reqwest::Response>,
    down: &str,
    up: &str,
) {
    let started = Instant::now();
    let r = request.await;
    let took = started.elapsed();
    assert_eq!(
        r.status(),
        503,
        "{route} with the {down} down: {}",
        app.log()
    );
    assert!(
        r.headers().get("retry-after").is_some(),
        "503 without Retry-After"
    );
    assert!(
        took < Duration::from_millis(REQUEST_TIMEOUT_MS + 1000),
        "{route} took {took:?} with the {down} down (deadline {REQUEST_TIMEOUT_MS} ms)"
    );
    let (status, body) = app.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body[down], "ok", "{body}");
    assert_eq!(body[up], "ok", "{body}");
}

#[tokio::test]
async fn ingest_answers_503_while_pubsub_is_down_and_recovers_without_a_restart() {
    let _turn = TURN.lock().await;
    let emu = Emulators::start();
    let app = App::spawn(&emu);
    let before = unique("before");
    assert_eq!(
        app.ingest(&record(&before)).await.status(),
        200,
        "{}",
        app.log()
    );
    eventually(
        Duration::from_secs(30),
        "first record stored",
        || app.log(),
        || stored(&app, &before),
    )
    .await;

    emu.script(&["stop-one", "pubsub"]);
    refused_in_time(
        &app,
        "ingest",
        app.ingest(&record(&unique("down"))),
        "broker",
        "store",
    )
    .await;

    emu.script(&["start-one", "pubsub"]);
    let after = unique("after");
    eventually(
        Duration::from_secs(60),
        "ingest accepted again",
        || app.log(),
        || async { (app.ingest(&record(&after)).await.status() == 200).then_some(()) },
    )
    .await;
    // The worker's pulls resumed on their own: the new record reaches the table.
    let rows = eventually(
        Duration::from_secs(60),
        "record stored after recovery",
        || app.log(),
        || stored(&app, &after),
    )
    .await;
    assert_eq!(rows[0]["customerId"], after.as_str());
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn get_data_answers_503_while_bigquery_is_down_and_recovers_without_a_restart() {
    let _turn = TURN.lock().await;
    let emu = Emulators::start();
    let app = App::spawn(&emu);
    assert_eq!(app.get_data("limit=1").await.status(), 200, "{}", app.log());

    // The emulator keeps rows with the same insertId (BigQuery would drop the second within
    // about a minute, the BigQuery subscription may write a redelivered message again): the
    // query must return the message once anyway.
    let twice = unique("twice");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let row = json!({"customerId": twice, "name": "n", "orders": [], "message_id": format!("m-{twice}"),
        "publish_time": chrono::DateTime::from_timestamp_micros(now_us - 1_000_000).unwrap().to_rfc3339(),
        "subscription_name": "s", "attributes": "{}"});
    let r = reqwest::Client::new()
        .post(emu.bigquery(&format!(
            "datasets/{}/tables/{}/insertAll",
            emu.var("BQ_DATASET"),
            emu.var("BQ_TABLE")
        )))
        .json(&json!({"rows": [{"insertId": "a", "json": row}, {"insertId": "b", "json": row}]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "insertAll into the emulator: {}",
        r.status()
    );
    let rows = stored(&app, &twice)
        .await
        .expect("the duplicated row is queryable");
    assert_eq!(
        rows.len(),
        1,
        "a message stored twice came back twice: {rows:?}"
    );

    emu.script(&["stop-one", "bigquery"]);
    // A page nobody asked for yet: a cached one would still be served within its TTL.
    let page = format!("customerId={}", unique("down"));
    refused_in_time(&app, "getData", app.get_data(&page), "store", "broker").await;

    emu.script(&["start-one", "bigquery"]);
    eventually(
        Duration::from_secs(60),
        "getData answers again",
        || app.log(),
        || async {
            let fresh = format!("customerId={}", unique("up"));
            (app.get_data(&fresh).await.status() == 200).then_some(())
        },
    )
    .await;
    let who = unique("back");
    assert_eq!(app.ingest(&record(&who)).await.status(), 200);
    eventually(
        Duration::from_secs(60),
        "record stored after recovery",
        || app.log(),
        || stored(&app, &who),
    )
    .await;
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
}

/// Pulls the dead-letter audit subscription until a message whose data satisfies `wanted`
/// shows up; returns its attributes.
async fn dead_lettered(emu: &Emulators, app: &App, wanted: impl Fn(&[u8]) -> bool) -> Value {
    let client = reqwest::Client::new();
    let url = emu.pubsub(&format!(
        "subscriptions/{}:pull",
        emu.var("DEAD_LETTER_SUBSCRIPTION")
    ));
    eventually(
        Duration::from_secs(90),
        "message in the dead-letter topic",
        || app.log(),
        || async {
            let r: Value = client
                .post(&url)
                .json(&json!({"maxMessages": 50}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            for m in r["receivedMessages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(m["message"]["data"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                if wanted(&data) {
                    return Some(m["message"]["attributes"].clone());
                }
            }
            None
        },
    )
    .await
}

#[tokio::test]
async fn messages_the_worker_cannot_store_end_in_the_dead_letter_topic() {
    let _turn = TURN.lock().await;
    let emu = Emulators::start();
    let app = App::spawn(&emu);
    let client = reqwest::Client::new();

    // 1. A payload that is not a record, published straight to the topic (bypassing the
    //    API's validation, as another publisher could).
    let poison = format!("not a record {}", unique("poison"));
    let r = client
        .post(emu.pubsub(&format!("topics/{}:publish", emu.var("PUBSUB_TOPIC"))))
        .json(&json!({"messages": [{"data": base64::engine::general_purpose::STANDARD.encode(&poison)}]}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "publish to the emulator: {}",
        r.status()
    );
    let attrs = dead_lettered(&emu, &app, |d| d == poison.as_bytes()).await;
    println!("poison message dead-lettered with attributes {attrs}");
    // The worker moved it itself on its last attempt, so the reason is in the message (and so
    // in the dead-letter row) and in a warning with its message id.
    let reason = attrs["dead_letter_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("payload is not a record"),
        "no reason in the dead-letter attributes {attrs}"
    );
    let source_id = attrs["dead_letter_source_message_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!source_id.is_empty(), "no source message id in {attrs}");
    // (Logs are written in batches: the line may trail the publish by a moment.)
    eventually(
        Duration::from_secs(10),
        "a warning with the reason and the message id",
        || app.log(),
        || async {
            app.log()
                .lines()
                .any(|l| {
                    l.contains("moved to the dead-letter topic with the reason")
                        && l.contains(&source_id)
                        && l.contains("payload is not a record")
                })
                .then_some(())
        },
    )
    .await;

    // 2. A valid record while the table is gone: every insertAll fails (404, the store is
    //    unavailable), so the worker must hold the message instead of nacking it: with the
    //    old fast nacks its 5 attempts were spent and it was dead-lettered in under a second.
    //    Longer than 5 attempts with this retry policy take (1 + 2 + 2 + 2 s) it must still be
    //    neither stored nor dead-lettered; once the table is back it must be stored.
    let r = client
        .delete(emu.bigquery(&format!(
            "datasets/{}/tables/{}",
            emu.var("BQ_DATASET"),
            emu.var("BQ_TABLE")
        )))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "delete the table: {}", r.status());
    let held = unique("held");
    assert_eq!(
        app.ingest(&record(&held)).await.status(),
        200,
        "{}",
        app.log()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let needle = held.clone();
    let audit = emu.pubsub(&format!(
        "subscriptions/{}:pull",
        emu.var("DEAD_LETTER_SUBSCRIPTION")
    ));
    let pulled = json_of(
        client
            .post(&audit)
            .json(&json!({"maxMessages": 50, "returnImmediately": true})),
    )
    .await;
    let wrongly_dead = pulled["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .any(|m| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(m["message"]["data"].as_str().unwrap_or(""))
                .unwrap_or_default();
            String::from_utf8_lossy(&data).contains(&needle)
        });
    assert!(
        !wrongly_dead,
        "a valid record was dead-lettered while the table was missing:\n{}",
        tail(&app.log(), 30)
    );
    assert!(
        app.log().contains("store unavailable; holding the rows"),
        "the worker did not report holding the rows:\n{}",
        tail(&app.log(), 30)
    );
    // The table comes back (BigQuery restarted and provisioned again): the held record lands.
    emu.script(&["stop-one", "bigquery"]);
    emu.script(&["start-one", "bigquery"]);
    eventually(
        Duration::from_secs(60),
        "held record stored once the table is back",
        || app.log(),
        || stored(&app, &held),
    )
    .await;

    let metrics = app.metrics().await;
    let dead = metric_sum(&metrics, "pipeline_dead_lettered_messages_total", &[]);
    // The poison message only: the held record must not have been counted.
    assert_eq!(dead, 1.0, "pipeline_dead_lettered_messages_total = {dead}");
    let failed_inserts = samples(&metrics).iter().any(|(name, labels, _)| {
        name == "db_client_operation_duration_seconds_count"
            && labels.get("db_system_name").map(String::as_str) == Some("gcp.bigquery")
            && labels.get("db_operation_name").map(String::as_str) == Some("insert")
            && labels.get("error_type").is_some_and(|e| !e.is_empty())
    });
    assert!(
        failed_inserts,
        "failed inserts are not in the metrics:\n{metrics}"
    );
}
