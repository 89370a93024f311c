//! getData: filters, order, pages, and bad query strings; health and the API document.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn pages_follow_the_link_header_newest_first_without_duplicates() {
    let app = spawn_app().await;
    let customer = unique("pages");
    let mut published = Vec::new();
    for chunk in 0..5 {
        let batch: Vec<Value> = (0..5)
            .map(|i| record(&customer, &format!("r{chunk}-{i}")))
            .collect();
        published.extend(app.ingest_ok(&json!(batch)).await);
    }
    app.wait_for(&customer, 25, Duration::from_secs(30)).await;

    let mut seen = Vec::new();
    let mut query = format!("customerId={}&limit=10", urlencode(&customer));
    let mut pages = 0;
    loop {
        let r = app.get_data(&query).await;
        assert_eq!(r.status(), 200);
        let next = next_link(&r);
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= 10);
        seen.extend(page);
        pages += 1;
        match next {
            Some(q) => query = q,
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 rows at 10 per page");
    let ids: Vec<&str> = seen
        .iter()
        .map(|r| r["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 25);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        25,
        "a row came twice"
    );
    let expected: HashSet<&str> = published.iter().map(String::as_str).collect();
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), expected);
    let times: Vec<&str> = seen
        .iter()
        .map(|r| r["publishTime"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "not newest first");
}

#[tokio::test]
async fn the_default_query_returns_at_most_ten_rows() {
    let app = spawn_app().await;
    let customer = unique("default");
    let batch: Vec<Value> = (0..12)
        .map(|i| record(&customer, &format!("r{i}")))
        .collect();
    app.ingest_ok(&json!(batch)).await;
    app.wait_for(&customer, 12, Duration::from_secs(30)).await;

    let r = app.get_data("").await;
    assert_eq!(r.status(), 200);
    let rows: Vec<Value> = r.json().await.unwrap();
    assert_eq!(rows.len(), 10);
}

#[tokio::test]
async fn a_window_returns_the_records_inside_it_with_from_inclusive_and_to_exclusive() {
    let app = spawn_app().await;
    let customer = unique("window");
    app.ingest_ok(&record(&customer, "now")).await;
    let stored = app.wait_for(&customer, 1, Duration::from_secs(30)).await;
    assert_eq!(stored.len(), 1);
    let at = chrono::DateTime::parse_from_rfc3339(stored[0]["publishTime"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let micros = |t: chrono::DateTime<chrono::Utc>| {
        urlencode(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let us = chrono::Duration::microseconds(1);
    let ids = |query: String| {
        let app = &app;
        let customer = &customer;
        async move {
            let r = app
                .get_data(&format!("customerId={}&{query}", urlencode(customer)))
                .await;
            assert_eq!(r.status(), 200, "{query}");
            r.json::<Vec<Value>>().await.unwrap().len()
        }
    };

    // [at, at + 1 us) holds exactly the record: `from` is inclusive.
    assert_eq!(
        ids(format!("from={}&to={}", micros(at), micros(at + us))).await,
        1
    );
    // [at - 1 s, at) does not: `to` is exclusive.
    let second = chrono::Duration::seconds(1);
    assert_eq!(
        ids(format!("from={}&to={}", micros(at - second), micros(at))).await,
        0
    );
    // (at, at + 1 s) misses it by one microsecond at the start.
    assert_eq!(
        ids(format!(
            "from={}&to={}",
            micros(at + us),
            micros(at + second)
        ))
        .await,
        0
    );
    // A window a day wide around it returns it; one in 2020 does not.
    let day = chrono::Duration::days(1);
    assert_eq!(
        ids(format!("from={}&to={}", micros(at - day), micros(at + day))).await,
        1
    );
    assert_eq!(
        ids("from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z".into()).await,
        0
    );
}

#[tokio::test]
async fn bad_query_strings_are_400_problems_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=ten", "limit"),
        ("from=last-tuesday", "from"),
        ("to=2026-13-45T00:00:00Z", "to"),
        ("pageToken=Zm9yZ2Vk", "pageToken"),
        (
            "pageToken=MXwxNzAwMDAwMDAwMDAwMDAwfDk5fGRlYWRiZWVm",
            "pageToken",
        ),
        ("customerId=", "customerId"),
        ("orderBy=name", "orderBy"),
    ];
    for (query, field) in cases {
        let r = app.get_data(query).await;
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/problem+json",
            "{query}"
        );
        let body: Value = r.json().await.unwrap();
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{query}: {fields:?}");
    }
}

#[tokio::test]
async fn health_readiness_and_the_api_document_answer() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["broker"], "ok");
    assert_eq!(body["store"], "ok");
    assert_eq!(body["auth"], "enabled");

    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/challenge-latam-api/ingestData",
        "/challenge-latam-api/getData",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn without_a_keys_file_the_local_backend_runs_open_and_says_so() {
    if skip_here("without_a_keys_file_the_local_backend_runs_open_and_says_so") {
        return;
    }
    let app = spawn_with(Options {
        no_auth: true,
        ..Default::default()
    })
    .await;
    let (_, body) = app.readyz().await;
    assert_eq!(body["auth"], "disabled");
    let r = app.get_data_as("limit=1", None).await;
    assert_eq!(r.status(), 200);
    assert!(app.logs().contains("authentication is DISABLED"));
}
