//! The data Terraform's monitoring module reads (`jsondecode(file(...))`) to create the same SLOs
//! and tiers in Cloud Monitoring and Datadog. Where a backend cannot express a tier (Cloud
//! Monitoring looks back at most 24 h, Datadog's long window is at most 48 h) the tier becomes a
//! remaining-budget alert, and the entry says why.
//!
//! A remaining-budget alert stands in for a tier by firing when the budget left would last no
//! longer than the tier's long window at the tier's burn rate: remaining < burn * long / period.

use anyhow::{bail, ensure, Result};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::spec::{CloudMonitoringSli, Matcher, Selector, Service, Severity, SliKind, Slo, Tier};
use crate::units::{
    datadog_bound, datadog_short_window, datadog_window, json_number, plain, prom_duration,
};

/// Cloud Monitoring's longest burn-rate lookback.
const CM_MAX_LOOKBACK: u64 = 86_400;
/// Datadog's longest burn-rate long window.
const DD_MAX_LONG: u64 = 48 * 3_600;

fn remaining_fraction(slo: &Slo, tier: &Tier) -> Result<Decimal> {
    let f = tier.burn_rate * Decimal::from(tier.long) / Decimal::from(slo.period);
    ensure!(
        f < Decimal::ONE,
        "tier {:?} of SLO {:?} spends the whole budget within its long window; no \
         remaining-budget alert can stand in for it",
        tier.name,
        slo.name
    );
    Ok(f.normalize())
}

fn cm_quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn cm_selector(sel: &Selector) -> Vec<String> {
    sel.iter()
        .map(|(l, m)| match m {
            Matcher::In { values, .. } if values.len() == 1 => {
                format!("metric.label.{l}={}", cm_quote(&values[0]))
            }
            Matcher::In { values, .. } => format!(
                "metric.label.{l}=one_of({})",
                values
                    .iter()
                    .map(|v| cm_quote(v))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Matcher::Regex { regex, .. } => {
                format!(
                    "metric.label.{l}=monitoring.regex.full_match({})",
                    cm_quote(regex)
                )
            }
        })
        .collect()
}

fn cm_sli(slo: &Slo) -> Result<(&'static str, Value)> {
    Ok(match &slo.cloud_monitoring {
        Some(CloudMonitoringSli::GoodTotalRatio { good, bad, total }) => (
            "request_based_sli",
            json!({"good_total_ratio": {
                "good_service_filter": good,
                "bad_service_filter": bad,
                "total_service_filter": total,
            }}),
        ),
        Some(CloudMonitoringSli::MeanInRange {
            window_period,
            filter,
            min,
            max,
        }) => (
            "windows_based_sli",
            json!({
                "window_period": window_period,
                "metric_mean_in_range": {
                    "time_series": filter,
                    "range": {"min": min.map(json_number), "max": max.map(json_number)},
                },
            }),
        ),
        None => match &slo.sli.kind {
            SliKind::GoodUnder(le) => {
                // Managed Service for Prometheus stores a histogram as one cumulative
                // DISTRIBUTION, which is what distribution_cut reads.
                let mut parts = vec![
                    format!(
                        "metric.type=\"prometheus.googleapis.com/{}/histogram\"",
                        slo.sli.histogram
                    ),
                    "resource.type=\"prometheus_target\"".to_string(),
                ];
                parts.extend(cm_selector(&slo.sli.selector));
                (
                    "request_based_sli",
                    json!({"distribution_cut": {
                        "distribution_filter": parts.join(" "),
                        "range": {"min": null, "max": json_number(*le)},
                    }}),
                )
            }
            SliKind::BadWhere(_) => bail!(
                "SLO {:?}: Cloud Monitoring cannot count good/bad events of a Managed Prometheus \
                 histogram (good_total_ratio wants INT64/DOUBLE series, the histogram is a \
                 DISTRIBUTION): give a cloud-monitoring-sli",
                slo.name
            ),
        },
    })
}

/// `alerts/cloud-monitoring/<service>.json`.
pub fn cloud_monitoring(svc: &Service, generated_by: &str) -> Result<Value> {
    let mut slos = Vec::new();
    for slo in &svc.slos {
        ensure!(
            slo.period % 86_400 == 0,
            "SLO {:?}: Cloud Monitoring's rolling period is in whole days",
            slo.name
        );
        let alert = svc.burn_alert(slo);
        let mut burn = Vec::new();
        let mut budget = Vec::new();
        for t in &slo.tiers {
            if t.long <= CM_MAX_LOOKBACK {
                burn.push(json!({
                    "tier": t.name,
                    "severity": t.severity.as_str(),
                    "lookback_duration": format!("{}s", t.long),
                    "short_lookback_duration": format!("{}s", t.short),
                    "threshold": json_number(t.burn_rate),
                    "runbook": svc.runbook(&alert),
                }));
            } else {
                budget.push(json!({
                    "tier": t.name,
                    "severity": t.severity.as_str(),
                    "reason": format!(
                        "{} long window exceeds Cloud Monitoring's 24h lookback: alerts when the \
                         remaining budget would last less than {} at {}x",
                        prom_duration(t.long), prom_duration(t.long), plain(t.burn_rate)
                    ),
                    "remaining_budget_fraction_below": json_number(remaining_fraction(slo, t)?),
                    "runbook": svc.runbook(&alert),
                }));
            }
        }
        let (kind, sli) = cm_sli(slo)?;
        let exhausted = svc.exhausted_alert(slo);
        let mut entry = json!({
            "slo_id": slo.name,
            "display_name": format!("{} {}", svc.name, slo.display_name),
            "goal": json_number(slo.objective),
            "rolling_period_days": slo.period / 86_400,
            "burn_rate_alerts": burn,
            "budget_alerts": budget,
            // Apart from budget_alerts, which stand in for tiers and so always leave some budget.
            "budget_exhausted_alert": {
                "alert": exhausted,
                "severity": Severity::Ticket.as_str(),
                "filter": "select_slo_budget_fraction",
                "comparison": "COMPARISON_LT",
                "threshold_value": json_number(Decimal::ZERO),
                "reason": format!(
                    "the whole error budget of the {} period is spent (remaining fraction \
                     below 0): the error-budget policy applies (slo/POLICY.md)",
                    prom_duration(slo.period)
                ),
                "runbook": svc.runbook(&exhausted),
            },
        });
        entry[kind] = sli;
        slos.push(entry);
    }
    Ok(json!({
        "generated_by": generated_by,
        "source": svc.source,
        "service": svc.name,
        "slos": slos,
    }))
}

/// A tag value as Datadog stores it: lowercased, and every character other than alphanumerics,
/// `_`, `-`, `:`, `.` and `/` replaced by `_` (https://docs.datadoghq.com/getting_started/tagging/).
/// `keep` is a character the query syntax needs as is (the `*` of a wildcard).
fn dd_value(v: &str, keep: Option<char>) -> String {
    v.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-:./".contains(c) || Some(c) == keep {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One label matcher as a Datadog query clause (`label:value`, `label IN (a, b)`, `label:5*`).
pub fn dd_clause(l: &str, m: &Matcher) -> Result<String> {
    Ok(match m {
        Matcher::In { values, .. } if values.len() == 1 => {
            format!("{l}:{}", dd_value(&values[0], None))
        }
        Matcher::In { values, .. } => format!(
            "{l} IN ({})",
            values
                .iter()
                .map(|v| dd_value(v, None))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Matcher::Regex {
            datadog: Some(w), ..
        } => format!("{l}:{}", dd_value(w, Some('*'))),
        Matcher::Regex { regex, .. } => {
            bail!("label {l:?}: regex {regex:?} needs a `datadog` wildcard for Datadog queries")
        }
    })
}

fn dd_filter(clauses: &[String]) -> String {
    if clauses.is_empty() {
        "{*}".into()
    } else {
        format!("{{{}}}", clauses.join(" AND "))
    }
}

/// The clause selecting every bucket of `histogram` at or under `le`: Datadog's buckets are per
/// bucket (not cumulative like `le`), so the events under a bound are the sum of those buckets.
pub fn dd_under(svc: &Service, histogram: &str, le: Decimal) -> Result<String> {
    let bounds = svc
        .buckets
        .get(histogram)
        .ok_or_else(|| anyhow::anyhow!("histogram {histogram} has no buckets"))?;
    let under: Vec<String> = bounds
        .iter()
        .filter(|b| **b <= le)
        .map(|b| datadog_bound(*b))
        .collect::<Result<_>>()?;
    Ok(if under.len() == 1 {
        format!("upper_bound:{}", under[0])
    } else {
        format!("upper_bound IN ({})", under.join(", "))
    })
}

/// `alerts/datadog/<service>.json`.
pub fn datadog(svc: &Service, generated_by: &str) -> Result<Value> {
    let mut slos = Vec::new();
    for slo in &svc.slos {
        let timeframe = prom_duration(slo.period);
        ensure!(
            ["7d", "30d", "90d"].contains(&timeframe.as_str()),
            "SLO {:?}: Datadog SLO timeframes are 7d, 30d or 90d, not {timeframe}",
            slo.name
        );
        let alert = svc.burn_alert(slo);
        let mut monitors = Vec::new();
        for t in &slo.tiers {
            if t.long <= DD_MAX_LONG {
                monitors.push(json!({
                    "tier": t.name,
                    "severity": t.severity.as_str(),
                    "type": "burn_rate",
                    "long_window": datadog_window(t.long),
                    "short_window": datadog_short_window(t.short),
                    "threshold": json_number(t.burn_rate),
                    "runbook": svc.runbook(&alert),
                }));
            } else {
                let consumed = (Decimal::ONE - remaining_fraction(slo, t)?) * Decimal::ONE_HUNDRED;
                monitors.push(json!({
                    "tier": t.name,
                    "severity": t.severity.as_str(),
                    "type": "error_budget",
                    "threshold_percent_consumed": json_number(consumed),
                    "reason": format!(
                        "{} long window exceeds Datadog's 48h maximum: alerts when the \
                         remaining budget would last less than {} at {}x",
                        prom_duration(t.long), prom_duration(t.long), plain(t.burn_rate)
                    ),
                    "runbook": svc.runbook(&alert),
                }));
            }
        }
        let exhausted = svc.exhausted_alert(slo);
        monitors.push(json!({
            "tier": "budget-exhausted",
            "severity": Severity::Ticket.as_str(),
            "type": "error_budget",
            "threshold_percent_consumed": json_number(Decimal::ONE_HUNDRED),
            "reason": format!(
                "the whole error budget of the {timeframe} timeframe is spent; the error-budget \
                 policy applies (slo/POLICY.md)"
            ),
            "runbook": svc.runbook(&exhausted),
        }));
        let mut entry = json!({
            "slo_id": slo.name,
            "name": format!("{} {}", svc.name, slo.display_name),
            "description": format!("{}. {}", slo.objective_text, slo.description),
            "target": json_number(slo.objective * Decimal::ONE_HUNDRED),
            "timeframe": timeframe,
            "tags": [format!("service:{}", svc.name), format!("slo:{}", slo.name)],
            "monitors": monitors,
        });
        if let Some(ts) = &slo.datadog {
            entry["type"] = json!("time_slice");
            entry["sli_specification"] = json!({"time_slice": {
                "query": ts.query,
                "comparator": ts.comparator,
                "threshold": json_number(ts.threshold),
                "query_interval_seconds": ts.query_interval_seconds,
            }});
        } else {
            // The app's OTLP metrics, as the serverless-init sidecar maps them (histograms in
            // `counters` mode with aggregation metrics; dashboards/datadog/README.md): no
            // namespace, so the `service` tag (OTLP resource attribute service.name) tells this
            // service's series from every other service's.
            let metric = |suffix: &str| format!("{}.{suffix}", slo.sli.histogram);
            let mut total = vec![format!("service:{}", svc.name)];
            for (l, m) in &slo.sli.selector {
                total.push(dd_clause(l, m)?);
            }
            let numerator = match &slo.sli.kind {
                SliKind::BadWhere(bad) => {
                    let b: Vec<String> = bad
                        .iter()
                        .map(|(l, m)| dd_clause(l, m))
                        .collect::<Result<_>>()?;
                    let mut c = total.clone();
                    c.push(if b.len() == 1 {
                        format!("NOT {}", b[0])
                    } else {
                        format!("NOT ({})", b.join(" AND "))
                    });
                    format!("sum:{}{}.as_count()", metric("count"), dd_filter(&c))
                }
                SliKind::GoodUnder(le) => {
                    // Buckets are per bucket (not cumulative like `le`): the good events are the
                    // sum of every bucket whose upper bound is at or under the threshold.
                    let mut c = total.clone();
                    c.push(dd_under(svc, &slo.sli.histogram, *le)?);
                    format!("sum:{}{}.as_count()", metric("bucket"), dd_filter(&c))
                }
            };
            entry["type"] = json!("metric");
            entry["query"] = json!({
                "numerator": numerator,
                "denominator": format!("sum:{}{}.as_count()", metric("count"), dd_filter(&total)),
            });
        }
        slos.push(entry);
    }
    Ok(json!({
        "generated_by": generated_by,
        "source": svc.source,
        "service": svc.name,
        "slos": slos,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::project_service as service;

    #[test]
    fn cloud_monitoring_turns_the_3d_tier_into_a_remaining_budget_alert() {
        let cm = cloud_monitoring(&service(), "test").unwrap();
        let a = &cm["slos"][0];
        let tiers: Vec<_> = a["burn_rate_alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tier"].as_str().unwrap())
            .collect();
        assert_eq!(tiers, ["fast", "medium", "slow"]);
        assert_eq!(a["burn_rate_alerts"][0]["lookback_duration"], "3600s");
        assert_eq!(a["burn_rate_alerts"][0]["short_lookback_duration"], "300s");
        assert_eq!(a["budget_alerts"][0]["tier"], "slowest");
        assert_eq!(
            a["budget_alerts"][0]["remaining_budget_fraction_below"],
            0.1
        );
        assert_eq!(a["goal"], 0.9995);
    }

    #[test]
    fn every_slo_has_a_budget_exhausted_alert_in_both_backends() {
        let svc = service();
        let cm = cloud_monitoring(&svc, "test").unwrap();
        let dd = datadog(&svc, "test").unwrap();
        for (i, slo) in svc.slos.iter().enumerate() {
            let c = &cm["slos"][i]["budget_exhausted_alert"];
            assert_eq!(c["comparison"], "COMPARISON_LT");
            assert_eq!(c["threshold_value"], 0.0);
            assert_eq!(c["severity"], "ticket");
            assert_eq!(
                c["runbook"],
                format!("alerts/runbooks/{}.md", svc.exhausted_alert(slo))
            );
            let monitors = dd["slos"][i]["monitors"].as_array().unwrap();
            let m = monitors.last().unwrap();
            assert_eq!(m["tier"], "budget-exhausted");
            assert_eq!(m["type"], "error_budget");
            assert_eq!(m["threshold_percent_consumed"], 100.0);
            assert_eq!(m["runbook"], c["runbook"]);
            // One monitor per tier, and this one.
            assert_eq!(monitors.len(), slo.tiers.len() + 1);
        }
    }

    #[test]
    fn cloud_monitoring_latency_is_a_distribution_cut_at_the_threshold() {
        let cm = cloud_monitoring(&service(), "test").unwrap();
        let cut = &cm["slos"][1]["request_based_sli"]["distribution_cut"];
        assert_eq!(cut["range"]["max"], 0.25);
        assert!(cut["range"]["min"].is_null());
        let filter = cut["distribution_filter"].as_str().unwrap();
        assert!(filter.contains(
            "metric.type=\"prometheus.googleapis.com/http_server_request_duration_seconds/histogram\""
        ));
        assert!(filter.contains("metric.label.http_route=\"/challenge-latam-api/ingestData\""));
        assert!(filter.contains("metric.label.http_request_method=\"POST\""));
    }

    #[test]
    fn datadog_keeps_three_burn_rate_monitors_and_a_90_percent_budget_monitor() {
        let dd = datadog(&service(), "test").unwrap();
        let a = &dd["slos"][0];
        assert_eq!(a["target"], 99.95);
        assert_eq!(a["monitors"][2]["long_window"], "24h");
        assert_eq!(a["monitors"][2]["short_window"], "120m");
        assert_eq!(a["monitors"][3]["type"], "error_budget");
        assert_eq!(a["monitors"][3]["threshold_percent_consumed"], 90.0);
        assert_eq!(
            a["query"]["numerator"],
            "sum:http_server_request_duration_seconds.count{service:challenge-latam-api AND \
             http_route IN (/challenge-latam-api/ingestdata, /challenge-latam-api/getdata) AND \
             NOT http_response_status_code:5*}.as_count()"
        );
        assert_eq!(dd["slos"][3]["type"], "time_slice");
    }

    #[test]
    fn datadog_latency_good_events_are_every_bucket_at_or_under_the_threshold() {
        let dd = datadog(&service(), "test").unwrap();
        let ingest = &dd["slos"][1]["query"];
        assert_eq!(
            ingest["numerator"],
            "sum:http_server_request_duration_seconds.bucket{service:challenge-latam-api AND \
             http_request_method:post AND http_route:/challenge-latam-api/ingestdata AND \
             upper_bound IN (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25)}.as_count()"
        );
        assert_eq!(
            ingest["denominator"],
            "sum:http_server_request_duration_seconds.count{service:challenge-latam-api AND \
             http_request_method:post AND http_route:/challenge-latam-api/ingestdata}.as_count()"
        );
        // A whole-number threshold is spelled as the agent spells it: 1.0, not 1.
        let query = dd["slos"][2]["query"]["numerator"].as_str().unwrap();
        assert!(query.contains(", 0.75, 1.0)}"), "{query}");
        assert!(!query.contains("2.5"), "{query}");
    }

    #[test]
    fn a_bad_matcher_without_override_cannot_reach_cloud_monitoring() {
        let mut svc = service();
        svc.slos[0].cloud_monitoring = None;
        let err = cloud_monitoring(&svc, "test").unwrap_err().to_string();
        assert!(err.contains("DISTRIBUTION"), "{err}");
    }
}
