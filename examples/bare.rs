//! The ceiling for `loadtests/bench.sh`: a bare axum server with the service's two API routes
//! that does the least a real handler must do and nothing more. Ingest parses the body with
//! serde_json into the record's shape (one record or a batch) and answers fixed bytes; getData
//! answers a fixed page of ten records, the size of the service's default page. No middleware,
//! no broker, no store, no telemetry: whatever the service does beyond this is its cost.
//!
//! Run: `PORT=18090 cargo run --release --example bare`

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The service's allocator (see src/main.rs for why and what it costs): both builds of the
/// benchmark must allocate alike for the comparison to isolate the middleware.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One order, as the contract defines it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // parsed for the cost of parsing; never read
struct Order {
    /// Order identifier.
    order_id: String,
    /// Order total.
    total: f64,
}

/// One record, as the contract defines it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Record {
    /// Customer identifier.
    customer_id: String,
    /// Customer name.
    name: String,
    /// Orders, optional.
    #[serde(default)]
    orders: Option<Vec<Order>>,
    /// Revenue, optional.
    #[serde(default)]
    revenue: Option<f64>,
}

/// A body is one record or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Body {
    /// A single record.
    One(Record),
    /// A batch.
    Many(Vec<Record>),
}

const ACK: &[u8] =
    br#"{"status":"Data published successfully","messageIds":["00000000000000000001-0000"]}"#;

async fn ingest(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<Body>(&body) {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            ACK,
        ),
        Err(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "application/problem+json")],
            br#"{"type":"about:blank","title":"Unprocessable","status":422}"#.as_slice(),
        ),
    }
}

/// Ten records with their metadata, built once: the bytes of a default getData page.
fn page() -> Bytes {
    let rows: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            serde_json::json!({
                "customerId": format!("cust-{i:05}"),
                "name": "Ronald Ramos",
                "orders": [{"orderId": "1", "total": 50.0}, {"orderId": "2", "total": 2000.0}],
                "revenue": 2050.0,
                "messageId": format!("{:020}-0000", 1_000_000 + i),
                "publishTime": "2026-11-28T03:00:00.000000Z",
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&rows).expect("fixed page serializes"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(18090);
    let page = page();
    let app = Router::new()
        .route("/challenge-latam-api/ingestData", post(ingest))
        .route(
            "/challenge-latam-api/getData",
            get(move || {
                let page = page.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], page) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("bare: listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
