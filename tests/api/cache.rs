//! getData's read path: the page cache, request coalescing, invalidation on commit, ETags and
//! the bound on store queries in flight.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;

/// Store queries the process ran (its own metric: one sample per query, cached or not).
async fn store_queries(app: &TestApp) -> f64 {
    app.metric_sum(
        "db_client_operation_duration_seconds_count",
        &[("db_operation_name", "query")],
    )
    .await
}

async fn lookups(app: &TestApp, result: &str) -> f64 {
    app.metric_sum("app_getdata_cache_lookups_total", &[("result", result)])
        .await
}

/// The cache's lookup counters: (hit, miss, coalesced).
async fn lookup_counts(app: &TestApp) -> (f64, f64, f64) {
    (
        lookups(app, "hit").await,
        lookups(app, "miss").await,
        lookups(app, "coalesced").await,
    )
}

fn delta(after: (f64, f64, f64), before: (f64, f64, f64)) -> (f64, f64, f64) {
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

#[tokio::test]
async fn concurrent_identical_misses_run_one_store_query_and_share_its_page() {
    if skip_here("concurrent_identical_misses_run_one_store_query_and_share_its_page") {
        return;
    }
    let app = spawn_with(Options::default().env("FAULT_STORE_LATENCY_MS", "400")).await;
    let customer = unique("coalesce");
    app.ingest_ok(&record(&customer, "a")).await;
    app.wait_for(&customer, 1, Duration::from_secs(30)).await;
    let query = format!("customerId={}&limit=5", urlencode(&customer));
    let (queries, counts) = (store_queries(&app).await, lookup_counts(&app).await);

    let answers = join_all((0..16).map(|_| app.get_data(&query))).await;

    let mut pages = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        pages.push((etag, r.text().await.unwrap()));
    }
    assert!(
        pages.windows(2).all(|w| w[0] == w[1]),
        "every waiter gets the same page"
    );
    assert!(pages[0].1.contains(&customer));
    assert_eq!(store_queries(&app).await - queries, 1.0, "one store query");
    let (hit, miss, coalesced) = delta(lookup_counts(&app).await, counts);
    assert_eq!(miss, 1.0);
    assert_eq!(hit + coalesced, 15.0);
    assert!(
        coalesced >= 1.0,
        "16 requests sent at once over a 400 ms query: some must have waited for it"
    );
}

#[tokio::test]
async fn a_failed_query_is_not_cached_and_every_waiter_gets_the_error() {
    if skip_here("a_failed_query_is_not_cached_and_every_waiter_gets_the_error") {
        return;
    }
    let app = spawn_with(Options::default()).await;
    let customer = unique("cache-error");
    app.ingest_ok(&record(&customer, "a")).await;
    app.wait_for(&customer, 1, Duration::from_secs(30)).await;
    app.set_faults(r#"{"store_error_rate": 1.0, "store_latency_ms": 300}"#)
        .await;
    let query = format!("customerId={}&limit=3", urlencode(&customer));
    let failed_before = app
        .metric_sum(
            "db_client_operation_duration_seconds_count",
            &[
                ("db_operation_name", "query"),
                ("error_type", "unavailable"),
            ],
        )
        .await;

    let answers = join_all((0..8).map(|_| app.get_data(&query))).await;

    for r in answers {
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
    let failed = app
        .metric_sum(
            "db_client_operation_duration_seconds_count",
            &[
                ("db_operation_name", "query"),
                ("error_type", "unavailable"),
            ],
        )
        .await;
    assert_eq!(
        failed - failed_before,
        1.0,
        "the waiters shared one failed query"
    );

    app.set_faults(r#"{"store_error_rate": 0.0, "store_latency_ms": 0}"#)
        .await;
    let r = app.get_data(&query).await;
    assert_eq!(r.status(), 200, "the error was not cached");
    let rows: Vec<Value> = r.json().await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn an_unchanged_page_is_answered_304_and_a_changed_one_200_with_a_new_etag() {
    let app = spawn_app().await;
    let customer = unique("etag");
    app.ingest_ok(&record(&customer, "a")).await;
    app.wait_for(&customer, 1, Duration::from_secs(30)).await;
    let query = format!("customerId={}", urlencode(&customer));

    let first = app.get_data(&query).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "private, no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = get_if_none_match(&app, &query, &etag).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty(), "a 304 has no body");
    let weak = get_if_none_match(&app, &query, &format!("W/{etag}")).await;
    assert_eq!(weak.status(), 304, "If-None-Match compares weakly");
    let other = get_if_none_match(&app, &query, "\"something-else\"").await;
    assert_eq!(other.status(), 200);

    app.ingest_ok(&record(&customer, "b")).await;
    app.wait_for(&customer, 2, Duration::from_secs(30)).await;
    let changed = get_if_none_match(&app, &query, &etag).await;
    assert_eq!(changed.status(), 200, "the page changed: a new body");
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let rows: Vec<Value> = changed.json().await.unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn past_the_in_flight_bound_and_its_queue_timeout_getdata_answers_503_with_retry_after() {
    if skip_here(
        "past_the_in_flight_bound_and_its_queue_timeout_getdata_answers_503_with_retry_after",
    ) {
        return;
    }
    let app = spawn_with(
        Options::default()
            .env("QUERY_MAX_IN_FLIGHT", "1")
            .env("QUERY_QUEUE_TIMEOUT_MS", "200")
            .env("FAULT_STORE_LATENCY_MS", "800"),
    )
    .await;
    // Two different pages, so they are two store queries, not one coalesced.
    let started = Instant::now();
    let answers = join_all(["limit=1", "limit=2"].map(|q| app.get_data(q))).await;

    let took = started.elapsed();
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 503]);
    let refused = answers.into_iter().find(|r| r.status() == 503).unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        app.metric_sum("app_getdata_store_queries_rejected_total", &[])
            .await,
        1.0
    );
    assert_eq!(
        app.metric_sum("app_getdata_store_queries_max_in_flight", &[])
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_query_that_finds_the_bound_full_waits_for_a_slot_within_the_queue_timeout() {
    if skip_here("a_query_that_finds_the_bound_full_waits_for_a_slot_within_the_queue_timeout") {
        return;
    }
    let app = spawn_with(
        Options::default()
            .env("QUERY_MAX_IN_FLIGHT", "1")
            .env("QUERY_QUEUE_TIMEOUT_MS", "3000")
            .env("FAULT_STORE_LATENCY_MS", "300"),
    )
    .await;

    let answers = join_all(["limit=1", "limit=2", "limit=3"].map(|q| app.get_data(q))).await;

    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, vec![200, 200, 200], "they took turns");
    assert_eq!(
        app.metric_sum("app_getdata_store_queries_rejected_total", &[])
            .await,
        0.0
    );
}

/// Staleness under concurrent ingest, with a TTL far longer than the test: what keeps reads
/// fresh is the invalidation on commit (the pipeline, or the gcp worker, runs in the process).
#[tokio::test]
async fn records_become_visible_through_cached_pages_within_the_bound_under_concurrent_ingest() {
    if skip_here(
        "records_become_visible_through_cached_pages_within_the_bound_under_concurrent_ingest",
    ) {
        return;
    }
    // Publish to stored is about 0.1 s on the embedded pipeline; on the emulators the worker
    // pulls and writes with insertAll, which takes longer.
    let bound = match target() {
        Target::Gcp => Duration::from_secs(10),
        _ => Duration::from_secs(3),
    };
    let app = spawn_with(
        Options::default()
            .env("QUERY_CACHE_TTL_MS", "600000")
            .env("RATE_LIMIT_PER_SECOND", "10000")
            .env("RATE_LIMIT_BURST", "10000"),
    )
    .await;
    let customer = unique("stale");
    let by_customer = format!("customerId={}&limit=1000", urlencode(&customer));
    assert_eq!(app.get_data(&by_customer).await.status(), 200);
    assert_eq!(app.get_data("limit=1000").await.status(), 200);

    let writer = async {
        let mut acked = Vec::new();
        for i in 0..20 {
            let batch: Vec<Value> = (0..=(i % 3))
                .map(|j| record(&customer, &format!("r{i}-{j}")))
                .collect();
            let ids = app.ingest_ok(&json!(batch)).await;
            let at = Instant::now();
            acked.extend(ids.into_iter().map(|id| (id, at)));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked
    };
    let reader = async {
        let mut reads = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let started = Instant::now();
            let r = app.get_data(&by_customer).await;
            assert_eq!(r.status(), 200);
            let rows: Vec<Value> = r.json().await.unwrap();
            let ids: Vec<String> = rows
                .iter()
                .map(|r| r["messageId"].as_str().unwrap().to_owned())
                .collect();
            reads.push((started, ids));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reads
    };
    let (acked, reads) = tokio::join!(writer, reader);

    // Every read that started `bound` after a record was acknowledged shows it.
    let mut worst = Duration::ZERO;
    for (started, ids) in &reads {
        for (id, at) in &acked {
            if ids.contains(id) {
                continue;
            }
            if let Some(age) = started.checked_duration_since(*at) {
                assert!(
                    age < bound,
                    "{id} acknowledged {age:?} before a read that did not show it"
                );
                worst = worst.max(age);
            }
        }
    }
    // And the last record reaches the default window's page (no `from`/`to`) within the bound.
    let (last, at) = acked.last().cloned().unwrap();
    loop {
        let r = app.get_data("limit=1000").await;
        let body = r.text().await.unwrap();
        if body.contains(&format!("\"messageId\":\"{last}\"")) {
            break;
        }
        assert!(
            at.elapsed() < bound,
            "{last} not in the default page after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "staleness: {} reads, {} records, worst not-yet-visible age {worst:?}, last record in the default page after {:?}",
        reads.len(),
        acked.len(),
        at.elapsed()
    );
}

async fn get_if_none_match(app: &TestApp, query: &str, etag: &str) -> reqwest::Response {
    app.client
        .get(format!(
            "{}?{query}",
            app.url("/challenge-latam-api/getData")
        ))
        .bearer_auth(&app.key)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_cache_keeps_at_most_its_entries_and_counts_why_it_dropped_each_page() {
    if skip_here("the_cache_keeps_at_most_its_entries_and_counts_why_it_dropped_each_page") {
        return;
    }
    // A bound of four pages and a TTL that passes within the test, long enough that the first
    // pages are still fresh when the last is read on a slow machine.
    let app = spawn_with(
        Options::default()
            .env("QUERY_CACHE_MAX_ENTRIES", "4")
            .env("QUERY_CACHE_TTL_MS", "3000"),
    )
    .await;
    let evicted = |reason: &'static str| {
        let app = &app;
        async move {
            app.metric_sum("app_getdata_cache_evictions_total", &[("reason", reason)])
                .await
        }
    };
    let entries = || app.metric_sum("app_getdata_cache_entries", &[]);
    let (size_before, expired_before) = (evicted("size").await, evicted("expired").await);
    let pages: Vec<String> = (0..12)
        .map(|i| format!("customerId={}", urlencode(&unique(&format!("bound{i}")))))
        .collect();

    // Twelve distinct pages into four places: eight pushed out for size.
    for query in &pages {
        assert_eq!(app.get_data(query).await.status(), 200);
    }
    assert_eq!(entries().await, 4.0, "the entries bound holds");
    assert_eq!(evicted("size").await - size_before, 8.0);
    let last = &pages[11];
    let hits = lookups(&app, "hit").await;
    assert_eq!(app.get_data(last).await.status(), 200);
    assert_eq!(
        lookups(&app, "hit").await - hits,
        1.0,
        "the newest page is cached"
    );

    // Past the TTL the page is not served: the read is a miss, and the old page is gone as
    // expired (removed by this lookup, or before it by the upkeep, which runs every half TTL).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let misses = lookups(&app, "miss").await;
    assert_eq!(app.get_data(last).await.status(), 200);
    assert_eq!(lookups(&app, "miss").await - misses, 1.0);
    assert!(evicted("expired").await - expired_before >= 1.0);

    // Pages nobody asks for again leave within the upkeep's period after their TTL, so their
    // memory comes back: the four old ones and the one just made, none of them counted twice.
    let deadline = Instant::now() + Duration::from_secs(15);
    while entries().await > 0.0 {
        assert!(Instant::now() < deadline, "stale pages were never dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(evicted("expired").await - expired_before, 5.0);
    assert_eq!(
        evicted("size").await - size_before,
        8.0,
        "none of them for size"
    );
}
