//! BigQuery over `gcp-bigquery-client`: rows written with `tabledata.insertAll` (the worker
//! path) and `getData` served by `jobs.query` with named parameters only, in short-query mode
//! (`jobCreationMode=JOB_CREATION_OPTIONAL`): BigQuery answers small queries without creating a
//! job, which saves the job's overhead on every read, and says what each query billed.
//!
//! Rows carry the same columns a BigQuery subscription with `write_metadata` writes
//! (`subscription_name`, `message_id`, `publish_time`, `attributes`), so a row looks the same
//! whichever path wrote it, and the query cannot tell them apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat};
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::data_format_options::DataFormatOptions;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::QueryResponse;
use gcp_bigquery_client::model::table_cell::TableCell;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::Client;
use serde::Serialize;
use serde_json::Value;

use super::pubsub::RECORD_ID_ATTRIBUTE as RECORD_ID;
use super::{deadline, CHECK_TIMEOUT, DB_SYSTEM};
use crate::domain::{Order, RecordFilter, StoredRecord};
use crate::ports::{DependencyError, ErrorKind, RecordQuery, Row, RowWriter};
use crate::telemetry::metrics::{self, DbMetrics, DbOp};

/// The table rows go to and come from.
#[derive(Debug, Clone)]
pub struct TableRef {
    /// `GCP_PROJECT`.
    pub project: String,
    /// `BQ_DATASET`.
    pub dataset: String,
    /// `BQ_TABLE`.
    pub table: String,
}

/// Writes and queries the records table.
pub struct BigQueryStore {
    client: Client,
    /// `jobs.query` is sent by hand (see [`ShortQuery`]) with the same HTTP client and token.
    http: reqwest::Client,
    auth: Arc<dyn Authenticator>,
    /// `{base}/projects/{project}/queries`.
    queries_url: String,
    table: TableRef,
    maximum_bytes_billed: u64,
    timeout: Duration,
    billing: Billing,
    metrics: DbMetrics,
}

/// Google's endpoint of the BigQuery v2 REST API.
const BIGQUERY_V2: &str = "https://bigquery.googleapis.com/bigquery/v2";
/// The OAuth scope of every call this store makes.
const BIGQUERY_SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

/// The emulator takes any bearer token; no credentials are read or sent anywhere else.
#[derive(Clone)]
struct EmulatorToken;

#[async_trait]
impl Authenticator for EmulatorToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".to_owned())
    }
}

/// Application Default Credentials through Google's own `google-cloud-auth`, the library the
/// Pub/Sub client already uses: one ADC implementation in the process, and a token source this
/// module can also use for the `jobs.query` it sends itself.
#[derive(Clone)]
struct AdcToken(google_cloud_auth::credentials::AccessTokenCredentials);

#[async_trait]
impl Authenticator for AdcToken {
    async fn access_token(&self) -> Result<String, BQError> {
        self.0.access_token().await.map(|t| t.token).map_err(|e| {
            BQError::InvalidApplicationDefaultCredentialsAuthenticator(std::io::Error::other(
                e.to_string(),
            ))
        })
    }
}

/// `jobs.query` with the fields `gcp-bigquery-client` 0.28 does not model. Its `QueryRequest`
/// has no `jobCreationMode`, and its `QueryResponse` drops `totalBytesBilled` and
/// `jobCreationReason`, so the request is the crate's, flattened, plus the mode; the response
/// is the crate's plus what billing needs.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShortQuery<'a> {
    #[serde(flatten)]
    request: &'a QueryRequest,
    /// `JOB_CREATION_OPTIONAL`: BigQuery runs the query without a job when it can.
    job_creation_mode: &'static str,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShortQueryResponse {
    #[serde(flatten)]
    response: QueryResponse,
    /// Bytes billed, as a decimal string (absent when BigQuery's cache answered, and from the
    /// emulator).
    total_bytes_billed: Option<String>,
}

impl BigQueryStore {
    /// A client for `table`: Application Default Credentials against Google's endpoint, or
    /// the emulator at `emulator_base` (`http://host:port/bigquery/v2`).
    pub async fn connect(
        table: TableRef,
        emulator_base: Option<&str>,
        maximum_bytes_billed: u64,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (auth, base): (Arc<dyn Authenticator>, &str) = match emulator_base {
            Some(base) => (Arc::new(EmulatorToken), base),
            None => (
                Arc::new(AdcToken(
                    google_cloud_auth::credentials::Builder::default()
                        .with_scopes([BIGQUERY_SCOPE])
                        .build_access_token_credentials()?,
                )),
                BIGQUERY_V2,
            ),
        };
        let http = reqwest::Client::new();
        let client = ClientBuilder::new()
            .with_v2_base_url(base.to_owned())
            .with_client(http.clone())
            .build_from_authenticator(auth.clone())
            .await?;
        let queries_url = format!("{base}/projects/{}/queries", table.project);
        Ok(Self {
            client,
            http,
            auth,
            queries_url,
            table,
            maximum_bytes_billed,
            timeout,
            billing: Billing::register(),
            metrics: DbMetrics::register(DB_SYSTEM),
        })
    }

    /// Sends one `jobs.query` in short-query mode.
    async fn short_query(&self, request: &QueryRequest) -> Result<ShortQueryResponse, BQError> {
        let token = self.auth.access_token().await?;
        let body = ShortQuery {
            request,
            job_creation_mode: "JOB_CREATION_OPTIONAL",
        };
        let send = || {
            self.http
                .post(&self.queries_url)
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        // A pooled keep-alive connection that the server closes as the request goes out fails
        // the send before BigQuery has seen it. bqemulator's server closes idle connections
        // after 5 s, the page cache's TTL, so refreshes raced it and every coalesced waiter got
        // a 503 (docs/benchmarks.md); any server's idle timeout can do the same. The query only
        // reads, which jobs.query defines as nullipotent, so it is sent once more, on another
        // connection. A timeout is not retried: the deadline is spent.
        let response = match send().await {
            Err(e) if e.is_request() && !e.is_timeout() => {
                tracing::warn!(error = %e, "jobs.query sent again after a send error");
                send().await?
            }
            sent => sent?,
        };
        // What the crate's own calls do with an answer (`process_response` in its lib.rs),
        // so `classify` sees the same `BQError`s from this call as from theirs. That function
        // is private in 0.28 (`async fn`, not `pub`), hence these few lines here.
        if response.status().is_success() {
            Ok(response.json().await?)
        } else {
            Err(BQError::ResponseError {
                error: response.json().await?,
            })
        }
    }
}

/// A row as `insertAll` sends it: the record's columns plus the subscription's metadata.
#[derive(Serialize)]
struct InsertRow<'a> {
    #[serde(rename = "customerId")]
    customer_id: &'a str,
    name: &'a str,
    orders: Vec<InsertOrder<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revenue: Option<f64>,
    subscription_name: &'a str,
    message_id: &'a str,
    /// RFC 3339 with microseconds: BigQuery's TIMESTAMP keeps microseconds.
    publish_time: String,
    /// A JSON object as text (the `attributes` column is a STRING, like the subscription's).
    attributes: &'a str,
}

#[derive(Serialize)]
struct InsertOrder<'a> {
    #[serde(rename = "orderId")]
    order_id: &'a str,
    total: f64,
}

fn insert_row(row: &Row) -> InsertRow<'_> {
    let r = &row.record;
    InsertRow {
        customer_id: &r.customer_id,
        name: &r.name,
        orders: r
            .orders
            .iter()
            .map(|o| InsertOrder {
                order_id: &o.order_id,
                total: o.total,
            })
            .collect(),
        revenue: r.revenue,
        subscription_name: &row.subscription_name,
        message_id: &r.message_id,
        publish_time: rfc3339(r.publish_time_us),
        attributes: &row.attributes_json,
    }
}

fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The getData query. Every value is a named parameter; the only text that varies is which
/// predicates are present. The `publish_time` range prunes partitions, so the table is never
/// fully scanned. A record's id is its `record_id` attribute when the request had an
/// `Idempotency-Key` (the id the client was answered with, the same on every retry), else its
/// Pub/Sub `message_id`; `QUALIFY` keeps one row per record id, the earliest (a message
/// delivered twice, written by both paths, or published again by a retry is returned once);
/// the keyset predicate continues after the previous page's last row, newest first.
fn select_sql(t: &TableRef, filter: &RecordFilter) -> String {
    let mut sql = format!(
        "SELECT customerId, name, orders, revenue, message_id, publish_time\n\
         FROM (\n\
         \x20 SELECT customerId, name, orders, revenue, publish_time,\n\
         \x20   message_id AS pubsub_message_id,\n\
         \x20   COALESCE(JSON_VALUE(attributes, '$.{RECORD_ID}'), message_id) AS message_id\n\
         \x20 FROM `{}.{}.{}`\n\
         \x20 WHERE publish_time >= @from_time AND publish_time < @to_time",
        t.project, t.dataset, t.table
    );
    if filter.customer_id.is_some() {
        sql.push_str("\n    AND customerId = @customer_id");
    }
    // BigQuery wants a WHERE (or GROUP BY, HAVING) beside QUALIFY.
    sql.push_str("\n)\nWHERE TRUE");
    if filter.after.is_some() {
        sql.push_str(
            "\n  AND (publish_time < @after_time\
             \n       OR (publish_time = @after_time AND message_id < @after_message_id))",
        );
    }
    sql.push_str(
        "\nQUALIFY ROW_NUMBER() OVER (PARTITION BY message_id ORDER BY publish_time, pubsub_message_id) = 1\
         \nORDER BY publish_time DESC, message_id DESC\
         \nLIMIT @row_limit",
    );
    sql
}

/// The `jobs.query` request of one getData: named parameters, the cost guard, BigQuery's
/// result cache on, and a timeout inside the request deadline (so BigQuery gives up, and in
/// short-query mode returns a job reference instead of rows, before the caller does).
fn query_request(
    table: &TableRef,
    filter: &RecordFilter,
    maximum_bytes_billed: u64,
    deadline: Duration,
) -> QueryRequest {
    let mut request = QueryRequest::new(select_sql(table, filter));
    request.parameter_mode = Some("NAMED".to_owned());
    request.query_parameters = Some(parameters(filter));
    request.maximum_bytes_billed = Some(maximum_bytes_billed.to_string());
    request.timeout_ms = Some((deadline.as_millis() as i32 * 9 / 10).max(100));
    request.max_results = Some(filter.limit as i32 + 1);
    request.use_query_cache = Some(true);
    request.format_options = Some(DataFormatOptions {
        use_int64_timestamp: Some(true),
    });
    request
}

fn parameter(name: &str, ty: &str, value: String) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_owned()),
        parameter_type: Some(QueryParameterType {
            array_type: None,
            struct_types: None,
            r#type: ty.to_owned(),
        }),
        parameter_value: Some(QueryParameterValue {
            array_values: None,
            struct_values: None,
            value: Some(value),
        }),
    }
}

/// A TIMESTAMP parameter value in BigQuery's canonical text form.
fn timestamp_param(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        .to_string()
}

fn parameters(filter: &RecordFilter) -> Vec<QueryParameter> {
    let mut p = vec![
        parameter("from_time", "TIMESTAMP", timestamp_param(filter.from_us)),
        parameter("to_time", "TIMESTAMP", timestamp_param(filter.to_us)),
        parameter(
            "row_limit",
            "INT64",
            (u64::from(filter.limit) + 1).to_string(),
        ),
    ];
    if let Some(id) = &filter.customer_id {
        p.push(parameter("customer_id", "STRING", id.clone()));
    }
    if let Some(after) = &filter.after {
        p.push(parameter(
            "after_time",
            "TIMESTAMP",
            timestamp_param(after.publish_time_us),
        ));
        p.push(parameter(
            "after_message_id",
            "STRING",
            after.message_id.clone(),
        ));
    }
    p
}

#[async_trait]
impl RowWriter for BigQueryStore {
    async fn insert(&self, rows: &[Row]) -> Result<(), DependencyError> {
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = deadline(self.timeout, "insertAll", async {
            let mut request = TableDataInsertAllRequest::new();
            for row in rows {
                // insertId = message_id: BigQuery drops a retried row it has already seen
                // (best effort, about a minute); the query's QUALIFY covers the rest.
                request
                    .add_row(Some(row.record.message_id.clone()), insert_row(row))
                    .map_err(|e| DependencyError::new(ErrorKind::Internal, e.to_string()))?;
            }
            let response = self
                .client
                .tabledata()
                .insert_all(
                    &self.table.project,
                    &self.table.dataset,
                    &self.table.table,
                    request,
                )
                .await
                .map_err(|e| classify(&e))?;
            // skipInvalidRows is false: one invalid row fails the whole request, so a batch
            // is stored entirely or not at all.
            match response.insert_errors.unwrap_or_default().first() {
                None => Ok(()),
                Some(err) => Err(DependencyError::new(
                    ErrorKind::Invalid,
                    format!(
                        "insertAll rejected row {}: {}",
                        err.index.unwrap_or(-1),
                        err.errors
                            .as_ref()
                            .and_then(|e| e.first())
                            .and_then(|e| e.message.clone())
                            .unwrap_or_default()
                    ),
                )),
            }
        })
        .await;
        self.metrics.op(
            DbOp::Insert,
            result.as_ref().err().map(|e| e.kind),
            started.elapsed(),
        );
        result
    }
}

#[async_trait]
impl RecordQuery for BigQueryStore {
    async fn query(&self, filter: &RecordFilter) -> Result<Vec<StoredRecord>, DependencyError> {
        let started = Instant::now();
        let request = query_request(&self.table, filter, self.maximum_bytes_billed, self.timeout);
        let result = deadline(self.timeout, "jobs.query", async {
            let ShortQueryResponse {
                response,
                total_bytes_billed,
            } = self.short_query(&request).await.map_err(|e| classify(&e))?;
            self.billing
                .record(response.cache_hit, total_bytes_billed.as_deref());
            // The emulator (and some BigQuery failures) answer 200 with errors[].
            if let Some(err) = response.errors.as_ref().and_then(|e| e.first()) {
                let reason = err.reason.clone().unwrap_or_default();
                return Err(DependencyError::new(
                    kind_of_reason(&reason),
                    format!(
                        "jobs.query failed: {reason}: {}",
                        err.message.clone().unwrap_or_default()
                    ),
                ));
            }
            if response.job_complete != Some(true) {
                return Err(DependencyError::new(
                    ErrorKind::Timeout,
                    "jobs.query did not complete within its timeout",
                ));
            }
            response
                .rows
                .unwrap_or_default()
                .into_iter()
                .map(|row| parse_row(row.columns.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        self.metrics.op(
            DbOp::Query,
            result.as_ref().err().map(|e| e.kind),
            started.elapsed(),
        );
        result
    }

    async fn check(&self) -> Result<(), DependencyError> {
        deadline(CHECK_TIMEOUT, "tables.get", async {
            self.client
                .table()
                .get(
                    &self.table.project,
                    &self.table.dataset,
                    &self.table.table,
                    Some(vec!["tableReference"]),
                )
                .await
                .map(|_| ())
                .map_err(|e| classify(&e))
        })
        .await
    }
}

/// What getData's queries cost: handles registered once, when the store is built.
struct Billing {
    bytes: ::metrics::Counter,
    cache_hits: ::metrics::Counter,
    cache_misses: ::metrics::Counter,
}

impl Billing {
    fn register() -> Self {
        let queries =
            |hit: &'static str| ::metrics::counter!(metrics::BQ_QUERIES, "cache_hit" => hit);
        let billing = Self {
            bytes: ::metrics::counter!(metrics::BQ_BILLED_BYTES),
            cache_hits: queries("true"),
            cache_misses: queries("false"),
        };
        // Every series from the start: "nothing billed" reads 0, not absent.
        for c in [&billing.bytes, &billing.cache_hits, &billing.cache_misses] {
            c.increment(0);
        }
        billing
    }

    /// Counts one answered query: the bytes billed, and whether BigQuery's own result cache
    /// answered it (billing nothing). The seed asks for metrics tied to billing; this is the
    /// read side's.
    fn record(&self, cache_hit: Option<bool>, total_bytes_billed: Option<&str>) {
        if cache_hit == Some(true) {
            self.cache_hits.increment(1);
        } else {
            self.cache_misses.increment(1);
        }
        let bytes = total_bytes_billed.and_then(|b| b.parse::<u64>().ok());
        self.bytes.increment(bytes.unwrap_or(0));
    }
}

/// One result row, in the SELECT's column order, into a record. Scalars come as strings
/// (BigQuery's JSON rows); `publish_time` as int64 microseconds (`useInt64Timestamp`).
fn parse_row(cells: Vec<TableCell>) -> Result<StoredRecord, DependencyError> {
    let bad =
        |what: &str| DependencyError::new(ErrorKind::Internal, format!("unexpected row: {what}"));
    let mut cells = cells.into_iter().map(|c| c.value.unwrap_or(Value::Null));
    let mut next = |name: &str| {
        cells
            .next()
            .ok_or_else(|| bad(&format!("{name} is missing")))
    };
    let customer_id = string(next("customerId")?).ok_or_else(|| bad("customerId"))?;
    let name = string(next("name")?).ok_or_else(|| bad("name"))?;
    let orders = match next("orders")? {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                // Each element is {"v": {"f": [{"v": orderId}, {"v": total}]}}.
                let fields = item["v"]["f"].as_array().cloned().unwrap_or_default();
                let order_id = fields
                    .first()
                    .and_then(|f| string(f["v"].clone()))
                    .ok_or_else(|| bad("orders.orderId"))?;
                let total = fields
                    .get(1)
                    .and_then(|f| number(&f["v"]))
                    .ok_or_else(|| bad("orders.total"))?;
                Ok(Order { order_id, total })
            })
            .collect::<Result<Vec<_>, DependencyError>>()?,
        _ => return Err(bad("orders")),
    };
    let revenue = match next("revenue")? {
        Value::Null => None,
        v => Some(number(&v).ok_or_else(|| bad("revenue"))?),
    };
    let message_id = string(next("message_id")?).ok_or_else(|| bad("message_id"))?;
    let publish_time_us =
        timestamp_us(&next("publish_time")?).ok_or_else(|| bad("publish_time"))?;
    Ok(StoredRecord {
        customer_id,
        name,
        orders,
        revenue,
        message_id,
        publish_time_us,
    })
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Int64 microseconds; falls back to BigQuery's float-seconds text when a server ignores
/// `useInt64Timestamp`.
fn timestamp_us(v: &Value) -> Option<i64> {
    let s = match v {
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .map(|secs| (secs * 1e6).round() as i64)
    })
}

/// The kind of an `errors[].reason` (https://cloud.google.com/bigquery/docs/error-messages).
fn kind_of_reason(reason: &str) -> ErrorKind {
    match reason {
        "backendError" | "internalError" | "notFound" | "accessDenied" => ErrorKind::Unavailable,
        "rateLimitExceeded"
        | "quotaExceeded"
        | "resourcesExceeded"
        | "bytesBilledLimitExceeded" => ErrorKind::ResourceExhausted,
        "timeout" | "jobBackendError" => ErrorKind::Timeout,
        "invalid" | "invalidQuery" => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

/// The kind of a failed BigQuery call.
fn classify(e: &BQError) -> DependencyError {
    let kind = match e {
        BQError::RequestError(re) if re.is_timeout() => ErrorKind::Timeout,
        BQError::RequestError(_) => ErrorKind::Unavailable,
        BQError::ResponseError { error } => {
            let reason = error
                .error
                .errors
                .first()
                .and_then(|e| e.get("reason"))
                .map(String::as_str)
                .unwrap_or("");
            match error.error.code {
                408 | 504 => ErrorKind::Timeout,
                429 => ErrorKind::ResourceExhausted,
                403 if matches!(reason, "rateLimitExceeded" | "quotaExceeded") => {
                    ErrorKind::ResourceExhausted
                }
                400 => match kind_of_reason(reason) {
                    ErrorKind::Internal => ErrorKind::Invalid,
                    k => k,
                },
                // A missing table or a missing permission is a deployment fault: unavailable
                // until the operator fixes it.
                401 | 403 | 404 => ErrorKind::Unavailable,
                c if c >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            }
        }
        BQError::AuthError(_)
        | BQError::YupAuthError(_)
        | BQError::NoToken
        | BQError::InvalidApplicationDefaultCredentialsAuthenticator(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    DependencyError::new(kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cursor;

    fn table() -> TableRef {
        TableRef {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
        }
    }

    fn filter(customer: Option<&str>, after: Option<Cursor>) -> RecordFilter {
        RecordFilter {
            limit: 10,
            customer_id: customer.map(str::to_owned),
            from_us: 0,
            to_us: 1_000_000,
            after,
            moving: Default::default(),
        }
    }

    /// Reads one HTTP/1.1 request (head and Content-Length body) from `conn`; false at EOF.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if data.len() >= end + 4 + length {
                    return true;
                }
            }
            match conn.read(&mut buf).await.unwrap() {
                0 => return false,
                n => data.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn a_query_on_a_connection_the_server_closed_is_sent_again() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/bigquery/v2", listener.local_addr().unwrap());
        // The first connection answers one query, keeps alive, then reads the next and closes
        // without answering: what a server's idle timeout does to a request already on its way.
        // Every later connection answers.
        tokio::spawn(async move {
            const OK: &[u8] =
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"jobComplete\":true}";
            let (mut first, _) = listener.accept().await.unwrap();
            assert!(read_request(&mut first).await);
            first.write_all(OK).await.unwrap();
            assert!(read_request(&mut first).await);
            drop(first);
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    while read_request(&mut conn).await {
                        conn.write_all(OK).await.unwrap();
                    }
                });
            }
        });
        let store = BigQueryStore::connect(table(), Some(&base), 1 << 30, Duration::from_secs(5))
            .await
            .unwrap();
        let request = query_request(&table(), &filter(None, None), 1_000, Duration::from_secs(5));
        for n in 1..=2 {
            let answer = store.short_query(&request).await;
            let answer = answer.unwrap_or_else(|e| panic!("query {n}: {e}"));
            assert_eq!(answer.response.job_complete, Some(true));
        }
    }

    #[test]
    fn getdata_is_sent_in_short_query_mode_with_the_cache_on_and_a_timeout_under_the_deadline() {
        let f = filter(Some("c1"), None);
        let request = query_request(&table(), &f, 1_000, Duration::from_secs(5));
        let body = serde_json::to_value(ShortQuery {
            request: &request,
            job_creation_mode: "JOB_CREATION_OPTIONAL",
        })
        .unwrap();
        assert_eq!(body["jobCreationMode"], "JOB_CREATION_OPTIONAL");
        assert_eq!(body["useQueryCache"], true);
        assert_eq!(body["timeoutMs"], 4_500);
        assert_eq!(body["maximumBytesBilled"], "1000");
        assert_eq!(body["parameterMode"], "NAMED");
        assert_eq!(body["useLegacySql"], false);
        assert_eq!(body["maxResults"], 11);
        assert!(body["query"].as_str().unwrap().contains("@customer_id"));
        assert_eq!(body["queryParameters"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn the_bytes_billed_and_the_cache_hit_are_read_from_a_short_query_answer() {
        let answer: ShortQueryResponse = serde_json::from_value(serde_json::json!({
            "kind": "bigquery#queryResponse",
            "jobComplete": true,
            "cacheHit": false,
            "totalBytesProcessed": "2048",
            "totalBytesBilled": "10485760",
            "jobCreationReason": {"code": "REQUESTED"},
            "queryId": "q1",
            "rows": [],
        }))
        .unwrap();
        assert_eq!(answer.total_bytes_billed.as_deref(), Some("10485760"));
        assert_eq!(answer.response.cache_hit, Some(false));
        assert_eq!(answer.response.job_complete, Some(true));
    }

    #[test]
    fn the_query_binds_every_value_as_a_named_parameter() {
        let f = filter(
            Some("c'); DROP TABLE t; --"),
            Some(Cursor {
                publish_time_us: 5,
                message_id: "m'".into(),
            }),
        );
        let sql = select_sql(&table(), &f);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("m'"), "{sql}");
        for p in [
            "@from_time",
            "@to_time",
            "@customer_id",
            "@after_time",
            "@after_message_id",
            "@row_limit",
        ] {
            assert!(sql.contains(p), "{p} missing in {sql}");
        }
        let names: Vec<_> = parameters(&f).into_iter().filter_map(|p| p.name).collect();
        assert_eq!(names.len(), 6, "{names:?}");
    }

    #[test]
    fn the_query_prunes_partitions_deduplicates_and_pages_newest_first() {
        let sql = select_sql(&table(), &filter(None, None));
        assert!(sql.contains("FROM `p.d.t`"));
        assert!(sql.contains("WHERE publish_time >= @from_time AND publish_time < @to_time"));
        // One row per record id: a keyed request's record_id, else the Pub/Sub message id.
        assert!(sql
            .contains("COALESCE(JSON_VALUE(attributes, '$.record_id'), message_id) AS message_id"));
        assert!(sql.contains("QUALIFY ROW_NUMBER() OVER (PARTITION BY message_id"));
        assert!(sql.contains("ORDER BY publish_time DESC, message_id DESC"));
        assert!(!sql.contains("@customer_id") && !sql.contains("@after_time"));
        let limit = parameters(&filter(None, None))
            .into_iter()
            .find(|p| p.name.as_deref() == Some("row_limit"))
            .unwrap();
        assert_eq!(limit.parameter_value.unwrap().value.as_deref(), Some("11"));
    }

    #[test]
    fn timestamps_are_sent_and_read_with_microseconds() {
        assert_eq!(
            timestamp_param(1_795_831_200_123_456),
            "2026-11-28 02:00:00.123456+00:00"
        );
        assert_eq!(
            timestamp_us(&Value::String("1795831200123456".into())),
            Some(1_795_831_200_123_456)
        );
        assert_eq!(
            timestamp_us(&Value::String("1.7958312E9".into())),
            Some(1_795_831_200_000_000)
        );
    }

    #[test]
    fn a_result_row_becomes_a_stored_record() {
        let cells: Vec<TableCell> = serde_json::from_value(serde_json::json!([
            {"v": "c1"}, {"v": "n"},
            {"v": [{"v": {"f": [{"v": "1"}, {"v": "5.0"}]}}]},
            {"v": "1.5"}, {"v": "m1"}, {"v": "1795831200123456"}
        ]))
        .unwrap();
        let r = parse_row(cells).unwrap();
        assert_eq!(r.customer_id, "c1");
        assert_eq!(
            r.orders,
            vec![Order {
                order_id: "1".into(),
                total: 5.0
            }]
        );
        assert_eq!(r.revenue, Some(1.5));
        assert_eq!(r.publish_time_us, 1_795_831_200_123_456);
        let cells: Vec<TableCell> = serde_json::from_value(serde_json::json!([
            {"v": "c1"}, {"v": "n"}, {"v": []}, {"v": null}, {"v": "m1"}, {"v": "1"}
        ]))
        .unwrap();
        assert_eq!(parse_row(cells).unwrap().revenue, None);
    }

    #[test]
    fn quota_and_billing_limits_are_resource_exhausted_and_bad_sql_is_invalid() {
        assert_eq!(
            kind_of_reason("bytesBilledLimitExceeded"),
            ErrorKind::ResourceExhausted
        );
        assert_eq!(kind_of_reason("invalidQuery"), ErrorKind::Invalid);
        assert_eq!(kind_of_reason("backendError"), ErrorKind::Unavailable);
    }
}
