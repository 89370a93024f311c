//! `Idempotency-Key`: a retry stores nothing new and is answered with the first ids; a key
//! reused with another body, or sent again while its request is in flight, is a 409; keys are
//! scoped to the caller and expire after `IDEMPOTENCY_TTL_SECONDS`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// A batch of `n` records of `customer`, as the exact bytes a client would send (and resend).
fn batch(customer: &str, n: usize) -> String {
    let records: Vec<Value> = (0..n).map(|i| record(customer, &format!("r{i}"))).collect();
    json!(records).to_string()
}

/// Asserts a 409 problem naming `Idempotency-Key`, of `kind`; returns its `Retry-After`.
async fn assert_conflict(r: reqwest::Response, kind: &str) -> Option<u64> {
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("tag:challenge-latam-api,2026:problems/{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], 409);
    assert_eq!(body["errors"][0]["field"], "Idempotency-Key", "{body}");
    retry_after
}

/// Message ids of every stored record of `customer`, after waiting for at least `n`.
async fn stored_ids(app: &TestApp, customer: &str, n: usize) -> Vec<String> {
    app.wait_for(customer, n, Duration::from_secs(30))
        .await
        .iter()
        .map(|r| r["messageId"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[String]) -> HashSet<&str> {
    ids.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_answers_the_same_ids_and_stores_nothing_new() {
    let app = spawn_app().await;
    let customer = unique("replay");
    let (body, key) = (batch(&customer, 3), unique("key"));

    let first = message_ids(app.ingest_keyed(&body, &key, &app.key).await).await;
    let sent = if app.admin.is_some() {
        Some(app.published().await)
    } else {
        None
    };
    let retry = message_ids(app.ingest_keyed(&body, &key, &app.key).await).await;

    assert_eq!(
        retry, first,
        "a retry must be answered with the first ids, in order"
    );
    if let Some(sent) = sent {
        assert_eq!(app.published().await, sent, "the retry reached the broker");
        assert_eq!(
            app.metric_sum(
                "app_idempotent_requests_total",
                &[("idempotency_outcome", "replayed")]
            )
            .await,
            1.0
        );
    }
    let stored = stored_ids(&app, &customer, 3).await;
    // Give a duplicate, if there were one, time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = stored_ids(&app, &customer, 3).await;
    assert_eq!(again.len(), 3, "stored twice: {again:?}");
    assert_eq!(set(&stored), set(&first));
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_409_naming_the_header_and_nothing_is_published() {
    let app = spawn_app().await;
    let (customer, other) = (unique("first"), unique("other"));
    let key = unique("key");
    let first = message_ids(app.ingest_keyed(&batch(&customer, 1), &key, &app.key).await).await;

    let r = app.ingest_keyed(&batch(&other, 2), &key, &app.key).await;
    let retry_after = assert_conflict(r, "idempotency-key-reused").await;
    assert_eq!(retry_after, None, "a reused key is not worth retrying");
    // Whitespace is part of the body: a retry must send the same bytes.
    let reformatted = format!(" {}", batch(&customer, 1));
    assert_conflict(
        app.ingest_keyed(&reformatted, &key, &app.key).await,
        "idempotency-key-reused",
    )
    .await;

    // The first request is still answered as before, and the other body was never stored.
    let retry = message_ids(app.ingest_keyed(&batch(&customer, 1), &key, &app.key).await).await;
    assert_eq!(retry, first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(app.all_of(&other).await.is_empty());
}

/// A TCP server that accepts connections and never answers: a broker that hangs.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_second_request_while_the_first_is_in_flight_is_a_409_with_retry_after() {
    if skip_here("a_second_request_while_the_first_is_in_flight_is_a_409_with_retry_after") {
        return;
    }
    // Hold the first publish: on the embedded backend with an injected broker latency; on
    // gcp (which refuses fault injection) with a Pub/Sub endpoint that never answers, so that
    // request ends in a 504 at REQUEST_TIMEOUT_MS.
    let hole = black_hole().await;
    let opts = match target() {
        Target::Gcp => Options::default()
            .env("PUBSUB_EMULATOR_HOST", &hole.0)
            .env("REQUEST_TIMEOUT_MS", "3000"),
        _ => Options::default().env("FAULT_BROKER_LATENCY_MS", "1500"),
    };
    let app = spawn_with(opts).await;
    let customer = unique("inflight");
    let (body, key) = (batch(&customer, 2), unique("key"));

    let first = {
        let (client, url, body, key) = (
            app.client.clone(),
            app.url("/challenge-latam-api/ingestData"),
            body.clone(),
            key.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(KEY_ALL)
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = app.ingest_keyed(&body, &key, KEY_ALL).await;
    let retry_after = assert_conflict(second, "idempotency-key-in-flight").await;
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // The key is the caller's: another caller's request with it is not held up.
    let another = app.ingest_keyed(&body, &key, KEY_OTHER).await;
    assert_ne!(another.status(), 409);

    let first = first.await.unwrap();
    if target() == Target::Gcp {
        assert!(
            matches!(first.status().as_u16(), 503 | 504),
            "a broker that never answers: {}",
            first.status()
        );
        hole.1.abort();
        return;
    }
    let first = message_ids(first).await;
    // Once the first has been answered, the same request is a replay.
    let retry = message_ids(app.ingest_keyed(&body, &key, KEY_ALL).await).await;
    assert_eq!(retry, first);
    assert_eq!(
        app.metric_sum(
            "app_idempotent_requests_total",
            &[("idempotency_outcome", "in_flight")]
        )
        .await,
        1.0
    );
    assert_eq!(
        stored_ids(&app, &customer, 4).await.len(),
        4,
        "two callers, two records each"
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_key_publish_once() {
    if skip_here("concurrent_requests_with_one_key_publish_once") {
        return;
    }
    let app = spawn_app().await;
    let customer = unique("race");
    let (body, key) = (batch(&customer, 5), unique("key"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, body, key) = (
            app.client.clone(),
            app.url("/challenge-latam-api/ingestData"),
            body.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(KEY_ALL)
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            200 => answered.push(v["messageIds"].clone()),
            409 => assert_eq!(v["errors"][0]["field"], "Idempotency-Key"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(!answered.is_empty());
    assert!(
        answered.iter().all(|ids| *ids == answered[0]),
        "answers differ: {answered:?}"
    );
    assert_eq!(app.published().await, 5.0, "published more than once");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored_ids(&app, &customer, 5).await.len(), 5);
}

#[tokio::test]
async fn callers_with_the_same_key_are_independent_and_never_get_each_others_ids() {
    if skip_here("callers_with_the_same_key_are_independent_and_never_get_each_others_ids") {
        return;
    }
    let app = spawn_app().await;
    let customer = unique("scoped");
    let (body, key) = (batch(&customer, 2), unique("shared-key"));

    let mine = message_ids(app.ingest_keyed(&body, &key, KEY_ALL).await).await;
    let theirs = message_ids(app.ingest_keyed(&body, &key, KEY_OTHER).await).await;
    assert!(
        set(&mine).is_disjoint(&set(&theirs)),
        "{mine:?} / {theirs:?}"
    );
    // Each caller's key is bound to its own body and answers with its own ids.
    assert_conflict(
        app.ingest_keyed(&batch(&customer, 1), &key, KEY_OTHER)
            .await,
        "idempotency-key-reused",
    )
    .await;
    assert_eq!(
        message_ids(app.ingest_keyed(&body, &key, KEY_ALL).await).await,
        mine
    );
    assert_eq!(
        message_ids(app.ingest_keyed(&body, &key, KEY_OTHER).await).await,
        theirs
    );
    let stored = stored_ids(&app, &customer, 4).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
}

#[tokio::test]
async fn a_key_is_free_again_after_its_window() {
    if skip_here("a_key_is_free_again_after_its_window") {
        return;
    }
    let app = spawn_with(Options::default().env("IDEMPOTENCY_TTL_SECONDS", "1")).await;
    let (customer, other) = (unique("expiry"), unique("expiry-other"));
    let key = unique("key");
    let first = message_ids(app.ingest_keyed(&batch(&customer, 1), &key, KEY_ALL).await).await;
    assert_conflict(
        app.ingest_keyed(&batch(&other, 1), &key, KEY_ALL).await,
        "idempotency-key-reused",
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = message_ids(app.ingest_keyed(&batch(&other, 1), &key, KEY_ALL).await).await;
    assert_ne!(later, first);
    assert_eq!(stored_ids(&app, &other, 1).await, later);
    // What differs by backend past the window: the embedded broker forgets the key, so the
    // first body sent again is stored again; on gcp its record ids come from the key and the
    // body, not from a table, so the first body sent again gets its first ids back and
    // getData still shows it once (docs/reliability.md).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resent = message_ids(app.ingest_keyed(&batch(&customer, 1), &key, KEY_ALL).await).await;
    match target() {
        Target::Gcp => {
            assert_eq!(resent, first);
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(stored_ids(&app, &customer, 1).await, first);
        }
        _ => {
            assert_ne!(resent, first);
            assert_eq!(stored_ids(&app, &customer, 2).await.len(), 2);
        }
    }
}

#[tokio::test]
async fn a_keyed_request_acknowledged_before_a_crash_is_replayed_with_the_same_ids_after_a_restart()
{
    if skip_here(
        "a_keyed_request_acknowledged_before_a_crash_is_replayed_with_the_same_ids_after_a_restart",
    ) {
        return;
    }
    let mut app = spawn_app().await;
    let customer = unique("crash-key");
    let (body, key) = (batch(&customer, 3), unique("key"));
    let first = message_ids(app.ingest_keyed(&body, &key, KEY_ALL).await).await;
    stored_ids(&app, &customer, 3).await;
    app.kill9();

    // Local: the same DATA_DIR, so the key committed with the messages in broker.db. Gcp: a
    // new instance that has never seen the key, as when a retry lands elsewhere.
    let restarted = spawn_with(Options {
        data_dir: Some(app.data_dir.clone()),
        ..Default::default()
    })
    .await;
    let retry = message_ids(restarted.ingest_keyed(&body, &key, KEY_ALL).await).await;
    assert_eq!(
        retry, first,
        "a retry after the restart must get the first ids"
    );

    if target() == Target::Gcp {
        // The new instance published the records again, under the same record ids: both
        // copies are in the table, and getData shows each record once.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stored_rows_on_the_emulator(&customer).await < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "the second copy was never stored"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        assert_eq!(restarted.published().await, 0.0, "the replay was published");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stored = stored_ids(&restarted, &customer, 3).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(set(&stored), set(&first));
}
