//! What was acknowledged is never lost: crashes, poison rows, graceful shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::helpers::*;

#[tokio::test]
async fn every_acknowledged_record_survives_sigkill_with_ingest_in_flight() {
    if skip_here("every_acknowledged_record_survives_sigkill_with_ingest_in_flight") {
        return;
    }
    let mut app = spawn_app().await;
    let customer = unique("crash");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let app_base = app.base.clone();
    let client = app.client.clone();

    // 8 writers ingest as fast as they can; the process is killed while they run.
    let mut writers = Vec::new();
    for w in 0..8 {
        let (acked, client, base, customer) = (
            acked.clone(),
            client.clone(),
            app_base.clone(),
            customer.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let body = json!([
                    record(&customer, &format!("w{w}-{i}")),
                    record(&customer, &format!("w{w}-{i}b"))
                ]);
                let r = client
                    .post(format!("{base}/challenge-latam-api/ingestData"))
                    .bearer_auth(KEY_ALL)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                let Ok(r) = r else { break };
                if r.status() != 200 {
                    break;
                }
                let Ok(v) = r.json::<Value>().await else {
                    break;
                };
                let ids: Vec<String> = v["messageIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect();
                acked.lock().await.extend(ids);
            }
        }));
    }
    while acked.lock().await.len() < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked: HashSet<String> = acked.lock().await.iter().cloned().collect();

    let restarted = spawn_with(Options {
        data_dir: Some(app.data_dir.clone()),
        ..Default::default()
    })
    .await;
    let rows = restarted
        .wait_for(&customer, acked.len(), Duration::from_secs(60))
        .await;
    let stored: HashSet<String> = rows
        .iter()
        .map(|r| r["messageId"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = acked.difference(&stored).collect();
    println!(
        "acknowledged {} / stored {} after SIGKILL and restart",
        acked.len(),
        stored.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(rows.len(), stored.len(), "a record is returned twice");
}

#[tokio::test]
async fn a_row_the_store_rejects_is_dead_lettered_after_five_attempts_and_later_rows_still_flow() {
    if skip_here(
        "a_row_the_store_rejects_is_dead_lettered_after_five_attempts_and_later_rows_still_flow",
    ) {
        return;
    }
    let app = spawn_app().await;
    // A real failure in the real store: a trigger that rejects one customer's rows.
    {
        let conn = rusqlite::Connection::open(app.data_dir.join("store.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER reject_poison BEFORE INSERT ON records
             WHEN NEW.customerId LIKE 'poison-%'
             BEGIN SELECT RAISE(ABORT, 'poison row rejected by the test trigger'); END;",
        )
        .unwrap();
    }
    let poison = unique("poison");
    let good = unique("good");
    // Same batch, so the pipeline's batch write fails and must fall back to row by row.
    let ids = app
        .ingest_ok(&json!([
            record(&good, "before"),
            record(&poison, "bad"),
            record(&good, "same batch")
        ]))
        .await;
    let poison_id = ids[1].clone();
    app.ingest_ok(&record(&good, "after")).await;

    let rows = app.wait_for(&good, 3, Duration::from_secs(30)).await;
    assert_eq!(
        rows.len(),
        3,
        "records beside and after the poison row must be stored"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let conn = rusqlite::Connection::open(app.data_dir.join("broker.db")).unwrap();
        let found = conn
            .query_row(
                "SELECT data, delivery_attempts, last_error FROM dead_letters WHERE message_id = ?1",
                [&poison_id],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?)),
            )
            .ok();
        if found.is_some() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (data, attempts, error) = dead.expect("the poison message was never dead-lettered");
    let payload: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(payload["customerId"], poison.as_str());
    assert_eq!(attempts, 5);
    assert!(error.contains("poison row rejected"), "last error: {error}");
    assert!(app.all_of(&poison).await.is_empty());
    assert_eq!(
        app.metric_sum("pipeline_dead_lettered_messages_total", &[])
            .await,
        1.0
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    if skip_here("sigterm_lets_in_flight_requests_finish_and_exits_zero") {
        return;
    }
    // Every API request takes 700 ms, so requests are surely in flight at SIGTERM.
    let mut app = spawn_with(Options::default().env("FAULT_HTTP_LATENCY_MS", "700")).await;
    let customer = unique("drain");
    let mut inflight = Vec::new();
    for i in 0..10 {
        let (client, url) = (
            app.client.clone(),
            app.url("/challenge-latam-api/ingestData"),
        );
        let body = record(&customer, &format!("r{i}")).to_string();
        inflight.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(KEY_ALL)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let status = app.terminate();
    for r in inflight {
        let r = r.await.unwrap().expect("an in-flight request was cut");
        assert_eq!(r.status(), 200);
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );

    let restarted = spawn_with(Options {
        data_dir: Some(app.data_dir.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        restarted
            .wait_for(&customer, 10, Duration::from_secs(30))
            .await
            .len(),
        10
    );
}

#[tokio::test]
async fn a_bad_setting_stops_the_process_with_a_message_naming_it() {
    if skip_here("a_bad_setting_stops_the_process_with_a_message_naming_it") {
        return;
    }
    let out = std::process::Command::new(binary())
        .env("PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PORT"), "{stderr}");

    let out = std::process::Command::new(binary())
        .env_clear()
        .env("BACKEND", "gcp")
        .env("GCP_PROJECT", "p")
        .env("PUBSUB_TOPIC", "t")
        .env("BQ_DATASET", "d")
        .env("BQ_TABLE", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("API_KEYS_FILE"));
}
