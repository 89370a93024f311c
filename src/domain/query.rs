//! The `getData` filter: parsed from the query string with every bound checked, plus the
//! opaque page token that carries a keyset cursor between pages.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::record::FieldError;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 10;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// The window over `publish_time` when `from` is absent, so a partitioned table is never
/// fully scanned.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the previous page ended: the last row's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `publish_time` of the last row returned, microseconds since the epoch.
    pub publish_time_us: i64,
    /// `message_id` of the last row returned (the tie-breaker).
    pub message_id: String,
}

/// A checked `getData` query. Backends bind these values as parameters; none of it is ever
/// spliced into SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFilter {
    /// Rows per page, 1 to 1000.
    pub limit: u32,
    /// Only this customer's records.
    pub customer_id: Option<String>,
    /// Inclusive lower bound on `publish_time`, microseconds.
    pub from_us: i64,
    /// Exclusive upper bound on `publish_time`, microseconds.
    pub to_us: i64,
    /// Continue after this row (from `pageToken`).
    pub after: Option<Cursor>,
    /// Which bounds follow the clock: `to` when it was not given (it is "now"), and `from`
    /// when neither was (it is "now minus the default window").
    pub moving: MovingBounds,
}

/// The bounds of a window that were computed from the time of the request, not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MovingBounds {
    /// `from` is `now - DEFAULT_WINDOW`.
    pub from: bool,
    /// `to` is `now`.
    pub to: bool,
}

/// A filter as the read cache keys it: what the client asked for, with the bounds that follow
/// the clock left out. Two requests with the default window a second apart ask for the same
/// thing ("the newest rows"), so they share a key; the cache's staleness bound says how long
/// one answer may stand for the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterKey {
    /// Rows per page.
    pub limit: u32,
    /// Only this customer's records.
    pub customer_id: Option<String>,
    /// `from`, unless it follows the clock.
    pub from_us: Option<i64>,
    /// `to`, unless it follows the clock.
    pub to_us: Option<i64>,
    /// The page token's cursor.
    pub after: Option<(i64, String)>,
}

/// A query string that does not describe a valid filter (HTTP 400).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError(pub Vec<FieldError>);

impl RecordFilter {
    /// Parses a raw query string. `now` fixes the default window so the same request always
    /// means the same rows, and so that the next-page link can spell the window out.
    pub fn parse(query: Option<&str>, now: DateTime<Utc>) -> Result<Self, QueryError> {
        let mut limit = None;
        let mut customer_id = None;
        let mut from = None;
        let mut to = None;
        let mut token = None;
        let mut errors = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "limit" => &mut limit,
                "customerId" => &mut customer_id,
                "from" => &mut from,
                "to" => &mut to,
                "pageToken" => &mut token,
                other => {
                    errors.push(err(other, "unknown query parameter"));
                    continue;
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                errors.push(err(&key, "given more than once"));
            }
        }

        let limit = match limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(err(
                        "limit",
                        &format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        if let Some(id) = &customer_id {
            let n = id.chars().count();
            if !(1..=64).contains(&n) {
                errors.push(err("customerId", "must be 1 to 64 characters"));
            }
        }
        let parse_time = |name: &str, raw: &Option<String>, errors: &mut Vec<FieldError>| {
            raw.as_deref()
                .and_then(|s| match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(_) => {
                        errors.push(err(name, "must be an RFC 3339 timestamp"));
                        None
                    }
                })
        };
        let from_t = parse_time("from", &from, &mut errors);
        let to_t = parse_time("to", &to, &mut errors);
        let window = chrono::Duration::from_std(DEFAULT_WINDOW).expect("constant fits");
        let (from_t, to_t) = match (from_t, to_t) {
            (Some(f), Some(t)) => (f, t),
            (Some(f), None) => (f, now),
            (None, Some(t)) => (t - window, t),
            (None, None) => (now - window, now),
        };
        let moving = MovingBounds {
            from: from.is_none() && to.is_none(),
            to: to.is_none(),
        };
        if from_t >= to_t {
            errors.push(err("from", "must be before `to`"));
        }

        let mut filter = RecordFilter {
            limit,
            customer_id,
            from_us: from_t.timestamp_micros(),
            to_us: to_t.timestamp_micros(),
            after: None,
            moving,
        };
        if let Some(token) = token {
            match filter.decode_token(&token) {
                Some(cursor) => filter.after = Some(cursor),
                None => errors.push(err(
                    "pageToken",
                    "is not a page token of this query (use the Link header as given)",
                )),
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(QueryError(errors))
        }
    }

    /// This filter as the read cache keys it (see [`FilterKey`]).
    pub fn key(&self) -> FilterKey {
        FilterKey {
            limit: self.limit,
            customer_id: self.customer_id.clone(),
            from_us: (!self.moving.from).then_some(self.from_us),
            to_us: (!self.moving.to).then_some(self.to_us),
            after: self
                .after
                .as_ref()
                .map(|c| (c.publish_time_us, c.message_id.clone())),
        }
    }

    /// The page token that continues this query after `cursor`.
    ///
    /// The token is a cursor plus a checksum that binds it to the query's customer and window:
    /// a token edited by hand or replayed with another filter is rejected with 400 instead of
    /// silently returning the wrong rows. It is not a secret and grants nothing: the caller
    /// could ask for the same rows with `from`/`to`.
    pub fn encode_token(&self, cursor: &Cursor) -> String {
        let body = format!("1|{}|{}", cursor.publish_time_us, cursor.message_id);
        let sum = self.checksum(&body);
        URL_SAFE_NO_PAD.encode(format!("{body}|{sum}"))
    }

    fn decode_token(&self, token: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let (body, sum) = raw.rsplit_once('|')?;
        if sum != self.checksum(body) {
            return None;
        }
        let mut parts = body.splitn(3, '|');
        (parts.next()? == "1").then_some(())?;
        let publish_time_us = parts.next()?.parse().ok()?;
        let message_id = parts.next()?.to_owned();
        (!message_id.is_empty()).then_some(Cursor {
            publish_time_us,
            message_id,
        })
    }

    fn checksum(&self, body: &str) -> String {
        let mut h = Sha256::new();
        h.update(body.as_bytes());
        h.update(b"\0");
        h.update(self.customer_id.as_deref().unwrap_or("").as_bytes());
        h.update(b"\0");
        h.update(self.from_us.to_be_bytes());
        h.update(self.to_us.to_be_bytes());
        hex::encode(&h.finalize()[..12])
    }

    /// The query string of the next page: the same filter with the window spelled out (so a
    /// defaulted `to = now` does not move between pages) and the token.
    pub fn next_page_query(&self, cursor: &Cursor) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", &self.limit.to_string());
        if let Some(id) = &self.customer_id {
            q.append_pair("customerId", id);
        }
        q.append_pair("from", &rfc3339(self.from_us));
        q.append_pair("to", &rfc3339(self.to_us));
        q.append_pair("pageToken", &self.encode_token(cursor));
        q.finish()
    }
}

fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn err(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fields(q: &str) -> Vec<String> {
        RecordFilter::parse(Some(q), now())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_are_ten_rows_over_the_last_seven_days() {
        let f = RecordFilter::parse(None, now()).unwrap();
        assert_eq!(f.limit, 10);
        assert_eq!(f.to_us - f.from_us, 7 * 24 * 3600 * 1_000_000);
        assert_eq!(f.to_us, now().timestamp_micros());
    }

    #[test]
    fn default_windows_share_a_key_and_given_ones_do_not() {
        let later = now() + chrono::Duration::seconds(3);
        let key = |q: &str, at| RecordFilter::parse(Some(q), at).unwrap().key();
        assert_eq!(key("limit=5", now()), key("limit=5", later));
        assert_eq!(
            key("from=2026-11-01T00:00:00Z", now()),
            key("from=2026-11-01T00:00:00Z", later)
        );
        assert_ne!(key("limit=5", now()), key("limit=6", now()));
        assert_ne!(key("customerId=a", now()), key("customerId=b", now()));
        // A given `to` fixes both ends: the key holds them, whatever the clock says.
        let to = "to=2026-11-20T00:00:00Z";
        assert_eq!(key(to, now()).to_us, key(to, later).to_us);
        assert!(key(to, now()).from_us.is_some());
        assert_ne!(key(to, now()), key("to=2026-11-21T00:00:00Z", now()));
        // A next-page link spells the window out, so every later page has a fixed key.
        let f = RecordFilter::parse(Some("limit=2"), now()).unwrap();
        let cursor = Cursor {
            publish_time_us: 9,
            message_id: "9".into(),
        };
        let next = f.next_page_query(&cursor);
        let k = key(&next, later);
        assert!(k.from_us.is_some() && k.to_us.is_some() && k.after.is_some());
        assert_eq!(key(&next, now()), key(&next, later));
    }

    #[test]
    fn limits_out_of_range_are_rejected() {
        assert_eq!(fields("limit=0"), vec!["limit"]);
        assert_eq!(fields("limit=100000"), vec!["limit"]);
        assert_eq!(fields("limit=abc"), vec!["limit"]);
        assert_eq!(
            RecordFilter::parse(Some("limit=1000"), now())
                .unwrap()
                .limit,
            1000
        );
    }

    #[test]
    fn bad_times_unknown_and_repeated_parameters_are_named() {
        assert_eq!(fields("from=yesterday"), vec!["from"]);
        assert_eq!(
            fields("from=2026-11-28T00:00:00Z&to=2026-11-27T00:00:00Z"),
            vec!["from"]
        );
        assert_eq!(fields("sort=name"), vec!["sort"]);
        assert_eq!(fields("limit=1&limit=2"), vec!["limit"]);
    }

    #[test]
    fn a_page_token_round_trips_only_with_its_own_filter() {
        let f = RecordFilter::parse(Some("customerId=a&limit=5"), now()).unwrap();
        let cursor = Cursor {
            publish_time_us: 42,
            message_id: "7|x".into(),
        };
        let next = f.next_page_query(&cursor);
        let g = RecordFilter::parse(Some(&next), now()).unwrap();
        assert_eq!(g.after, Some(cursor.clone()));
        assert_eq!(g.customer_id.as_deref(), Some("a"));

        let token = f.encode_token(&cursor);
        let other = format!("customerId=b&pageToken={token}");
        assert_eq!(fields(&other), vec!["pageToken"]);
    }

    #[test]
    fn forged_tokens_are_rejected() {
        let f = RecordFilter::parse(None, now()).unwrap();
        let good = f.encode_token(&Cursor {
            publish_time_us: 1,
            message_id: "1".into(),
        });
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(&good).unwrap()).unwrap();
        let tampered = URL_SAFE_NO_PAD.encode(raw.replacen("|1|", "|2|", 1));
        for token in ["x", "!!!", "", tampered.as_str()] {
            assert_eq!(
                fields(&format!("pageToken={token}")),
                vec!["pageToken"],
                "{token}"
            );
        }
    }
}
