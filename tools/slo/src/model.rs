//! `dashboards/slo-model.json`: what the dashboards need from the specs, so that
//! `dashboards/generate.py` lays out panels without reading `slo/*.yaml` or the rules a second
//! time. Every selector, `le` matcher, Datadog clause and recording-rule name in it is built by
//! the same functions the rules and the Datadog SLOs use, so a dashboard cannot disagree with an
//! alert about which series an SLI counts.

use anyhow::Result;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::backends::{dd_clause, dd_under};
use crate::prometheus::{
    le_matcher, matcher_promql, ratio_record, record_names, BUDGET_REMAINING_RECORD,
    ERROR_BUDGET_RECORD, OBJECTIVE_RECORD, PERIOD_BURN_RECORD,
};
use crate::spec::{CloudMonitoringSli, Selector, Service, SliKind, Slo};
use crate::units::{json_number, prom_duration};

/// Apdex's tolerating zone ends at four times the satisfied threshold T.
const APDEX_TOLERATING_FACTOR: u64 = 4;

fn matchers(sel: &Selector) -> Result<Value> {
    sel.iter()
        .map(|(label, m)| {
            let values = match m {
                crate::spec::Matcher::In { values, .. } => json!(values),
                crate::spec::Matcher::Regex { .. } => Value::Null,
            };
            // A regex without a Datadog wildcard cannot reach Datadog; the Datadog SLOs refuse
            // it already, the dashboards just get no clause.
            let datadog = dd_clause(label, m).map(Value::from).unwrap_or(Value::Null);
            Ok(json!({
                "label": label,
                "values": values,
                "promql": matcher_promql(label, m),
                "datadog": datadog,
            }))
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::from)
}

/// Apdex of a latency SLI with the SLO threshold as T: satisfied at or under T, tolerating at or
/// under the largest bucket bound that does not pass 4T (the histogram cannot count at 4T when
/// that is not one of its bounds). None when no bound lies between T and 4T.
fn apdex(svc: &Service, slo: &Slo, t: Decimal) -> Result<Value> {
    let limit = t * Decimal::from(APDEX_TOLERATING_FACTOR);
    let Some(tolerating) = svc.buckets.get(&slo.sli.histogram).and_then(|bounds| {
        bounds
            .iter()
            .copied()
            .filter(|b| *b > t && *b <= limit)
            .max()
    }) else {
        return Ok(Value::Null);
    };
    Ok(json!({
        "t": json_number(t),
        "tolerating": json_number(tolerating),
        "satisfied_matcher": le_matcher(t),
        "tolerating_matcher": le_matcher(tolerating),
        "datadog_satisfied": dd_under(svc, &slo.sli.histogram, t)?,
        "datadog_tolerating": dd_under(svc, &slo.sli.histogram, tolerating)?,
    }))
}

fn slo_entry(svc: &Service, slo: &Slo) -> Result<Value> {
    let mut e = Map::new();
    e.insert("name".into(), json!(slo.name));
    e.insert("display_name".into(), json!(slo.display_name));
    e.insert("objective_text".into(), json!(slo.objective_text));
    e.insert("objective".into(), json_number(slo.objective));
    e.insert("error_budget".into(), json_number(slo.budget()));
    e.insert("period".into(), json!(prom_duration(slo.period)));
    e.insert("histogram".into(), json!(slo.sli.histogram));
    e.insert("selector".into(), matchers(&slo.sli.selector)?);
    match &slo.sli.kind {
        SliKind::BadWhere(bad) => {
            e.insert("kind".into(), json!("bad_where"));
            e.insert("bad".into(), matchers(bad)?);
        }
        SliKind::GoodUnder(le) => {
            e.insert("kind".into(), json!("good_under"));
            e.insert("good_le".into(), json_number(*le));
            e.insert("good_le_matcher".into(), json!(le_matcher(*le)));
            e.insert(
                "datadog_good".into(),
                json!(dd_under(svc, &slo.sli.histogram, *le)?),
            );
            e.insert("apdex".into(), apdex(svc, slo, *le)?);
        }
    }
    e.insert(
        "tiers".into(),
        slo.tiers
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "severity": t.severity.as_str(),
                    "burn_rate": json_number(t.burn_rate),
                    "long": prom_duration(t.long),
                    "short": prom_duration(t.short),
                })
            })
            .collect(),
    );
    let ratios: Map<String, Value> = Service::windows(slo)
        .into_iter()
        .map(|(w, _)| w)
        .chain([slo.period])
        .map(|w| (prom_duration(w), json!(ratio_record(w))))
        .collect();
    e.insert(
        "records".into(),
        json!({
            "error_ratio": ratios,
            "objective": OBJECTIVE_RECORD,
            "error_budget": ERROR_BUDGET_RECORD,
            "period_burn_rate": PERIOD_BURN_RECORD,
            "budget_remaining": BUDGET_REMAINING_RECORD,
        }),
    );
    // The bound of a Cloud Monitoring stand-in (the subscription's oldest unacked age), which
    // the pipeline panels draw.
    if let Some(CloudMonitoringSli::MeanInRange { max: Some(max), .. }) = &slo.cloud_monitoring {
        e.insert("cloud_monitoring_max".into(), json_number(*max));
    }
    Ok(Value::Object(e))
}

/// The model of every service.
pub fn model(services: &[Service], generated_by: &str) -> Result<Value> {
    let mut out = Vec::new();
    for svc in services {
        let mut records: Vec<String> = svc.slos.iter().flat_map(record_names).collect();
        records.sort();
        records.dedup();
        out.push(json!({
            "name": svc.name,
            "source": svc.source,
            "dashboard": svc.dashboard,
            "buckets": svc.buckets.iter()
                .map(|(h, b)| (h.clone(), b.iter().map(|d| json_number(*d)).collect::<Value>()))
                .collect::<Map<String, Value>>(),
            "recording_rules": records,
            "slos": svc.slos.iter().map(|s| slo_entry(svc, s)).collect::<Result<Vec<_>>>()?,
        }));
    }
    Ok(json!({"generated_by": generated_by, "services": out}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::project_service as service;

    #[test]
    fn apdex_tolerates_up_to_the_largest_bucket_within_four_times_the_threshold() {
        let svc = service();
        let m = model(std::slice::from_ref(&svc), "test").unwrap();
        let slos = &m["services"][0]["slos"];
        // ingest: T = 0.25 s, 4T = 1 s is a bucket bound.
        assert_eq!(slos[1]["apdex"]["tolerating"], json!(1.0));
        assert_eq!(
            slos[1]["apdex"]["tolerating_matcher"],
            json!(r#"le=~"1|1\\.0""#)
        );
        // getData: T = 1 s, 4T = 4 s is not; 2.5 s is the largest bound under it.
        assert_eq!(slos[2]["apdex"]["tolerating"], json!(2.5));
        assert!(slos[0]["apdex"].is_null(), "availability has no latency");
    }

    #[test]
    fn the_model_names_the_summary_records_and_every_window_the_rules_record() {
        let svc = service();
        let m = model(std::slice::from_ref(&svc), "test").unwrap();
        let slo = &m["services"][0]["slos"][0];
        assert_eq!(
            slo["records"]["budget_remaining"],
            "slo:period_error_budget_remaining:ratio"
        );
        assert_eq!(
            slo["records"]["error_ratio"]["30d"],
            "slo:sli_error:ratio_rate30d"
        );
        let rules = m["services"][0]["recording_rules"].as_array().unwrap();
        assert!(rules.contains(&json!("slo:objective:ratio")));
        assert!(rules.contains(&json!("slo:sli_error:ratio_rate5m")));
    }
}
