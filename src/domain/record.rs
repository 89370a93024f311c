//! Ingest records: parsed from the request body into values that satisfy the contract's
//! schema, or rejected with the field that is wrong. Downstream code never re-checks.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most records one request may carry (CONTRACT.md).
pub const MAX_BATCH: usize = 500;
/// Most orders one record may carry.
pub const MAX_ORDERS: usize = 1000;
const CUSTOMER_ID_CHARS: (usize, usize) = (1, 64);
const NAME_CHARS: (usize, usize) = (1, 256);
const ORDER_ID_CHARS: (usize, usize) = (1, 64);

/// One order of a record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
// deny_unknown_fields here only tells utoipa to publish `additionalProperties: false`; the
// parsing (below) enforces it.
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Order {
    /// Order identifier, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub order_id: String,
    /// Order total, finite and at least 0.
    #[schema(minimum = 0)]
    pub total: f64,
}

/// A validated record: what the topic carries and the table stores.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"customerId":"9854764321","name":"Ronald Ramos","orders":[{"orderId":"1","total":50.0},{"orderId":"2","total":2000.0}],"revenue":2050.0}))]
pub struct Record {
    /// Customer identifier, 1 to 64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub customer_id: String,
    /// Customer name, 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// At most 1000 orders; absent or null means none.
    #[schema(max_items = 1000, required = false, nullable = true)]
    pub orders: Vec<Order>,
    /// Optional finite revenue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
}

// Records and orders must be JSON objects. serde's derived `Deserialize` also accepts a
// struct written as an array (`["id", "name"]`), which the contract does not allow, so both
// go through `objects_only`, which asks the parser for a map and nothing else.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordFields {
    customer_id: String,
    name: String,
    #[serde(default)]
    orders: Option<Vec<Order>>,
    #[serde(default)]
    revenue: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrderFields {
    order_id: String,
    total: f64,
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f: RecordFields = objects_only::deserialize(d, "a record object")?;
        Ok(Record {
            customer_id: f.customer_id,
            name: f.name,
            orders: f.orders.unwrap_or_default(),
            revenue: f.revenue,
        })
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f: OrderFields = objects_only::deserialize(d, "an order object")?;
        Ok(Order {
            order_id: f.order_id,
            total: f.total,
        })
    }
}

mod objects_only {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

    struct ObjectVisitor<T>(&'static str, PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
        what: &'static str,
    ) -> Result<T, D::Error> {
        d.deserialize_map(ObjectVisitor(what, PhantomData))
    }
}

/// A record as `getData` returns it: the record plus the broker's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// Customer identifier.
    pub customer_id: String,
    /// Customer name.
    pub name: String,
    /// Orders (empty when the record had none).
    pub orders: Vec<Order>,
    /// Revenue, `null` when the record had none.
    pub revenue: Option<f64>,
    /// Broker-assigned message id (the deduplication key).
    pub message_id: String,
    /// When the broker accepted the record (RFC 3339, microseconds, UTC).
    #[schema(value_type = String, format = DateTime)]
    #[serde(rename = "publishTime", with = "publish_time_rfc3339")]
    pub publish_time_us: i64,
}

impl StoredRecord {
    /// Joins a record with the metadata its message was given.
    pub fn new(record: Record, message_id: String, publish_time_us: i64) -> Self {
        Self {
            customer_id: record.customer_id,
            name: record.name,
            orders: record.orders,
            revenue: record.revenue,
            message_id,
            publish_time_us,
        }
    }
}

/// A stored record borrowed from where it is kept, its orders still the JSON text they were
/// stored as: serializes exactly as [`StoredRecord`] does (same fields, order and formats)
/// without decoding the orders only to encode them again.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecordJson<'a> {
    /// Customer identifier.
    pub customer_id: &'a str,
    /// Customer name.
    pub name: &'a str,
    /// The orders' JSON array, as stored.
    pub orders: &'a serde_json::value::RawValue,
    /// Revenue, `null` when the record had none.
    pub revenue: Option<f64>,
    /// Broker-assigned message id.
    pub message_id: &'a str,
    /// When the broker accepted the record.
    #[serde(rename = "publishTime", with = "publish_time_rfc3339")]
    pub publish_time_us: i64,
}

mod publish_time_rfc3339 {
    use chrono::{DateTime, SecondsFormat};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(us: &i64, s: S) -> Result<S::Ok, S::Error> {
        let t = DateTime::from_timestamp_micros(*us).unwrap_or_default();
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_micros())
            .map_err(serde::de::Error::custom)
    }
}

/// One problem with one field, as the problem+json `errors` list carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where: `orders[1].total`, `[3].name` in a batch, `$` for the body as a whole.
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a body is not a list of valid records.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Not JSON at all (400): syntax errors, invalid UTF-8, truncated bodies.
    Malformed(String),
    /// JSON, but not what the schema allows (422), with every field that is wrong.
    Invalid(Vec<FieldError>),
}

/// Parses an ingest body: one record object or a batch array of them. The batch is checked as
/// a whole, so either every record is valid or the error lists what is wrong and nothing is
/// published.
pub fn parse_records(body: &[u8]) -> Result<Vec<Record>, ParseError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let (records, batch) = match first {
        Some(b'{') => (vec![deserialize::<Record>(body)?], false),
        Some(b'[') => (deserialize::<Vec<Record>>(body)?, true),
        _ => {
            // Valid JSON of the wrong shape is a schema problem; anything else is malformed.
            deserialize::<IgnoredAny>(body)?;
            return Err(ParseError::Invalid(vec![FieldError::new(
                "$",
                "expected a record object or an array of record objects",
            )]));
        }
    };
    if batch && records.is_empty() {
        return Err(ParseError::Invalid(vec![FieldError::new(
            "$",
            "the batch is empty",
        )]));
    }
    if records.len() > MAX_BATCH {
        return Err(ParseError::Invalid(vec![FieldError::new(
            "$",
            format!(
                "a batch holds at most {MAX_BATCH} records, got {}",
                records.len()
            ),
        )]));
    }
    let mut errors = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let prefix = if batch {
            format!("[{i}].")
        } else {
            String::new()
        };
        validate(record, &prefix, &mut errors);
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(ParseError::Invalid(errors))
    }
}

/// Deserializes with the path of the first error, and sorts serde's errors into 400 and 422.
///
/// A valid body is parsed once, without tracking: `serde_path_to_error` allocates a `String`
/// for every object key it passes (to name the path should an error come), about 8 a record,
/// and a body that parses has no error to name. Only a body that fails is parsed a second
/// time, tracked, for the error with its path; the same `Deserialize` runs both times, so it
/// fails the same way.
fn deserialize<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ParseError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(|e| ParseError::Malformed(e.to_string()))?;
    Ok(value)
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = render_path(err.path());
    let inner = err.into_inner();
    let message = inner.to_string();
    let text = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    match inner.classify() {
        serde_json::error::Category::Data => {
            // serde names the missing or unknown field in the message; put it in the path so
            // clients get `orders[0].orderId`, not `orders[0]`.
            let field = match quoted_name(&text) {
                Some(name)
                    if text.starts_with("missing field") || text.starts_with("unknown field") =>
                {
                    join(&path, name)
                }
                _ => path,
            };
            ParseError::Invalid(vec![FieldError::new(field, text)])
        }
        // A number JSON can write but a double cannot hold is a schema problem of that field.
        serde_json::error::Category::Syntax if text.starts_with("number out of range") => {
            ParseError::Invalid(vec![FieldError::new(
                path,
                "number out of range for a double",
            )])
        }
        _ => ParseError::Malformed(message),
    }
}

fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        "$".to_owned()
    } else {
        out
    }
}

fn join(path: &str, name: &str) -> String {
    if path == "$" {
        name.to_owned()
    } else if path.ends_with(name) {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn quoted_name(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

fn check_chars(
    value: &str,
    (min, max): (usize, usize),
    field: String,
    errors: &mut Vec<FieldError>,
) {
    let n = value.chars().count();
    if n < min || n > max {
        errors.push(FieldError::new(
            field,
            format!("must be {min} to {max} characters, got {n}"),
        ));
    }
}

fn validate(record: &Record, prefix: &str, errors: &mut Vec<FieldError>) {
    check_chars(
        &record.customer_id,
        CUSTOMER_ID_CHARS,
        format!("{prefix}customerId"),
        errors,
    );
    check_chars(&record.name, NAME_CHARS, format!("{prefix}name"), errors);
    if record.orders.len() > MAX_ORDERS {
        errors.push(FieldError::new(
            format!("{prefix}orders"),
            format!("at most {MAX_ORDERS} orders, got {}", record.orders.len()),
        ));
    } else {
        for (j, order) in record.orders.iter().enumerate() {
            check_chars(
                &order.order_id,
                ORDER_ID_CHARS,
                format!("{prefix}orders[{j}].orderId"),
                errors,
            );
            if !(order.total.is_finite() && order.total >= 0.0) {
                errors.push(FieldError::new(
                    format!("{prefix}orders[{j}].total"),
                    "must be a finite number >= 0",
                ));
            }
        }
    }
    if let Some(revenue) = record.revenue {
        if !revenue.is_finite() {
            errors.push(FieldError::new(
                format!("{prefix}revenue"),
                "must be a finite number",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_fields(body: &str) -> Vec<String> {
        match parse_records(body.as_bytes()) {
            Err(ParseError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a schema error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn the_seed_example_parses_as_one_record() {
        let body = r#"{"customerId":"9854764321","name":"Ronald Ramos","orders":[{"orderId":"1","total":50.0},{"orderId":"2","total":2000.0}],"revenue":2050.0}"#;
        let records = parse_records(body.as_bytes()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].orders[1].total, 2000.0);
        assert_eq!(records[0].revenue, Some(2050.0));
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        assert_eq!(
            invalid_fields(
                r#"[{"customerId":"a","name":"b"},{"customerId":"a","name":"b","orders":[{"total":1}]}]"#
            ),
            vec!["[1].orders[0].orderId"]
        );
        assert_eq!(invalid_fields(r#"{"name":"b"}"#), vec!["customerId"]);
    }

    #[test]
    fn an_unknown_field_is_rejected_and_named() {
        assert_eq!(
            invalid_fields(r#"{"customerId":"a","name":"b","extra":1}"#),
            vec!["extra"]
        );
        assert_eq!(
            invalid_fields(
                r#"{"customerId":"a","name":"b","orders":[{"orderId":"1","total":1,"x":2}]}"#
            ),
            vec!["orders[0].x"]
        );
    }

    #[test]
    fn a_wrong_type_is_named() {
        assert_eq!(
            invalid_fields(r#"{"customerId":5,"name":"b"}"#),
            vec!["customerId"]
        );
        assert_eq!(
            invalid_fields(
                r#"{"customerId":"a","name":"b","orders":[{"orderId":"1","total":"x"}]}"#
            ),
            vec!["orders[0].total"]
        );
    }

    #[test]
    fn a_number_too_large_for_a_double_is_a_schema_error_of_its_field() {
        assert_eq!(
            invalid_fields(r#"{"customerId":"a","name":"b","revenue":1e400}"#),
            vec!["revenue"]
        );
    }

    #[test]
    fn every_rule_violation_of_a_batch_is_listed() {
        let long = "x".repeat(65);
        let body = format!(
            r#"[{{"customerId":"","name":"b"}},{{"customerId":"{long}","name":"","orders":[{{"orderId":"1","total":-1}}]}}]"#
        );
        assert_eq!(
            invalid_fields(&body),
            vec![
                "[0].customerId",
                "[1].customerId",
                "[1].name",
                "[1].orders[0].total"
            ]
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let id = "ñ".repeat(64);
        assert!(parse_records(format!(r#"{{"customerId":"{id}","name":"b"}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn batch_size_limits_are_enforced() {
        let one = r#"{"customerId":"a","name":"b"}"#;
        let ok = format!("[{}]", vec![one; MAX_BATCH].join(","));
        assert_eq!(parse_records(ok.as_bytes()).unwrap().len(), MAX_BATCH);
        let too_many = format!("[{}]", vec![one; MAX_BATCH + 1].join(","));
        assert_eq!(invalid_fields(&too_many), vec!["$"]);
        assert_eq!(invalid_fields("[]"), vec!["$"]);
        let orders = vec![r#"{"orderId":"1","total":1}"#; MAX_ORDERS + 1].join(",");
        assert_eq!(
            invalid_fields(&format!(
                r#"{{"customerId":"a","name":"b","orders":[{orders}]}}"#
            )),
            vec!["orders"]
        );
    }

    #[test]
    fn malformed_json_and_invalid_utf8_are_malformed() {
        for body in [
            &b"{"[..],
            b"{\"customerId\":\"\xff\xfe\",\"name\":\"b\"}",
            b"",
            b"nul",
            br#"{"customerId":"a","name":"b"} {}"#,
        ] {
            assert!(
                matches!(parse_records(body), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn json_of_the_wrong_shape_is_a_schema_error() {
        assert_eq!(invalid_fields("42"), vec!["$"]);
        assert_eq!(invalid_fields(r#"[1]"#), vec!["[0]"]);
    }

    #[test]
    fn records_and_orders_written_as_arrays_are_rejected() {
        assert_eq!(invalid_fields(r#"[["a","b"]]"#), vec!["[0]"]);
        assert_eq!(
            invalid_fields(r#"{"customerId":"a","name":"b","orders":[["1",5]]}"#),
            vec!["orders[0]"]
        );
    }

    #[test]
    fn null_orders_and_revenue_mean_none() {
        let r = parse_records(br#"{"customerId":"a","name":"b","orders":null,"revenue":null}"#)
            .unwrap();
        assert!(r[0].orders.is_empty() && r[0].revenue.is_none());
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_records(deep.as_bytes()).is_err());
        let deep_field = format!(
            r#"{{"customerId":{}1{}, "name":"b"}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert_eq!(invalid_fields(&deep_field), vec!["customerId"]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                ".{0,80}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("customerId".to_owned()),
                            Just("name".to_owned()),
                            Just("orders".to_owned()),
                            Just("revenue".to_owned()),
                            Just("orderId".to_owned()),
                            Just("total".to_owned()),
                            "[a-z]{1,8}",
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary bytes never panic the parser; they parse or are rejected.
            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_records(&body);
            }

            /// Any JSON either parses into records that satisfy every rule, or is rejected
            /// with at least one named field (422) or as malformed (400): never accepted
            /// while breaking a rule.
            #[test]
            fn json_is_accepted_only_when_valid(value in json_value()) {
                let body = serde_json::to_vec(&value).unwrap();
                match parse_records(&body) {
                    Ok(records) => {
                        prop_assert!(!records.is_empty() && records.len() <= MAX_BATCH);
                        for r in records {
                            let n = r.customer_id.chars().count();
                            prop_assert!((1..=64).contains(&n));
                            let n = r.name.chars().count();
                            prop_assert!((1..=256).contains(&n));
                            prop_assert!(r.orders.len() <= MAX_ORDERS);
                            for o in &r.orders {
                                prop_assert!(o.total.is_finite() && o.total >= 0.0);
                            }
                        }
                    }
                    Err(ParseError::Invalid(errors)) => prop_assert!(!errors.is_empty()),
                    Err(ParseError::Malformed(_)) => {}
                }
            }

            /// Valid records survive the round trip through the topic's JSON unchanged.
            #[test]
            fn valid_records_round_trip(
                id in "[a-zA-Z0-9ñ]{1,64}",
                name in ".{1,100}",
                totals in prop::collection::vec(0.0f64..1e12, 0..20),
                revenue in prop::option::of(-1e12f64..1e12),
            ) {
                let record = Record {
                    customer_id: id,
                    name,
                    orders: totals.iter().enumerate().map(|(i, t)| Order { order_id: i.to_string(), total: *t }).collect(),
                    revenue,
                };
                let body = serde_json::to_vec(&record).unwrap();
                let parsed = parse_records(&body).unwrap();
                prop_assert_eq!(&parsed[0], &record);
            }
        }
    }
}
