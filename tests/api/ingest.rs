//! Ingest: the happy path, and every bad input the contract names.

use serde_json::{json, Value};

use crate::helpers::*;

const SEED: &str = r#"{"customerId":"9854764321","name":"Ronald Ramos","orders":[{"orderId":"1","total":50.0},{"orderId":"2","total":2000.0}],"revenue":2050.0}"#;

#[tokio::test]
async fn the_seed_example_round_trips_with_name_orders_and_revenue() {
    let app = spawn_app().await;
    let customer = unique("seed");
    let mut body: Value = serde_json::from_str(SEED).unwrap();
    body["customerId"] = json!(customer);

    let ids = app.ingest_ok(&body).await;
    assert_eq!(ids.len(), 1);

    let rows = app
        .wait_for(&customer, 1, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(rows.len(), 1, "the record never became queryable");
    let row = &rows[0];
    assert_eq!(row["name"], "Ronald Ramos");
    assert_eq!(
        row["orders"],
        json!([{"orderId":"1","total":50.0},{"orderId":"2","total":2000.0}])
    );
    assert_eq!(row["revenue"], 2050.0);
    assert_eq!(row["messageId"], ids[0]);
    assert!(row["publishTime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn a_batch_is_published_whole_and_answers_one_id_per_record_in_order() {
    let app = spawn_app().await;
    let customer = unique("batch");
    let batch: Vec<Value> = (0..50)
        .map(|i| record(&customer, &format!("n{i}")))
        .collect();

    let ids = app.ingest_ok(&json!(batch)).await;
    assert_eq!(ids.len(), 50);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 50, "message ids must be unique");

    let rows = app
        .wait_for(&customer, 50, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(rows.len(), 50);
}

/// One bad request: what is sent, what must come back.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    content_type: &'static str,
    status: u16,
    /// The field the problem must name (validation errors), if any.
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        body: body.into(),
        content_type: "application/json",
        status,
        field,
    }
}

fn bad_inputs() -> Vec<Case> {
    let ok = r#"{"customerId":"c","name":"n"}"#;
    let orders_1001 = vec![r#"{"orderId":"1","total":1}"#; 1001].join(",");
    let batch_501 = format!("[{}]", vec![ok; 501].join(","));
    let big = format!(
        r#"{{"customerId":"c","name":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut invalid_utf8 = br#"{"customerId":"c","name":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}"#);
    vec![
        case(
            "malformed JSON",
            r#"{"customerId": "c", "name": "#,
            400,
            None,
        ),
        case(
            "wrong type",
            r#"{"customerId": 12, "name": "n"}"#,
            422,
            Some("customerId"),
        ),
        case(
            "missing required field",
            r#"{"customerId": "c"}"#,
            422,
            Some("name"),
        ),
        case(
            "unknown field",
            r#"{"customerId":"c","name":"n","admin":true}"#,
            422,
            Some("admin"),
        ),
        case(
            "empty string",
            r#"{"customerId":"","name":"n"}"#,
            422,
            Some("customerId"),
        ),
        case(
            "too long string",
            format!(r#"{{"customerId":"{}","name":"n"}}"#, "x".repeat(65)),
            422,
            Some("customerId"),
        ),
        case(
            "negative total",
            r#"{"customerId":"c","name":"n","orders":[{"orderId":"1","total":-0.5}]}"#,
            422,
            Some("orders[0].total"),
        ),
        case(
            "number too large for a double",
            r#"{"customerId":"c","name":"n","revenue":1e999}"#,
            422,
            Some("revenue"),
        ),
        case(
            "more than 1000 orders",
            format!(r#"{{"customerId":"c","name":"n","orders":[{orders_1001}]}}"#),
            422,
            Some("orders"),
        ),
        case("more than 500 records", batch_501, 422, Some("$")),
        case("2 MiB body", big, 413, None),
        Case {
            name: "non-JSON content type",
            body: ok.into(),
            content_type: "text/plain",
            status: 415,
            field: None,
        },
        case(
            "a batch with one bad record",
            format!(r#"[{ok},{ok},{{"customerId":"c"}}]"#),
            422,
            Some("[2].name"),
        ),
        case("deeply nested JSON", deep, 422, Some("[0]")),
        case("invalid UTF-8", invalid_utf8, 400, None),
        case("empty batch", "[]", 422, Some("$")),
        case("a JSON scalar", "42", 422, Some("$")),
    ]
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_a_problem_naming_the_field_and_nothing_is_published() {
    let app = spawn_app().await;
    let measure = app.admin.is_some();
    let before = if measure { app.published().await } else { 0.0 };

    for c in bad_inputs() {
        let r = app
            .ingest_raw(c.body.clone(), c.content_type, Some(&app.key))
            .await;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "{}",
            c.name
        );
        assert_eq!(body["status"], c.status, "{}", c.name);
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{}: {body}",
            c.name
        );
        if let Some(field) = c.field {
            let fields: Vec<&str> = body["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no errors list in {body}", c.name))
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&field),
                "{}: expected field {field}, got {fields:?}",
                c.name
            );
        }
    }

    if measure {
        assert_eq!(
            app.published().await,
            before,
            "a rejected request reached the broker"
        );
    } else {
        skip_here("every_bad_input_gets_its_status_and_a_problem_naming_the_field_and_nothing_is_published");
    }
}

#[tokio::test]
async fn sql_text_in_customer_id_is_stored_and_returned_as_plain_data() {
    let app = spawn_app().await;
    let customer = format!("x'; DROP TABLE records; -- {}", unique("sql"));
    app.ingest_ok(&record(&customer, "Bobby Tables")).await;

    let rows = app
        .wait_for(&customer, 1, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["customerId"], customer.as_str());

    // The table is still there and still answers.
    let r = app.get_data("limit=1").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_bad_idempotency_key_is_a_400_naming_the_header() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/challenge-latam-api/ingestData"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .header("idempotency-key", "x".repeat(300))
        .body(record("c", "n").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
}
