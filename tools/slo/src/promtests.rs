//! promtool unit tests of the generated rules, generated from the same spec so that every SLO and
//! every tier is covered: raw counters go in, and the tests check when alerts fire.
//!
//! Several files per SLO in `alerts/tests/<service>/`, because promtool sets the evaluation
//! interval per file and evaluates every rule it loads at every step (a minute-by-minute
//! evaluation of three days would take minutes):
//! - `<slo>.<tier>.test.yml` (evaluation a fifth of the short window or finer): a total outage
//!   after a healthy long window pages or tickets the tier within the time the tier promises,
//!   and the tier resolves within its short window after recovery;
//! - `absent.test.yml`: missing metrics raise the absent alert of every SLO;
//! - `<slo>.steady.test.yml` (every hour, windows full): healthy traffic is silent,
//!   a sustained burn between two thresholds fires exactly the tiers below it (a slow burn
//!   tickets without paging), a total outage fires all, and too little traffic never pages;
//! - `<slo>.budget.test.yml` (every hour over the whole period): the budget-exhausted alert
//!   tickets when more than the budget is spent over the period, not before, not on too few
//!   events, and resolves once the spending has left the window; the summary records
//!   (objective, error budget, period, budget remaining) hold the values the spec gives.

use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write;

use crate::prometheus::{
    absent_annotations, absent_labels, burn_annotations, exhausted_annotations, slo_labels,
    BUDGET_REMAINING_RECORD, ERROR_BUDGET_RECORD, OBJECTIVE_RECORD, PERIOD_BURN_RECORD,
    PERIOD_DAYS_RECORD,
};
use crate::spec::{Service, Severity, SliKind, Slo, Tier};
use crate::units::{go_g4, plain, prom_duration};

/// Events per minute in the generated traffic (10 per second).
const RATE: u64 = 600;
/// Burn rate of "healthy" traffic: bad events do occur, at half the sustainable rate.
const HEALTHY_BURN: &str = "0.5";
/// Out-of-scope traffic runs at this multiple of the in-scope rate, all of it bad, to prove that
/// selectors exclude it.
const NOISE_FACTOR: u64 = 5;

/// A stretch of constant traffic.
struct Phase {
    minutes: u64,
    total: Decimal,
    bad: Decimal,
}

fn d(n: u64) -> Decimal {
    Decimal::from(n)
}

fn healthy() -> Decimal {
    HEALTHY_BURN.parse().expect("a decimal")
}

/// One input series: labels and its per-minute increment in each phase.
struct Series {
    name: String,
    incs: Vec<Decimal>,
}

fn series_text(name: &str, labels: &BTreeMap<String, String>) -> String {
    let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", body.join(","))
}

/// The input series of an SLO for these phases, derived from its selectors and examples, all
/// labelled with the service as its scrape target labels them. The noise, all bad: the same
/// series outside the first matcher of the selector, and the same series of another service
/// (the rules are scoped to `service`: prometheus.rs).
fn input_series(svc: &Service, slo: &Slo, phases: &[Phase]) -> Vec<Series> {
    let mut base: BTreeMap<String, String> = slo
        .sli
        .selector
        .iter()
        .map(|(l, m)| (l.clone(), m.examples()[0].clone()))
        .collect();
    base.insert("service".into(), svc.name.clone());
    let mut noise_bases: Vec<BTreeMap<String, String>> = slo
        .sli
        .selector
        .first()
        .map(|(l, _)| {
            let mut b = base.clone();
            b.insert(l.clone(), "out-of-scope".into());
            b
        })
        .into_iter()
        .collect();
    let mut other = base.clone();
    other.insert("service".into(), format!("not-{}", svc.name));
    noise_bases.push(other);
    let h = &slo.sli.histogram;
    let mut out = Vec::new();
    let per = |f: &dyn Fn(&Phase) -> Decimal| phases.iter().map(f).collect::<Vec<_>>();
    match &slo.sli.kind {
        SliKind::BadWhere(bad) => {
            let (first_label, first) = &bad[0];
            let mut others = base.clone();
            for (l, m) in &bad[1..] {
                others.insert(l.clone(), m.examples()[0].clone());
            }
            let goods = first.counterexamples();
            let bads = first.examples();
            for g in goods {
                let mut labels = others.clone();
                labels.insert(first_label.clone(), g.clone());
                let n = d(goods.len() as u64);
                out.push(Series {
                    name: series_text(&format!("{h}_count"), &labels),
                    incs: per(&|p| (p.total - p.bad) / n),
                });
            }
            for b in bads {
                let mut labels = others.clone();
                labels.insert(first_label.clone(), b.clone());
                let n = d(bads.len() as u64);
                out.push(Series {
                    name: series_text(&format!("{h}_count"), &labels),
                    incs: per(&|p| p.bad / n),
                });
            }
            for mut nb in noise_bases {
                for (l, m) in bad {
                    nb.insert(l.clone(), m.examples()[0].clone());
                }
                out.push(Series {
                    name: series_text(&format!("{h}_count"), &nb),
                    incs: per(&|p| p.total * d(NOISE_FACTOR)),
                });
            }
        }
        SliKind::GoodUnder(le) => {
            let with_le = |b: &BTreeMap<String, String>, le: &str| {
                let mut l = b.clone();
                l.insert("le".into(), le.into());
                l
            };
            out.push(Series {
                name: series_text(&format!("{h}_bucket"), &with_le(&base, &plain(*le))),
                incs: per(&|p| p.total - p.bad),
            });
            out.push(Series {
                name: series_text(&format!("{h}_bucket"), &with_le(&base, "+Inf")),
                incs: per(&|p| p.total),
            });
            out.push(Series {
                name: series_text(&format!("{h}_count"), &base),
                incs: per(&|p| p.total),
            });
            for nb in noise_bases {
                out.push(Series {
                    name: series_text(&format!("{h}_bucket"), &with_le(&nb, &plain(*le))),
                    incs: per(&|_| Decimal::ZERO),
                });
                out.push(Series {
                    name: series_text(&format!("{h}_count"), &nb),
                    incs: per(&|p| p.total * d(NOISE_FACTOR)),
                });
            }
        }
    }
    out
}

/// promtool's expanding notation for a counter growing by `incs[i]` per minute in phase i.
fn values(incs: &[Decimal], phases: &[Phase]) -> String {
    let mut parts = Vec::new();
    let mut value = Decimal::ZERO;
    for (i, (inc, p)) in incs.iter().zip(phases).enumerate() {
        if i == 0 {
            parts.push(format!("0+{}x{}", plain(*inc), p.minutes));
            value = *inc * d(p.minutes);
        } else {
            let start = value + inc;
            parts.push(format!(
                "{}+{}x{}",
                plain(start),
                plain(*inc),
                p.minutes - 1
            ));
            value += *inc * d(p.minutes);
        }
    }
    parts.join(" ")
}

fn write_inputs(out: &mut String, svc: &Service, slo: &Slo, phases: &[Phase]) {
    write_inputs_every(out, svc, slo, phases, "1m");
}

/// The input series with one sample every `interval` (a phase's `minutes` then counts samples).
fn write_inputs_every(
    out: &mut String,
    svc: &Service,
    slo: &Slo,
    phases: &[Phase],
    interval: &str,
) {
    let _ = writeln!(out, "    interval: {interval}\n    input_series:");
    for s in input_series(svc, slo, phases) {
        let _ = writeln!(
            out,
            "      - series: '{}'\n        values: '{}'",
            s.name,
            values(&s.incs, phases)
        );
    }
}

fn minutes(seconds: u64) -> u64 {
    seconds.div_ceil(60)
}

fn alerts_expr(alert: &str, extra: &str) -> String {
    format!("ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"{extra}}}")
}

fn firing_sample(svc: &Service, slo: &Slo, alert: &str, tier: &Tier) -> String {
    format!(
        "ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",service=\"{}\",severity=\"{}\",slo=\"{}\",tier=\"{}\"}}",
        svc.name,
        tier.severity.as_str(),
        slo.name,
        tier.name
    )
}

fn promql(out: &mut String, at: u64, expr: &str, sample: Option<&str>, why: &str) {
    promql_at(out, &format!("{at}m"), expr, sample, why);
}

/// A `promql_expr_test` at a promtool duration (`90m`, `361h`).
fn promql_at(out: &mut String, at: &str, expr: &str, sample: Option<&str>, why: &str) {
    let _ = writeln!(out, "      # {why}");
    let _ = writeln!(out, "      - expr: '{expr}'\n        eval_time: {at}");
    match sample {
        Some(s) => {
            let _ = writeln!(
                out,
                "        exp_samples:\n          - labels: '{s}'\n            value: 1"
            );
        }
        None => out.push_str("        exp_samples: []\n"),
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// An expected firing burn-rate alert with its annotations rendered for `ratio`.
fn expected_burn(out: &mut String, svc: &Service, slo: &Slo, tier: &Tier, ratio: Decimal) {
    let (summary, description) = burn_annotations(svc, slo, tier);
    let value: f64 = plain(ratio).parse().expect("a float");
    let description = description.replace(
        "{{ $value | humanizePercentage }}",
        &format!("{}%", go_g4(value * 100.0)),
    );
    let _ = writeln!(
        out,
        "          - exp_labels:\n              service: {}\n              slo: {}\n              severity: {}\n              tier: {}",
        svc.name,
        slo.name,
        tier.severity.as_str(),
        tier.name
    );
    exp_annotations(out, svc, &summary, &description, &svc.burn_alert(slo));
}

/// The annotations every generated alert carries, as promtool expects them.
fn exp_annotations(out: &mut String, svc: &Service, summary: &str, description: &str, alert: &str) {
    let _ = writeln!(
        out,
        "            exp_annotations:\n              summary: {}\n              description: {}\n              runbook_url: {}",
        yaml_str(summary),
        yaml_str(description),
        svc.runbook(alert)
    );
    if let Some(d) = &svc.dashboard {
        let _ = writeln!(out, "              dashboard_url: {}", yaml_str(d));
    }
}

/// An expected firing budget-exhausted alert with its description rendered for `ratio`.
fn expected_exhausted(out: &mut String, svc: &Service, slo: &Slo, ratio: Decimal) {
    let (summary, description) = exhausted_annotations(svc, slo);
    let value: f64 = plain(ratio).parse().expect("a float");
    let description = description.replace(
        "{{ $value | humanizePercentage }}",
        &format!("{}%", go_g4(value * 100.0)),
    );
    let _ = writeln!(
        out,
        "          - exp_labels:\n              service: {}\n              slo: {}\n              severity: ticket",
        svc.name, slo.name
    );
    exp_annotations(out, svc, &summary, &description, &svc.exhausted_alert(slo));
}

fn ceil_to(step: u64, m: u64) -> u64 {
    m.div_ceil(step) * step
}

/// The evaluation interval of a tier's timing tests, in minutes: the largest of 1m, 5m, 15m,
/// 1h that still samples the short window five times (fewer evaluations, same verdicts).
pub fn tier_interval(tier: &Tier) -> u64 {
    [60, 15, 5, 1]
        .into_iter()
        .find(|i| i * 5 <= minutes(tier.short))
        .unwrap_or(1)
}

/// The timing tests of one tier across a service's SLOs: a total outage after a healthy long
/// window fires the tier within its deadline, and it resolves within its short window after
/// recovery. Evaluation every [`tier_interval`].
pub fn timing_tests(
    svc: &Service,
    slo: &Slo,
    tier: &Tier,
    header: &str,
    rules_file: &str,
) -> String {
    let mut out = String::new();
    out.push_str(header);
    let i = tier_interval(tier);
    let _ = writeln!(
        out,
        "rule_files:\n  - {rules_file}\nevaluation_interval: {i}m\ntests:"
    );
    {
        let alert = svc.burn_alert(slo);
        let budget = slo.budget();
        let baseline = ceil_to(i, minutes(tier.long));
        // A total outage reaches the threshold ratio over the long window after
        // long * burn * budget (less, since the healthy baseline had some errors too); the
        // deadline rounds that up to an evaluation and adds one more.
        let reach = (d(tier.long) * slo.threshold(tier)).ceil();
        let deadline = ceil_to(i, minutes(reach.try_into().unwrap_or(u64::MAX))) + i;
        let outage = deadline + i;
        let resolve_after = ceil_to(i, minutes(tier.short)) + i;
        let recovery = resolve_after + i;
        let (t0, tr) = (baseline, baseline + outage);
        let end = tr + recovery;
        let h = healthy() * budget * d(RATE);
        let phases = [
            Phase {
                minutes: baseline,
                total: d(RATE),
                bad: h,
            },
            Phase {
                minutes: outage,
                total: d(RATE),
                bad: d(RATE),
            },
            Phase {
                minutes: recovery,
                total: d(RATE),
                bad: h,
            },
        ];
        let _ = writeln!(
            out,
            "  # {} {}, {} tier: {} healthy (burn {HEALTHY_BURN}), a total outage from minute \
             {t0} to {tr}, then healthy again.",
            svc.name,
            slo.name,
            tier.name,
            prom_duration(baseline * 60)
        );
        out.push_str("  - ");
        let mut body = String::new();
        write_inputs(&mut body, svc, slo, &phases);
        out.push_str(body.trim_start());
        out.push_str("    promql_expr_test:\n");
        promql(
            &mut out,
            t0,
            &alerts_expr(&alert, ""),
            None,
            "healthy, non-zero traffic: silent",
        );
        promql(
            &mut out,
            t0,
            &alerts_expr(&svc.absent_alert(), &format!(",slo=\"{}\"", slo.name)),
            None,
            "metrics present: no absent alert",
        );
        let sample = firing_sample(svc, slo, &alert, tier);
        let ex = alerts_expr(&alert, &format!(",tier=\"{}\"", tier.name));
        promql(
            &mut out,
            t0 + deadline,
            &ex,
            Some(&sample),
            &format!(
                "{}s within {}m of a total outage (threshold reached after {}s)",
                tier.severity.as_str(),
                deadline,
                reach
            ),
        );
        promql(&mut out, tr, &ex, Some(&sample), "still firing at recovery");
        promql(
            &mut out,
            tr + resolve_after,
            &ex,
            None,
            &format!(
                "resolved within {}m of recovery (short window {})",
                resolve_after,
                prom_duration(tier.short)
            ),
        );
        let _ = end;
    }
    out
}

/// Missing metrics: with no SLI series at all (only an unrelated one), every SLO's absent alert
/// fires after its `for`, and no burn-rate alert does.
pub fn absent_tests(svc: &Service, header: &str, rules_files: &[String]) -> String {
    let mut out = String::new();
    out.push_str(header);
    out.push_str("rule_files:\n");
    for f in rules_files {
        let _ = writeln!(out, "  - {f}");
    }
    out.push_str("evaluation_interval: 1m\ntests:\n");
    let absent = svc.absent_alert();
    let wait = minutes(svc.slos.iter().map(|s| s.absent_for).max().unwrap_or(60));
    let _ = writeln!(
        out,
        "  # {}: no SLI metrics at all; every SLO's absent alert fires after its `for`.",
        svc.name
    );
    let _ = writeln!(
        out,
        "  - interval: 1m\n    input_series:\n      - series: 'up{{job=\"unrelated\"}}'\n        values: '1x{}'",
        wait + 2
    );
    out.push_str("    alert_rule_test:\n");
    let short_wait = minutes(svc.slos.iter().map(|s| s.absent_for).min().unwrap_or(60));
    let _ = writeln!(
        out,
        "      - alertname: {absent}\n        eval_time: {}m\n        exp_alerts: []",
        short_wait - 1
    );
    let _ = writeln!(
        out,
        "      - alertname: {absent}\n        eval_time: {}m\n        exp_alerts:",
        wait + 1
    );
    for slo in &svc.slos {
        let (summary, description) = absent_annotations(svc, slo);
        let _ = writeln!(
            out,
            "          - exp_labels:\n              severity: ticket\n              service: {}\n              slo: {}",
            svc.name, slo.name
        );
        for (l, v) in absent_labels(slo) {
            let _ = writeln!(out, "              {l}: {}", yaml_str(&v));
        }
        exp_annotations(&mut out, svc, &summary, &description, &absent);
    }
    for slo in &svc.slos {
        let _ = writeln!(
            out,
            "      - alertname: {}\n        eval_time: {}m\n        exp_alerts: []",
            svc.burn_alert(slo),
            wait + 1
        );
    }
    out
}

/// The steady-state tests of one SLO (evaluation every hour, all windows full).
pub fn steady_tests(svc: &Service, slo: &Slo, header: &str, rules_file: &str) -> String {
    let mut out = String::new();
    out.push_str(header);
    let _ = writeln!(
        out,
        "rule_files:\n  - {rules_file}\nevaluation_interval: 1h\ntests:"
    );
    {
        let alert = svc.burn_alert(slo);
        let budget = slo.budget();
        let span = ceil_to(
            60,
            minutes(slo.tiers.iter().map(|t| t.long).max().unwrap_or(0)),
        ) + 60;
        let mut thresholds: Vec<Decimal> = slo.tiers.iter().map(|t| t.burn_rate).collect();
        thresholds.sort();
        thresholds.dedup();
        let max = slo.max_burn();
        let mut levels = vec![(healthy(), "healthy traffic: silent".to_string())];
        for pair in thresholds.windows(2) {
            levels.push(((pair[0] + pair[1]) / d(2), String::new()));
        }
        if let Some(top) = thresholds.last() {
            levels.push(((*top + max) / d(2), String::new()));
        }
        levels.push((max, "a total outage fires every tier".into()));
        for (burn, why) in levels {
            let burn = burn.normalize();
            let firing: Vec<&Tier> = slo.tiers.iter().filter(|t| t.burn_rate < burn).collect();
            let why = if why.is_empty() {
                let pages = firing.iter().any(|t| t.severity == Severity::Page);
                let names: Vec<&str> = firing.iter().map(|t| t.name.as_str()).collect();
                format!(
                    "fires {} only{}",
                    names.join(" + "),
                    if pages {
                        ""
                    } else {
                        ": a slow burn tickets without paging"
                    }
                )
            } else {
                why
            };
            let phases = [Phase {
                minutes: span,
                total: d(RATE),
                bad: burn * budget * d(RATE),
            }];
            let _ = writeln!(
                out,
                "  # {} {}: burn rate {} for {}: {why}.",
                svc.name,
                slo.name,
                plain(burn),
                prom_duration(span * 60)
            );
            out.push_str("  - ");
            let mut body = String::new();
            write_inputs(&mut body, svc, slo, &phases);
            out.push_str(body.trim_start());
            let _ = writeln!(
                out,
                "    alert_rule_test:\n      - alertname: {alert}\n        eval_time: {span}m"
            );
            if firing.is_empty() {
                out.push_str("        exp_alerts: []\n");
            } else {
                out.push_str("        exp_alerts:\n");
                for t in &firing {
                    expected_burn(&mut out, svc, slo, t, burn * budget);
                }
            }
            let _ = writeln!(
                out,
                "    promql_expr_test:\n      - expr: '{}'\n        eval_time: {span}m\n        exp_samples: []",
                alerts_expr(&svc.absent_alert(), &format!(",slo=\"{}\"", slo.name))
            );
        }

        // Too little traffic to judge: a total outage at a rate that puts fewer than
        // minimum-events into every paging tier's short window.
        let page_short = slo
            .tiers
            .iter()
            .filter(|t| t.severity == Severity::Page)
            .map(|t| t.short)
            .max();
        if let Some(page_short) = page_short {
            let rate = (d(slo.minimum_events) / (d(2) * d(minutes(page_short)))).round_dp(4);
            let firing: Vec<&Tier> = slo
                .tiers
                .iter()
                .filter(|t| rate * d(minutes(t.short)) >= d(slo.minimum_events))
                .collect();
            assert!(firing.iter().all(|t| t.severity == Severity::Ticket));
            let phases = [Phase {
                minutes: span,
                total: rate,
                bad: rate,
            }];
            let _ = writeln!(
                out,
                "  # {} {}: every event bad, but only {} per minute: too little traffic to page on.",
                svc.name,
                slo.name,
                plain(rate)
            );
            out.push_str("  - ");
            let mut body = String::new();
            write_inputs(&mut body, svc, slo, &phases);
            out.push_str(body.trim_start());
            let _ = writeln!(
                out,
                "    alert_rule_test:\n      - alertname: {alert}\n        eval_time: {span}m"
            );
            if firing.is_empty() {
                out.push_str("        exp_alerts: []\n");
            } else {
                out.push_str("        exp_alerts:\n");
                for t in &firing {
                    expected_burn(&mut out, svc, slo, t, Decimal::ONE);
                }
            }
        }
    }
    out
}

/// The budget-exhausted tests of one SLO: one sample every hour over the whole period, one
/// evaluation a day (each evaluation of every loaded rule reads the period's samples; hourly it
/// took 20 s a file). Spending 90 % of the budget is silent and 110 % tickets; too few events
/// never judge; an outage that spends the budget fires, and the alert resolves once the outage
/// has left the period's window.
pub fn budget_tests(svc: &Service, slo: &Slo, header: &str, rules_file: &str) -> String {
    let mut out = String::new();
    out.push_str(header);
    let hours = slo.period.div_ceil(3600);
    // Every eval_time below is a multiple of the evaluation interval, so it is evaluated exactly.
    let step = if hours.is_multiple_of(24) { 24 } else { 1 };
    let _ = writeln!(
        out,
        "rule_files:\n  - {rules_file}\nevaluation_interval: {}\ntests:",
        prom_duration(step * 3600)
    );
    let alert = svc.exhausted_alert(slo);
    let budget = slo.budget();
    let span = hours + step;
    let per_hour = d(RATE * 60);
    let period = prom_duration(slo.period);
    let absent_clean = |out: &mut String, at: u64| {
        let _ = writeln!(
            out,
            "    promql_expr_test:\n      - expr: '{}'\n        eval_time: {at}h\n        exp_samples: []",
            alerts_expr(&svc.absent_alert(), &format!(",slo=\"{}\"", slo.name))
        );
    };
    let spent: [(&str, &str); 2] = [("0.9", "90 %"), ("1.1", "110 %")];
    for (burn, share) in spent {
        let burn: Decimal = burn.parse().expect("a decimal");
        let fires = burn > Decimal::ONE;
        let phases = [Phase {
            minutes: span,
            total: per_hour,
            bad: burn * budget * per_hour,
        }];
        let _ = writeln!(
            out,
            "  # {} {}: burn rate {} for {}: {share} of the budget spent over the last {period}{}.",
            svc.name,
            slo.name,
            plain(burn),
            prom_duration(span * 3600),
            if fires { ": a ticket" } else { ": silent" }
        );
        out.push_str("  - ");
        let mut body = String::new();
        write_inputs_every(&mut body, svc, slo, &phases, "1h");
        out.push_str(body.trim_start());
        let _ = writeln!(
            out,
            "    alert_rule_test:\n      - alertname: {alert}\n        eval_time: {span}h"
        );
        if fires {
            out.push_str("        exp_alerts:\n");
            expected_exhausted(&mut out, svc, slo, burn * budget);
        } else {
            out.push_str("        exp_alerts: []\n");
        }
        absent_clean(&mut out, span);
        // The summary records: `== bool` and a tolerance give 1 or 0, so a wrong value fails
        // the test instead of being compared as a float.
        let l = slo_labels(svc, slo);
        let at = format!("{span}h");
        let sample = format!("{{{l}}}");
        let days = (Decimal::from(slo.period) / Decimal::from(86_400u64)).normalize();
        for (record, value) in [
            (OBJECTIVE_RECORD, slo.objective),
            (ERROR_BUDGET_RECORD, budget),
            (PERIOD_DAYS_RECORD, days),
        ] {
            promql_at(
                &mut out,
                &at,
                &format!("{record}{{{l}}} == bool {}", plain(value)),
                Some(&sample),
                &format!("{record} is {} as the spec says", plain(value)),
            );
        }
        for (record, value) in [
            (PERIOD_BURN_RECORD, burn),
            (BUDGET_REMAINING_RECORD, Decimal::ONE - burn),
        ] {
            promql_at(
                &mut out,
                &at,
                &format!("abs({record}{{{l}}} - {}) < bool 0.000001", plain(value)),
                Some(&sample),
                &format!("{share} of the budget spent: {record} is {}", plain(value)),
            );
        }
    }

    // Every event bad, but fewer than minimum-events over the whole period.
    let rate = (d(slo.minimum_events) / (d(2) * d(span))).round_dp(6);
    let phases = [Phase {
        minutes: span,
        total: rate,
        bad: rate,
    }];
    let _ = writeln!(
        out,
        "  # {} {}: every event bad, but only {} per hour: too few events over {period} to judge.",
        svc.name,
        slo.name,
        plain(rate)
    );
    out.push_str("  - ");
    let mut body = String::new();
    write_inputs_every(&mut body, svc, slo, &phases, "1h");
    out.push_str(body.trim_start());
    let _ = writeln!(
        out,
        "    alert_rule_test:\n      - alertname: {alert}\n        eval_time: {span}h\n        exp_alerts: []"
    );

    // A total outage long enough to spend twice the budget of the period, then healthy traffic:
    // spent halfway through, and silent again once the outage is older than the period.
    let outage = (d(2) * budget * d(hours)).ceil();
    let outage: u64 = outage.try_into().unwrap_or(1).max(1);
    let (mid, end) = (
        ceil_to(step, outage + hours / 2),
        ceil_to(step, outage + hours + 1),
    );
    let healthy_hours = end - outage;
    let phases = [
        Phase {
            minutes: outage,
            total: per_hour,
            bad: per_hour,
        },
        Phase {
            minutes: healthy_hours,
            total: per_hour,
            bad: healthy() * budget * per_hour,
        },
    ];
    let _ = writeln!(
        out,
        "  # {} {}: a total outage for {} (twice the budget of {period}), then healthy (burn \
         {HEALTHY_BURN}) until the outage has left the window.",
        svc.name,
        slo.name,
        prom_duration(outage * 3600)
    );
    out.push_str("  - ");
    let mut body = String::new();
    write_inputs_every(&mut body, svc, slo, &phases, "1h");
    out.push_str(body.trim_start());
    out.push_str("    promql_expr_test:\n");
    let ex = alerts_expr(&alert, "");
    let sample = format!(
        "ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",service=\"{}\",severity=\"ticket\",slo=\"{}\"}}",
        svc.name, slo.name
    );
    promql_at(
        &mut out,
        &format!("{mid}h"),
        &ex,
        Some(&sample),
        "the outage is inside the window: the budget is spent",
    );
    promql_at(
        &mut out,
        &format!("{end}h"),
        &ex,
        None,
        "the outage has left the window: silent again",
    );
    out
}
