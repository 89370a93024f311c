//! Metrics, logs and traces, checked from the outside: a scrape of the admin port after
//! known traffic, the process's log lines, and an OTLP receiver run by the test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::helpers::*;

const LATENCY_BUCKETS: &str = "0.005 0.01 0.025 0.05 0.075 0.1 0.25 0.5 0.75 1 2.5 5 7.5 10 +Inf";
const E2E_BUCKETS: &str = "0.1 0.25 0.5 1 2.5 5 10 30 60 120 300 +Inf";

fn buckets(text: &str, family: &str) -> String {
    let mut seen = Vec::new();
    for (name, labels, _) in samples(text) {
        if name == format!("{family}_bucket") {
            let le = labels["le"].clone();
            if !seen.contains(&le) {
                seen.push(le);
            }
        }
    }
    seen.join(" ")
}

#[tokio::test]
async fn the_admin_port_counts_known_traffic_exactly_with_bounded_labels() {
    if skip_here("the_admin_port_counts_known_traffic_exactly_with_bounded_labels") {
        return;
    }
    let app = spawn_app().await;
    let customer = unique("metrics");
    for i in 0..3 {
        app.ingest_ok(&record(&customer, &format!("r{i}"))).await;
    }
    for _ in 0..2 {
        let r = app
            .ingest_raw(
                br#"{"customerId":""}"#.to_vec(),
                "application/json",
                Some(KEY_ALL),
            )
            .await;
        assert_eq!(r.status(), 422);
    }
    assert_eq!(
        app.client
            .get(app.url("/no/such/route/12345"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "/metrics must not be public"
    );
    assert_eq!(
        app.client
            .delete(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    app.wait_for(&customer, 3, Duration::from_secs(30)).await;

    // One getData made slow on purpose: it must land above the 0.25 s boundary.
    let before = app.metrics().await;
    app.set_faults(r#"{"http_latency_ms": 300}"#).await;
    assert_eq!(app.get_data("limit=1").await.status(), 200);
    app.set_faults(r#"{"http_latency_ms": 0}"#).await;
    let text = app.metrics().await;

    let get_data = [
        ("http_request_method", "GET"),
        ("http_route", "/challenge-latam-api/getData"),
        ("http_response_status_code", "200"),
    ];
    let le = |t: &str, bound: &str| {
        let mut l = get_data.to_vec();
        l.push(("le", bound));
        metric_sum(t, "http_server_request_duration_seconds_bucket", &l)
    };
    assert_eq!(
        le(&text, "0.25") - le(&before, "0.25"),
        0.0,
        "the slow request fell in le=0.25"
    );
    assert_eq!(
        le(&text, "0.5") - le(&before, "0.5"),
        1.0,
        "the slow request is not in le=0.5"
    );

    let count = |labels: &[(&str, &str)]| {
        metric_sum(&text, "http_server_request_duration_seconds_count", labels)
    };
    let ingest = [
        ("http_request_method", "POST"),
        ("http_route", "/challenge-latam-api/ingestData"),
    ];
    assert_eq!(
        count(&[ingest[0], ingest[1], ("http_response_status_code", "200")]),
        3.0
    );
    assert_eq!(
        count(&[ingest[0], ingest[1], ("http_response_status_code", "422")]),
        2.0
    );
    let not_found: Vec<_> = samples(&text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == "http_server_request_duration_seconds_count"
                && l.get("http_response_status_code").map(String::as_str) == Some("404")
        })
        .collect();
    assert_eq!(not_found.len(), 1);
    assert!(
        !not_found[0].1.contains_key("http_route"),
        "an unmatched request has no http_route"
    );
    assert_eq!(
        not_found[0].2, 2.0,
        "the unknown route and /metrics on the public port"
    );

    assert_eq!(
        metric_sum(
            &text,
            "messaging_client_sent_messages_total",
            &[("messaging_system", "local"), ("error_type", "")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(&text, "pipeline_end_to_end_latency_seconds_count", &[]),
        3.0
    );
    assert_eq!(
        metric_sum(&text, "pipeline_dead_lettered_messages_total", &[]),
        0.0
    );
    assert!(
        metric_sum(
            &text,
            "db_client_operation_duration_seconds_count",
            &[
                ("db_system_name", "sqlite"),
                ("db_operation_name", "insert"),
                ("error_type", "")
            ]
        ) >= 1.0
    );
    assert_eq!(metric_sum(&text, "app_build_info", &[]), 1.0);

    // Every family of the contract is there, with the contract's buckets.
    let names: HashSet<String> = samples(&text).into_iter().map(|(n, _, _)| n).collect();
    for family in [
        "http_server_request_duration_seconds_bucket",
        "http_server_active_requests",
        "messaging_client_operation_duration_seconds_bucket",
        "messaging_client_sent_messages_total",
        "db_client_operation_duration_seconds_bucket",
        "pipeline_end_to_end_latency_seconds_bucket",
        "pipeline_backlog_messages",
        "pipeline_dead_lettered_messages_total",
        "app_build_info",
        "http_server_max_active_requests",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(names.contains(family), "{family} is not exported");
    }
    for family in [
        "http_server_request_duration_seconds",
        "messaging_client_operation_duration_seconds",
        "db_client_operation_duration_seconds",
    ] {
        assert_eq!(buckets(&text, family), LATENCY_BUCKETS, "{family}");
    }
    assert_eq!(
        buckets(&text, "pipeline_end_to_end_latency_seconds"),
        E2E_BUCKETS
    );

    // No label value outside its fixed set.
    let allowed: &[(&str, &[&str])] = &[
        (
            "http_request_method",
            &[
                "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
                "_OTHER",
            ],
        ),
        (
            "http_route",
            &[
                "/challenge-latam-api/ingestData",
                "/challenge-latam-api/getData",
                "/healthz",
                "/readyz",
                "/openapi.json",
            ],
        ),
        ("messaging_system", &["local", "gcp_pubsub"]),
        ("messaging_operation_name", &["publish", "receive", "ack"]),
        ("db_system_name", &["sqlite", "gcp.bigquery"]),
        ("db_operation_name", &["query", "insert"]),
        (
            "idempotency_outcome",
            &["new", "replayed", "in_flight", "key_reused"],
        ),
        (
            "error_type",
            &[
                "",
                "timeout",
                "unavailable",
                "resource_exhausted",
                "invalid",
                "internal",
            ],
        ),
    ];
    for (name, labels, _) in samples(&text) {
        for (key, values) in allowed {
            if let Some(v) = labels.get(*key) {
                assert!(
                    values.contains(&v.as_str()),
                    "{name}: {key}={v:?} is outside the fixed set"
                );
            }
        }
        if let Some(code) = labels.get("http_response_status_code") {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
                "{name}: status {code}"
            );
        }
    }
}

#[tokio::test]
async fn log_lines_are_json_with_cloud_logging_fields_and_one_line_per_request() {
    if skip_here("log_lines_are_json_with_cloud_logging_fields_and_one_line_per_request") {
        return;
    }
    let app = spawn_app().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .client
        .get(app.url("/challenge-latam-api/getData?limit=1"))
        .bearer_auth(KEY_ALL)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = app.log_json();
    assert!(lines
        .iter()
        .all(|l| l["severity"].is_string() && l["message"].is_string() && l["time"].is_string()));
    let served: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"] == "request served" && l["http.route"] == "/challenge-latam-api/getData"
        })
        .collect();
    assert_eq!(served.len(), 1);
    let line = served[0];
    assert_eq!(line["http.response.status_code"], 200);
    assert!(line["latency_ms"].as_f64().is_some());
    // Qualified as projects/P/traces/T when GCP_PROJECT is set (Cloud Logging links on that).
    let logged = line["logging.googleapis.com/trace"]
        .as_str()
        .unwrap_or_default();
    assert!(
        logged == trace || logged.ends_with(&format!("/traces/{trace}")),
        "{logged}"
    );
    assert!(line["logging.googleapis.com/spanId"].is_string());
    // LOG_FILE (what the Datadog sidecar tails on Cloud Run) gets the same lines as stdout.
    let in_file = json_lines(&app.log_file());
    let served_in_file: Vec<&Value> = in_file
        .iter()
        .filter(|l| l["message"] == "request served")
        .collect();
    assert_eq!(served_in_file, vec![line], "LOG_FILE differs from stdout");
}

/// An error logged inside a request (here a failing store) names the request it belongs to:
/// route, path, key id and the caller's trace, as the request's own line does.
#[tokio::test]
async fn a_line_logged_inside_a_request_carries_the_request_context() {
    if skip_here("a_line_logged_inside_a_request_carries_the_request_context") {
        return;
    }
    let app = spawn_with(Options::default().env("FAULT_STORE_ERROR_RATE", "1")).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = app
        .client
        .get(app.url("/challenge-latam-api/getData?limit=1"))
        .bearer_auth(KEY_ALL)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = app.log_json();
    let one = |message: &str| {
        let found: Vec<&Value> = lines.iter().filter(|l| l["message"] == message).collect();
        assert_eq!(found.len(), 1, "{message}: {found:?}");
        found[0].clone()
    };
    let failed = one("dependency call failed");
    let served = one("request served");
    assert_eq!(failed["severity"], "ERROR");
    assert_eq!(failed["dependency"], "store");
    assert_eq!(served["http.response.status_code"], 503);
    for key in [
        "http.request.method",
        "http.route",
        "url.path",
        "client.key_id",
        "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId",
    ] {
        assert!(failed[key].is_string(), "{key} missing: {failed}");
        assert_eq!(failed[key], served[key], "{key}");
    }
    assert_eq!(failed["http.route"], "/challenge-latam-api/getData");
    assert_eq!(failed["client.key_id"], "client-all");
    assert!(failed["logging.googleapis.com/trace"]
        .as_str()
        .unwrap()
        .ends_with(trace));
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        })
}

// Multi-threaded: the receiver must keep answering while this thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_continues_from_the_caller_through_the_broker_to_the_store() {
    if skip_here("one_trace_continues_from_the_caller_through_the_broker_to_the_store") {
        return;
    }
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut app = spawn_with(
        Options::default()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}"))
            .env("OTEL_SERVICE_NAME", "challenge-latam-api-test"),
    )
    .await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let customer = unique("trace");
    let r = app
        .client
        .post(app.url("/challenge-latam-api/ingestData"))
        .bearer_auth(KEY_ALL)
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .body(record(&customer, "traced").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.wait_for(&customer, 1, Duration::from_secs(30)).await;
    // Shutdown flushes the exporter: the spans must arrive without waiting for a batch tick.
    assert!(app.terminate().success());
    server.abort();

    let spans = collector.0.lock().unwrap().clone();
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == trace)
        .collect();
    let find = |kind: SpanKind, pred: &dyn Fn(&Span) -> bool| -> &Span {
        ours.iter()
            .copied()
            .find(|s| s.kind == kind as i32 && pred(s))
            .unwrap_or_else(|| {
                panic!(
                    "no {kind:?} span in trace; got {:?}",
                    ours.iter().map(|s| (&s.name, s.kind)).collect::<Vec<_>>()
                )
            })
    };
    let server_span = find(SpanKind::Server, &|s| {
        attr(s, "http.route").as_deref() == Some("/challenge-latam-api/ingestData")
    });
    assert_eq!(
        hex::encode(&server_span.parent_span_id),
        caller_span,
        "server span continues the caller"
    );
    assert_eq!(
        attr(server_span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attr(server_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server_span.name, "POST /challenge-latam-api/ingestData");
    // Who called, never the key itself.
    assert_eq!(
        attr(server_span, "client.key_id").as_deref(),
        Some("client-all")
    );

    let producer = find(SpanKind::Producer, &|_| true);
    assert_eq!(
        producer.parent_span_id, server_span.span_id,
        "publish is a child of the request"
    );
    assert_eq!(attr(producer, "messaging.system").as_deref(), Some("local"));

    let consumer = find(SpanKind::Consumer, &|_| true);
    assert_eq!(
        consumer.parent_span_id, producer.span_id,
        "the consumer continues the producer across the broker"
    );
    assert!(attr(consumer, "messaging.message.id").is_some());

    let insert = find(SpanKind::Client, &|s| s.name == "INSERT records");
    assert_eq!(
        insert.parent_span_id, consumer.span_id,
        "the store write continues the consumer"
    );
    assert_eq!(attr(insert, "db.system.name").as_deref(), Some("sqlite"));

    // With OTLP on, the request's log line links to the server span, not the caller's.
    let served: Vec<Value> = app
        .log_json()
        .into_iter()
        .filter(|l| {
            l["message"] == "request served" && l["http.route"] == "/challenge-latam-api/ingestData"
        })
        .collect();
    assert_eq!(served.len(), 1, "{served:?}");
    assert!(served[0]["logging.googleapis.com/trace"]
        .as_str()
        .unwrap()
        .ends_with(trace));
    assert_eq!(
        served[0]["logging.googleapis.com/spanId"],
        hex::encode(&server_span.span_id)
    );
    assert_eq!(served[0]["client.key_id"], "client-all");
}
