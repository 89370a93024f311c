//! Prometheus recording and alerting rules from a [`Service`]: per SLO the error ratio over every
//! window its tiers use (a ratio of sums of counter rates, never an average of short ratios), the
//! event count of each short window (the low-traffic guard), one alert per tier and one
//! absent-metrics alert.

use rust_decimal::Decimal;
use std::fmt::Write;

use crate::spec::{Matcher, Selector, Service, SliKind, Slo, Tier};
use crate::units::{human_duration, percent, plain, prom_duration};

/// Recording rule of the error ratio over `window` seconds.
pub fn ratio_record(window: u64) -> String {
    format!("slo:sli_error:ratio_rate{}", prom_duration(window))
}

/// Recording rule of the number of events over `window` seconds.
pub fn events_record(window: u64) -> String {
    format!("slo:sli_events:increase{}", prom_duration(window))
}

/// Sloth's summary records (sloth.dev): what dashboards read instead of rebuilding the SLI.
/// The objective and the error budget as ratios, and the period in days, recorded each
/// evaluation of the SLO's group.
pub const OBJECTIVE_RECORD: &str = "slo:objective:ratio";
pub const ERROR_BUDGET_RECORD: &str = "slo:error_budget:ratio";
pub const PERIOD_DAYS_RECORD: &str = "slo:time_period:days";
/// Error ratio over the whole period / the error budget, and 1 minus it: the share of the
/// period's budget left (below 0 the objective is missed).
pub const PERIOD_BURN_RECORD: &str = "slo:period_burn_rate:ratio";
pub const BUDGET_REMAINING_RECORD: &str = "slo:period_error_budget_remaining:ratio";

/// Every recording rule name the rules of `slo` write, in the order they are written.
pub fn record_names(slo: &Slo) -> Vec<String> {
    let mut names = Vec::new();
    for (w, is_short) in Service::windows(slo) {
        names.push(ratio_record(w));
        if is_short {
            names.push(events_record(w));
        }
    }
    names.extend([OBJECTIVE_RECORD, ERROR_BUDGET_RECORD, PERIOD_DAYS_RECORD].map(String::from));
    names.push(ratio_record(slo.period));
    names.push(events_record(slo.period));
    names.extend([PERIOD_BURN_RECORD, BUDGET_REMAINING_RECORD].map(String::from));
    names
}

/// Escapes a literal for an RE2 regex.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A PromQL string literal (double quotes; backslashes doubled).
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A matcher as PromQL: one exact value is `=`, several an anchored alternation.
pub fn matcher_promql(label: &str, m: &Matcher) -> String {
    match m {
        Matcher::In { values, .. } if values.len() == 1 => format!("{label}={}", lit(&values[0])),
        Matcher::In { values, .. } => format!(
            "{label}=~{}",
            lit(&values
                .iter()
                .map(|v| regex_escape(v))
                .collect::<Vec<_>>()
                .join("|"))
        ),
        Matcher::Regex { regex, .. } => format!("{label}=~{}", lit(regex)),
    }
}

/// The `le` matcher of a bucket boundary. Exporters write a whole boundary as `1` or `1.0`
/// (Prometheus 3 rewrites both to `1.0`), so whole numbers match either spelling.
pub fn le_matcher(le: Decimal) -> String {
    let p = plain(le);
    if le.fract().is_zero() {
        format!("le=~{}", lit(&format!("{p}|{p}\\.0")))
    } else {
        format!("le={}", lit(&p))
    }
}

/// `{a="x",b=~"y|z"}` (empty braces when no matcher).
pub fn selector(sel: &Selector, extra: &[String]) -> String {
    let mut parts: Vec<String> = sel.iter().map(|(l, m)| matcher_promql(l, m)).collect();
    parts.extend(extra.iter().cloned());
    format!("{{{}}}", parts.join(","))
}

/// `service="<name>"`: every scrape target of a service carries its name as `service` (the
/// dashboards select on it: dashboards/README.md), and the SLI is this service's series only,
/// so that one Prometheus scraping several services (the fleet) records each one's SLO from
/// its own traffic instead of the sum of all of them.
fn service_matcher(svc: &Service) -> String {
    format!("service={}", lit(&svc.name))
}

fn total_series(svc: &Service, slo: &Slo) -> String {
    format!(
        "{}_count{}",
        slo.sli.histogram,
        selector(&slo.sli.selector, &[service_matcher(svc)])
    )
}

/// The error-ratio expression over `w`.
pub fn error_ratio_expr(svc: &Service, slo: &Slo, w: &str) -> String {
    let total = format!("sum(rate({}[{w}]))", total_series(svc, slo));
    match &slo.sli.kind {
        SliKind::BadWhere(bad) => {
            let mut sel = slo.sli.selector.clone();
            sel.extend(bad.iter().cloned());
            // `or vector(0)`: with no bad series yet the numerator is 0, not missing, so a
            // healthy SLI has a ratio (0) while an SLI with no traffic has none (0/0 drops out).
            format!(
                "(sum(rate({}_count{}[{w}])) or vector(0))\n/\n{total}",
                slo.sli.histogram,
                selector(&sel, &[service_matcher(svc)])
            )
        }
        SliKind::GoodUnder(le) => {
            let good = format!(
                "sum(rate({}_bucket{}[{w}]))",
                slo.sli.histogram,
                selector(&slo.sli.selector, &[service_matcher(svc), le_matcher(*le)])
            );
            format!("(\n  {total}\n  -\n  {good}\n)\n/\n{total}")
        }
    }
}

/// What makes an event bad, for alert text.
pub fn bad_event_text(slo: &Slo) -> String {
    match &slo.sli.kind {
        SliKind::BadWhere(bad) => format!("bad means {}", selector(bad, &[])),
        SliKind::GoodUnder(le) => format!("bad means slower than {} s", plain(*le)),
    }
}

/// The labels every series of an SLO carries.
pub fn slo_labels(svc: &Service, slo: &Slo) -> String {
    format!("service={},slo={}", lit(&svc.name), lit(&slo.name))
}

/// Summary and description of a tier's alert (static numbers are exact decimals).
pub fn burn_annotations(svc: &Service, slo: &Slo, tier: &Tier) -> (String, String) {
    let long = prom_duration(tier.long);
    let short = prom_duration(tier.short);
    let period = prom_duration(slo.period);
    let consumed = tier.burn_rate * Decimal::from(tier.long) / Decimal::from(slo.period);
    let exhaustion = (Decimal::from(slo.period) / tier.burn_rate).floor();
    let exhaustion: u64 = exhaustion.try_into().unwrap_or(u64::MAX);
    let summary = format!(
        "{} {}: error budget burning over {}x ({} tier, {})",
        svc.name,
        slo.name,
        plain(tier.burn_rate),
        tier.name,
        tier.severity.as_str()
    );
    let description = format!(
        "Error ratio {{{{ $value | humanizePercentage }}}} over the last {long}, and above {} \
         over the last {short} too ({}; at least {} events). Objective: {} over {period} \
         rolling, an error budget of {}. Above {} the budget burns over {}x the sustainable \
         rate: each {long} at that rate spends {} of the {period} budget, and the whole budget \
         is gone in {}.",
        percent(slo.threshold(tier)),
        bad_event_text(slo),
        slo.minimum_events,
        slo.objective_text,
        percent(slo.budget()),
        percent(slo.threshold(tier)),
        plain(tier.burn_rate),
        percent(consumed),
        human_duration(exhaustion),
    );
    (summary, description)
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn block(out: &mut String, indent: usize, key: &str, text: &str) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}{key}: |-");
    for line in text.lines() {
        let _ = writeln!(out, "{pad}  {line}");
    }
}

/// Summary and description of an SLO's budget-exhausted alert.
pub fn exhausted_annotations(svc: &Service, slo: &Slo) -> (String, String) {
    let period = prom_duration(slo.period);
    let budget = percent(slo.budget());
    let summary = format!(
        "{} {}: the {period} error budget is spent",
        svc.name, slo.name
    );
    let description = format!(
        "Error ratio {{{{ $value | humanizePercentage }}}} over the last {period}, above the \
         error budget of {budget} ({}; at least {} events): the objective, {}, is missed over \
         {period} rolling. The error-budget policy applies (slo/POLICY.md): releases of {} stop, \
         except fixes and reliability work, until the ratio over {period} is back under {budget}.",
        bad_event_text(slo),
        slo.minimum_events,
        slo.objective_text,
        svc.name,
    );
    (summary, description)
}

/// The budget-exhausted alert expression: more bad events over the whole period than the
/// objective allows, judged only with enough events.
pub fn exhausted_expr(svc: &Service, slo: &Slo) -> String {
    let l = slo_labels(svc, slo);
    format!(
        "{}{{{l}}} > {}\nand on (service, slo)\n{}{{{l}}} >= {}",
        ratio_record(slo.period),
        plain(slo.budget()),
        events_record(slo.period),
        slo.minimum_events
    )
}

/// `runbook_url` and, when the service names its dashboard, `dashboard_url`.
fn link_annotations(out: &mut String, svc: &Service, alert: &str) {
    let _ = writeln!(out, "          runbook_url: {}", svc.runbook(alert));
    if let Some(d) = &svc.dashboard {
        let _ = writeln!(out, "          dashboard_url: {}", yaml_str(d));
    }
}

/// The burn-rate alert expression of one tier.
pub fn burn_expr(svc: &Service, slo: &Slo, tier: &Tier) -> String {
    let l = slo_labels(svc, slo);
    let thr = plain(slo.threshold(tier));
    format!(
        "{}{{{l}}} > {thr}\nand on (service, slo)\n{}{{{l}}} > {thr}\nand on (service, slo)\n{}{{{l}}} >= {}",
        ratio_record(tier.long),
        ratio_record(tier.short),
        events_record(tier.short),
        slo.minimum_events
    )
}

/// A rules file with one group per SLO in `slos`.
pub fn rules(svc: &Service, slos: &[&Slo], header: &str) -> String {
    let mut out = String::new();
    out.push_str(header);
    out.push_str("groups:\n");
    for slo in slos {
        // One group per SLO, recordings first: rules of a group run in order, so each alert
        // reads the ratios of the same evaluation (separate groups run in no set order).
        let _ = writeln!(out, "  - name: slo-{}-{}", svc.name, slo.name);
        out.push_str("    rules:\n");
        for (w, is_short) in Service::windows(slo) {
            let ws = prom_duration(w);
            let _ = writeln!(out, "      - record: {}", ratio_record(w));
            block(&mut out, 8, "expr", &error_ratio_expr(svc, slo, &ws));
            let _ = writeln!(
                out,
                "        labels:\n          service: {}\n          slo: {}",
                svc.name, slo.name
            );
            if is_short {
                let _ = writeln!(out, "      - record: {}", events_record(w));
                let _ = writeln!(
                    out,
                    "        expr: sum(increase({}[{ws}]))",
                    total_series(svc, slo)
                );
                let _ = writeln!(
                    out,
                    "        labels:\n          service: {}\n          slo: {}",
                    svc.name, slo.name
                );
            }
        }
        let labels = format!(
            "        labels:\n          service: {}\n          slo: {}",
            svc.name, slo.name
        );
        let days = (Decimal::from(slo.period) / Decimal::from(86_400u64)).normalize();
        for (record, value) in [
            (OBJECTIVE_RECORD, slo.objective),
            (ERROR_BUDGET_RECORD, slo.budget()),
            (PERIOD_DAYS_RECORD, days),
        ] {
            let _ = writeln!(out, "      - record: {record}");
            let _ = writeln!(out, "        expr: vector({})", plain(value));
            let _ = writeln!(out, "{labels}");
        }
        let alert = svc.burn_alert(slo);
        for tier in &slo.tiers {
            let (summary, description) = burn_annotations(svc, slo, tier);
            let _ = writeln!(out, "      - alert: {alert}");
            block(&mut out, 8, "expr", &burn_expr(svc, slo, tier));
            let _ = writeln!(
                out,
                "        labels:\n          severity: {}\n          tier: {}",
                tier.severity.as_str(),
                tier.name
            );
            let _ = writeln!(out, "        annotations:");
            let _ = writeln!(out, "          summary: {}", yaml_str(&summary));
            let _ = writeln!(out, "          description: {}", yaml_str(&description));
            link_annotations(&mut out, svc, &alert);
        }
        let absent = svc.absent_alert();
        let (summary, description) = absent_annotations(svc, slo);
        let _ = writeln!(out, "      - alert: {absent}");
        let _ = writeln!(out, "        expr: absent({})", total_series(svc, slo));
        let _ = writeln!(out, "        for: {}", prom_duration(slo.absent_for));
        let _ = writeln!(
            out,
            "        labels:\n          severity: ticket\n          service: {}\n          slo: {}",
            svc.name, slo.name
        );
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(out, "          summary: {}", yaml_str(&summary));
        let _ = writeln!(out, "          description: {}", yaml_str(&description));
        link_annotations(&mut out, svc, &absent);

        // The whole period in a group of its own, evaluated every few minutes: a ratio over 30
        // days moves slowly, and each evaluation reads a month of samples.
        let period = prom_duration(slo.period);
        let _ = writeln!(out, "  - name: slo-{}-{}-budget", svc.name, slo.name);
        let _ = writeln!(out, "    interval: {}", prom_duration(svc.budget_eval));
        out.push_str("    rules:\n");
        let _ = writeln!(out, "      - record: {}", ratio_record(slo.period));
        block(&mut out, 8, "expr", &error_ratio_expr(svc, slo, &period));
        let _ = writeln!(out, "{labels}");
        let _ = writeln!(out, "      - record: {}", events_record(slo.period));
        let _ = writeln!(
            out,
            "        expr: sum(increase({}[{period}]))",
            total_series(svc, slo)
        );
        let _ = writeln!(out, "{labels}");
        // The budget is a literal, not slo:error_budget:ratio: that one is recorded by the
        // other group, which runs on its own schedule.
        let l = slo_labels(svc, slo);
        let _ = writeln!(out, "      - record: {PERIOD_BURN_RECORD}");
        let _ = writeln!(
            out,
            "        expr: {}{{{l}}} / {}",
            ratio_record(slo.period),
            plain(slo.budget())
        );
        let _ = writeln!(out, "{labels}");
        let _ = writeln!(out, "      - record: {BUDGET_REMAINING_RECORD}");
        let _ = writeln!(out, "        expr: 1 - {PERIOD_BURN_RECORD}{{{l}}}");
        let _ = writeln!(out, "{labels}");
        let exhausted = svc.exhausted_alert(slo);
        let (summary, description) = exhausted_annotations(svc, slo);
        let _ = writeln!(out, "      - alert: {exhausted}");
        block(&mut out, 8, "expr", &exhausted_expr(svc, slo));
        out.push_str("        labels:\n          severity: ticket\n");
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(out, "          summary: {}", yaml_str(&summary));
        let _ = writeln!(out, "          description: {}", yaml_str(&description));
        link_annotations(&mut out, svc, &exhausted);
    }
    out
}

/// Summary and description of the absent alert of one SLO.
pub fn absent_annotations(svc: &Service, slo: &Slo) -> (String, String) {
    (
        format!(
            "{} {}: no SLI metrics to judge the SLO by",
            svc.name, slo.name
        ),
        format!(
            "No series of {} for {} {} for {}: the burn-rate alerts of this SLO cannot fire. \
             The exporter, the scrape or the route is gone, or there has been no traffic at all.",
            total_series(svc, slo),
            svc.name,
            slo.name,
            prom_duration(slo.absent_for)
        ),
    )
}

/// Labels that `absent()` copies from the selector: its equality matchers.
pub fn absent_labels(slo: &Slo) -> Vec<(String, String)> {
    slo.sli
        .selector
        .iter()
        .filter_map(|(l, m)| match m {
            Matcher::In { values, .. } if values.len() == 1 => Some((l.clone(), values[0].clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::project_service as service;

    #[test]
    fn the_error_ratio_is_a_ratio_of_sums_and_zero_without_bad_events() {
        let svc = service();
        let expr = error_ratio_expr(&svc, &svc.slos[0], "1h");
        assert!(expr.starts_with(
            "(sum(rate(http_server_request_duration_seconds_count{http_route=~\"/challenge-latam-api/ingestData|/challenge-latam-api/getData\",http_response_status_code=~\"5..\",service=\"challenge-latam-api\"}[1h])) or vector(0))"
        ));
        assert!(expr.ends_with(
            "sum(rate(http_server_request_duration_seconds_count{http_route=~\"/challenge-latam-api/ingestData|/challenge-latam-api/getData\",service=\"challenge-latam-api\"}[1h]))"
        ));
    }

    #[test]
    fn whole_bucket_boundaries_match_both_spellings() {
        assert_eq!(le_matcher(Decimal::from(60)), r#"le=~"60|60\\.0""#);
        assert_eq!(le_matcher("0.25".parse().unwrap()), r#"le="0.25""#);
    }

    #[test]
    fn each_tier_needs_both_windows_and_enough_events() {
        let svc = service();
        let slo = &svc.slos[0];
        assert_eq!(
            burn_expr(&svc, slo, &slo.tiers[0]),
            "slo:sli_error:ratio_rate1h{service=\"challenge-latam-api\",slo=\"availability\"} > 0.0072\n\
             and on (service, slo)\n\
             slo:sli_error:ratio_rate5m{service=\"challenge-latam-api\",slo=\"availability\"} > 0.0072\n\
             and on (service, slo)\n\
             slo:sli_events:increase5m{service=\"challenge-latam-api\",slo=\"availability\"} >= 20"
        );
    }

    #[test]
    fn the_budget_is_exhausted_when_the_period_spends_more_than_the_budget() {
        let svc = service();
        let slo = &svc.slos[0];
        assert_eq!(
            exhausted_expr(&svc, slo),
            "slo:sli_error:ratio_rate30d{service=\"challenge-latam-api\",slo=\"availability\"} > 0.0005\n\
             and on (service, slo)\n\
             slo:sli_events:increase30d{service=\"challenge-latam-api\",slo=\"availability\"} >= 20"
        );
        let text = rules(&svc, &[slo], "");
        assert!(text
            .contains("  - name: slo-challenge-latam-api-availability-budget\n    interval: 5m\n"));
        assert!(text.contains(
            "runbook_url: alerts/runbooks/ChallengeLatamApiAvailabilityBudgetExhausted.md"
        ));
        let (_, d) = exhausted_annotations(&svc, slo);
        assert!(d.contains("error budget of 0.05 %"), "{d}");
        assert!(d.contains("slo/POLICY.md"), "{d}");
    }

    #[test]
    fn the_description_states_burn_rate_budget_spent_and_time_to_exhaustion() {
        let svc = service();
        let slo = &svc.slos[0];
        let (_, d) = burn_annotations(&svc, slo, &slo.tiers[0]);
        assert!(d.contains("14.4x"), "{d}");
        assert!(d.contains("spends 2 % of the 30d budget"), "{d}");
        assert!(d.contains("gone in 2d 2h"), "{d}");
    }
}
