//! Reads one service's OpenSLO v1 file and checks it into the model every generator works from.
//! All validation happens here, once: a spec that parses into a [`Service`] can be rendered for
//! every backend without further checks.

use anyhow::{anyhow, bail, ensure, Context, Result};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use crate::units::{decimal, parse_duration, plain};

/// Prefix of this project's OpenSLO extension annotations (slo/README.md, "The extension").
pub const EXT: &str = "slo.challenge-latam.dev/";
/// Evaluation interval of the budget-exhausted rule group, seconds (see [`Service::budget_eval`]).
pub const BUDGET_EVAL: u64 = 300;

/// One service: its SLOs, the tiers they alert on, and what the backends need to name things.
#[derive(Debug, Clone)]
pub struct Service {
    /// `metadata.name` of the `Service` document; also the `service` label of every rule.
    pub name: String,
    /// Path of the spec, relative to the repo root (`slo/<service>.yaml`).
    pub source: String,
    /// Where its generated files go: `alerts`, or `alerts/examples` for the example specs of
    /// `slo/examples/` (kept out of what Prometheus and Terraform load).
    pub out_dir: String,
    /// Alert names start with this (PascalCase).
    pub alert_prefix: String,
    /// Bucket boundaries of each histogram an SLI reads (the `buckets.<histogram>` annotation):
    /// Datadog counts a latency SLI's good events as the buckets at or under its threshold.
    pub buckets: BTreeMap<String, Vec<Decimal>>,
    /// Windows are divided by this in the drill profile.
    pub drill_compression: u64,
    /// Where the SLO dashboard of this service is (the `dashboard` annotation): every generated
    /// alert carries it as its `dashboard_url` annotation, for the notification templates.
    pub dashboard: Option<String>,
    /// Evaluation interval, seconds, of the rule group that judges each SLO's whole period (the
    /// budget-exhausted alert): a ratio over 30 days moves slowly and reads a month of samples.
    pub budget_eval: u64,
    /// The SLOs, in spec order.
    pub slos: Vec<Slo>,
}

/// How urgent a tier is: pages wake someone up, tickets wait for working hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Act now.
    Page,
    /// Act this week.
    Ticket,
}

impl Severity {
    /// The `severity` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window burn-rate tier (an OpenSLO `AlertPolicy` with one `burnrate` condition).
#[derive(Debug, Clone)]
pub struct Tier {
    /// `metadata.name` of the policy (`fast`, `medium`, ...).
    pub name: String,
    /// Page or ticket.
    pub severity: Severity,
    /// Fires when the error ratio exceeds `burn_rate * (1 - objective)` over both windows.
    pub burn_rate: Decimal,
    /// Long window, seconds (`lookbackWindow`).
    pub long: u64,
    /// Short window, seconds (the `short-window` extension annotation).
    pub short: u64,
}

/// A label matcher of an SLI selector.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The label has one of these exact values.
    In {
        /// Accepted values.
        values: Vec<String>,
        /// Values outside the set, for generated tests (only needed on a `bad` selector).
        counterexamples: Vec<String>,
    },
    /// The label fully matches this RE2 regex.
    Regex {
        /// The regex (Prometheus and Cloud Monitoring full-match it).
        regex: String,
        /// The same set as a Datadog wildcard (`5*`).
        datadog: Option<String>,
        /// Values that match, for generated tests.
        examples: Vec<String>,
        /// Values that do not, for generated tests.
        counterexamples: Vec<String>,
    },
}

impl Matcher {
    /// Values that match, as test data: the first is the one tests use most.
    pub fn examples(&self) -> &[String] {
        match self {
            Matcher::In { values, .. } => values,
            Matcher::Regex { examples, .. } => examples,
        }
    }
    /// Values that do not match.
    pub fn counterexamples(&self) -> &[String] {
        match self {
            Matcher::In {
                counterexamples, ..
            }
            | Matcher::Regex {
                counterexamples, ..
            } => counterexamples,
        }
    }
}

/// Label matchers, sorted by label name.
pub type Selector = Vec<(String, Matcher)>;

/// What makes an event bad.
#[derive(Debug, Clone)]
pub enum SliKind {
    /// Bad events are the total's events that also match these labels (e.g. 5xx).
    BadWhere(Selector),
    /// Good events are observations at or under this bucket boundary.
    GoodUnder(Decimal),
}

/// The Prometheus form of an SLI: events are observations of one histogram.
#[derive(Debug, Clone)]
pub struct PromSli {
    /// Histogram base name (`http_server_request_duration_seconds`).
    pub histogram: String,
    /// Which observations count at all.
    pub selector: Selector,
    /// How good is told from bad.
    pub kind: SliKind,
}

/// A Cloud Monitoring SLI given verbatim by the spec, where the app's metrics cannot say it.
#[derive(Debug, Clone)]
pub enum CloudMonitoringSli {
    /// `request_based_sli.good_total_ratio`.
    GoodTotalRatio {
        /// good_service_filter.
        good: Option<String>,
        /// bad_service_filter.
        bad: Option<String>,
        /// total_service_filter.
        total: Option<String>,
    },
    /// `windows_based_sli` with `metric_mean_in_range`.
    MeanInRange {
        /// window_period, e.g. `60s`.
        window_period: String,
        /// time_series filter.
        filter: String,
        /// range.min.
        min: Option<Decimal>,
        /// range.max.
        max: Option<Decimal>,
    },
}

/// A Datadog SLI given verbatim by the spec.
#[derive(Debug, Clone)]
pub struct DatadogTimeSlice {
    /// Metric query of the time-slice SLI.
    pub query: String,
    /// `<`, `<=`, `>` or `>=`.
    pub comparator: String,
    /// Threshold the query is compared with.
    pub threshold: Decimal,
    /// 60 or 300.
    pub query_interval_seconds: u64,
}

/// One SLO with its resolved tiers.
#[derive(Debug, Clone)]
pub struct Slo {
    /// `metadata.name` (kebab case): the `slo` label.
    pub name: String,
    /// For people.
    pub display_name: String,
    /// What the objective promises, for people.
    pub objective_text: String,
    /// What counts as good, for people.
    pub description: String,
    /// Target fraction of good events (0 < objective < 1).
    pub objective: Decimal,
    /// Rolling period, seconds.
    pub period: u64,
    /// The Prometheus SLI (rules, tests, and the derived Datadog/Cloud Monitoring queries).
    pub sli: PromSli,
    /// Burn-rate alerts need at least this many events in the short window to judge.
    pub minimum_events: u64,
    /// The absent-metrics alert waits this long, seconds.
    pub absent_for: u64,
    /// The tiers, in spec order.
    pub tiers: Vec<Tier>,
    /// Cloud Monitoring SLI override.
    pub cloud_monitoring: Option<CloudMonitoringSli>,
    /// Datadog SLI override.
    pub datadog: Option<DatadogTimeSlice>,
}

impl Slo {
    /// The error budget: the fraction of events allowed to be bad.
    pub fn budget(&self) -> Decimal {
        Decimal::ONE - self.objective
    }
    /// The error ratio above which `tier` fires.
    pub fn threshold(&self, tier: &Tier) -> Decimal {
        tier.burn_rate * self.budget()
    }
    /// The highest burn rate possible: every event bad.
    pub fn max_burn(&self) -> Decimal {
        Decimal::ONE / self.budget()
    }
}

impl Service {
    /// Alert name of an SLO's burn-rate alerts (one name, one rule per tier).
    pub fn burn_alert(&self, slo: &Slo) -> String {
        format!("{}{}BudgetBurn", self.alert_prefix, pascal(&slo.name))
    }
    /// `runbook_url` of an alert: a page in this repo.
    pub fn runbook(&self, alert: &str) -> String {
        format!("{}/runbooks/{alert}.md", self.out_dir)
    }
    /// Alert name of an SLO's budget-exhausted alert: the whole period's budget is spent.
    pub fn exhausted_alert(&self, slo: &Slo) -> String {
        format!("{}{}BudgetExhausted", self.alert_prefix, pascal(&slo.name))
    }
    /// Alert name of the absent-metrics alerts (one rule per SLO).
    pub fn absent_alert(&self) -> String {
        format!("{}SLIMetricsAbsent", self.alert_prefix)
    }
    /// Every alert name the generated rules use.
    pub fn alert_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.slos.iter().map(|s| self.burn_alert(s)).collect();
        names.extend(self.slos.iter().map(|s| self.exhausted_alert(s)));
        names.push(self.absent_alert());
        names
    }
    /// Every window any tier uses, ascending, each with whether some tier uses it as its short
    /// window (those also get an event-count recording for the low-traffic guard).
    pub fn windows(slo: &Slo) -> Vec<(u64, bool)> {
        let shorts: BTreeSet<u64> = slo.tiers.iter().map(|t| t.short).collect();
        let all: BTreeSet<u64> = slo.tiers.iter().flat_map(|t| [t.long, t.short]).collect();
        all.into_iter().map(|w| (w, shorts.contains(&w))).collect()
    }
    /// The same service with every window divided by `drill_compression` (the drill profile).
    pub fn compressed(&self) -> Result<Service> {
        let k = self.drill_compression;
        let div = |what: &str, s: u64| -> Result<u64> {
            ensure!(
                s.is_multiple_of(k) && s / k > 0,
                "{what} of {s}s does not divide by the drill compression {k}"
            );
            Ok(s / k)
        };
        let mut out = self.clone();
        out.budget_eval = div("the budget group's evaluation interval", self.budget_eval)?;
        for slo in &mut out.slos {
            slo.period = div("the period", slo.period)?;
            slo.absent_for = div("absent-for", slo.absent_for)?;
            for tier in &mut slo.tiers {
                tier.long = div("a long window", tier.long)?;
                tier.short = div("a short window", tier.short)?;
            }
        }
        Ok(out)
    }
}

/// `ingest-latency` -> `IngestLatency`.
pub fn pascal(kebab: &str) -> String {
    kebab
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

// --- OpenSLO documents as written ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: serde_yaml::Value,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Metadata {
    name: String,
    display_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceSpec {
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AlertPolicySpec {
    #[allow(dead_code)]
    description: Option<String>,
    #[allow(dead_code)]
    alert_when_breaching: Option<bool>,
    #[allow(dead_code)]
    alert_when_resolved: Option<bool>,
    alert_when_no_data: Option<bool>,
    conditions: Vec<ConditionDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConditionDoc {
    kind: String,
    #[allow(dead_code)]
    metadata: Metadata,
    spec: ConditionSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConditionSpec {
    severity: String,
    #[allow(dead_code)]
    description: Option<String>,
    condition: Condition,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Condition {
    kind: String,
    op: String,
    threshold: serde_yaml::Number,
    lookback_window: String,
    alert_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SloSpec {
    description: Option<String>,
    service: String,
    budgeting_method: String,
    time_window: Vec<TimeWindow>,
    objectives: Vec<Objective>,
    alert_policies: Vec<String>,
    indicator: Option<InlineSli>,
    indicator_ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TimeWindow {
    duration: String,
    is_rolling: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Objective {
    display_name: Option<String>,
    target: serde_yaml::Number,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InlineSli {
    metadata: Metadata,
    spec: SliSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SliSpec {
    #[allow(dead_code)]
    description: Option<String>,
    ratio_metric: Option<RatioMetric>,
    threshold_metric: Option<Source>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RatioMetric {
    counter: bool,
    good: Option<Source>,
    bad: Option<Source>,
    total: Source,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Source {
    metric_source: MetricSource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricSource {
    #[serde(rename = "type")]
    kind: String,
    spec: serde_yaml::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PromSource {
    histogram: Option<String>,
    #[serde(default)]
    selector: BTreeMap<String, MatcherDoc>,
    le: Option<serde_yaml::Number>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatcherDoc {
    #[serde(rename = "in")]
    values: Option<Vec<String>>,
    regex: Option<String>,
    datadog: Option<String>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    counterexamples: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CmRatioSource {
    filter: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CmWindowsSource {
    window_period: String,
    metric_mean_in_range: CmRange,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CmRange {
    filter: String,
    min: Option<serde_yaml::Number>,
    max: Option<serde_yaml::Number>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DdSource {
    time_slice: DdTimeSlice,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DdTimeSlice {
    query: String,
    comparator: String,
    threshold: serde_yaml::Number,
    query_interval_seconds: u64,
}

fn spec_of<T: for<'de> Deserialize<'de>>(doc: &Doc) -> Result<T> {
    serde_yaml::from_value(doc.spec.clone())
        .with_context(|| format!("{} {:?}: spec", doc.kind, doc.metadata.name))
}

fn kebab_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn label_name_ok(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses and validates one service file. `source` is the path to name in errors and headers.
pub fn parse(text: &str, source: &str) -> Result<Service> {
    parse_inner(text, source).with_context(|| format!("{source}: invalid SLO spec"))
}

fn parse_inner(text: &str, source: &str) -> Result<Service> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = Doc::deserialize(de).with_context(|| format!("document {}", i + 1))?;
        ensure!(
            doc.api_version == "openslo/v1",
            "document {}: apiVersion must be openslo/v1, got {:?}",
            i + 1,
            doc.api_version
        );
        docs.push(doc);
    }

    let services: Vec<&Doc> = docs.iter().filter(|d| d.kind == "Service").collect();
    ensure!(
        services.len() == 1,
        "a spec file holds exactly one Service document, found {}",
        services.len()
    );
    let svc_doc = services[0];
    let _: ServiceSpec = spec_of(svc_doc)?;
    let name = svc_doc.metadata.name.clone();
    ensure!(kebab_ok(&name), "service name {name:?} must be kebab-case");
    ensure!(
        source.ends_with(&format!("{name}.yaml")),
        "the file of service {name:?} must be named {name}.yaml"
    );
    let ann = &svc_doc.metadata.annotations;
    let alert_prefix = ann
        .get(&format!("{EXT}alert-prefix"))
        .cloned()
        .unwrap_or_else(|| pascal(&name));
    ensure!(
        alert_prefix.chars().all(|c| c.is_ascii_alphanumeric())
            && alert_prefix.starts_with(|c: char| c.is_ascii_uppercase()),
        "alert-prefix {alert_prefix:?} must be PascalCase letters and digits"
    );
    let drill_compression = match ann.get(&format!("{EXT}drill-compression")) {
        Some(v) => v
            .parse()
            .context("drill-compression must be a whole number")?,
        None => 60,
    };
    ensure!(
        drill_compression >= 1,
        "drill-compression must be at least 1"
    );
    let mut buckets = BTreeMap::new();
    for (key, value) in ann {
        if let Some(hist) = key.strip_prefix(&format!("{EXT}buckets.")) {
            let mut bounds = Vec::new();
            for b in value.split_whitespace() {
                bounds.push(
                    b.parse::<Decimal>()
                        .with_context(|| format!("bucket {b:?} of {hist}"))?,
                );
            }
            ensure!(
                bounds.windows(2).all(|w| w[0] < w[1]),
                "buckets of {hist} must be strictly increasing"
            );
            buckets.insert(hist.to_string(), bounds);
        }
    }
    let dashboard = ann.get(&format!("{EXT}dashboard")).cloned();
    if let Some(d) = &dashboard {
        ensure!(
            !d.is_empty() && !d.contains(char::is_whitespace) && !d.contains('"'),
            "dashboard {d:?} must be a URL or a path, without spaces or quotes"
        );
    }
    for key in ann.keys() {
        if let Some(ext) = key.strip_prefix(EXT) {
            ensure!(
                ext.starts_with("buckets.")
                    || ["alert-prefix", "drill-compression", "dashboard"].contains(&ext),
                "unknown Service annotation {key:?}{}",
                if ext == "datadog-namespace" {
                    " (the app's metrics reach Datadog over OTLP under their own names, \
                     selected by the `service` tag: dashboards/datadog/README.md)"
                } else {
                    ""
                }
            );
        }
    }

    // Alert policies: one burn-rate condition each.
    let mut tiers: BTreeMap<String, Tier> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d.kind == "AlertPolicy") {
        let spec: AlertPolicySpec = spec_of(doc)?;
        let tname = doc.metadata.name.clone();
        let ctx = || format!("AlertPolicy {tname:?}");
        ensure!(kebab_ok(&tname), "{}: name must be kebab-case", ctx());
        ensure!(
            spec.alert_when_no_data != Some(true),
            "{}: alertWhenNoData is not supported: missing metrics have their own absent alert",
            ctx()
        );
        ensure!(
            spec.conditions.len() == 1,
            "{}: exactly one condition per policy (one tier), found {}",
            ctx(),
            spec.conditions.len()
        );
        let c = &spec.conditions[0];
        ensure!(c.kind == "AlertCondition", "{}: condition kind", ctx());
        let cond = &c.spec.condition;
        ensure!(
            cond.kind == "burnrate" && cond.op == "gt",
            "{}: only `kind: burnrate` with `op: gt` conditions are supported",
            ctx()
        );
        if let Some(after) = &cond.alert_after {
            ensure!(
                after
                    .trim_start_matches('0')
                    .chars()
                    .all(|c| !c.is_ascii_digit()),
                "{}: alertAfter must be 0 (the short window already debounces)",
                ctx()
            );
        }
        let severity = match c.spec.severity.as_str() {
            "page" => Severity::Page,
            "ticket" => Severity::Ticket,
            other => bail!("{}: severity {other:?} is neither page nor ticket", ctx()),
        };
        let burn_rate = decimal(&cond.threshold)?;
        ensure!(
            burn_rate > Decimal::ZERO,
            "{}: burn rate must be positive",
            ctx()
        );
        let long = parse_duration(&cond.lookback_window).with_context(ctx)?;
        let short = parse_duration(
            doc.metadata
                .annotations
                .get(&format!("{EXT}short-window"))
                .ok_or_else(|| anyhow!("{}: annotation {EXT}short-window is missing", ctx()))?,
        )
        .with_context(ctx)?;
        ensure!(
            short < long,
            "{}: the short window must be shorter than the long window",
            ctx()
        );
        ensure!(
            short >= 60,
            "{}: a short window under 1m cannot hold two scrapes",
            ctx()
        );
        tiers.insert(
            tname.clone(),
            Tier {
                name: tname,
                severity,
                burn_rate,
                long,
                short,
            },
        );
    }

    let slis: BTreeMap<String, &Doc> = docs
        .iter()
        .filter(|d| d.kind == "SLI")
        .map(|d| (d.metadata.name.clone(), d))
        .collect();

    let mut slos = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in docs.iter().filter(|d| d.kind == "SLO") {
        let slo = parse_slo(doc, &name, &tiers, &slis, &buckets)
            .with_context(|| format!("SLO {:?}", doc.metadata.name))?;
        ensure!(
            seen.insert(slo.name.clone()),
            "SLO {:?} is defined twice",
            slo.name
        );
        slos.push(slo);
    }
    ensure!(!slos.is_empty(), "the spec defines no SLO");
    for doc in &docs {
        ensure!(
            ["Service", "AlertPolicy", "SLI", "SLO"].contains(&doc.kind.as_str()),
            "kind {:?} is not supported (Service, AlertPolicy, SLI, SLO)",
            doc.kind
        );
    }
    Ok(Service {
        name,
        source: source.to_string(),
        out_dir: if source.starts_with("slo/examples/") {
            "alerts/examples".into()
        } else {
            "alerts".into()
        },
        alert_prefix,
        buckets,
        drill_compression,
        dashboard,
        budget_eval: BUDGET_EVAL,
        slos,
    })
}

fn parse_slo(
    doc: &Doc,
    service: &str,
    tiers: &BTreeMap<String, Tier>,
    slis: &BTreeMap<String, &Doc>,
    buckets: &BTreeMap<String, Vec<Decimal>>,
) -> Result<Slo> {
    let spec: SloSpec = spec_of(doc)?;
    let name = doc.metadata.name.clone();
    ensure!(kebab_ok(&name), "name must be kebab-case");
    ensure!(
        spec.service == service,
        "spec.service {:?} is not this file's service {service:?}",
        spec.service
    );
    ensure!(
        spec.budgeting_method == "Occurrences",
        "budgetingMethod must be Occurrences (events, not time slices), got {:?}",
        spec.budgeting_method
    );
    ensure!(spec.time_window.len() == 1, "exactly one timeWindow");
    ensure!(
        spec.time_window[0].is_rolling,
        "the time window must be rolling"
    );
    let period = parse_duration(&spec.time_window[0].duration)?;
    ensure!(
        (86_400..=90 * 86_400).contains(&period),
        "the period must be between 1d and 90d"
    );
    ensure!(spec.objectives.len() == 1, "exactly one objective");
    let objective = decimal(&spec.objectives[0].target)?;
    ensure!(
        objective > Decimal::ZERO && objective < Decimal::ONE,
        "target {} must be strictly between 0 and 1",
        plain(objective)
    );
    ensure!(!spec.alert_policies.is_empty(), "no alertPolicies");
    let mut slo_tiers = Vec::new();
    for policy in &spec.alert_policies {
        let tier = tiers
            .get(policy)
            .ok_or_else(|| anyhow!("alert policy {policy:?} is not defined in this file"))?;
        ensure!(
            tier.long <= period,
            "tier {:?}: long window is longer than the period",
            tier.name
        );
        // The budget-exhausted alert already judges the whole period (and records its ratio).
        ensure!(
            tier.long < period,
            "tier {:?}: a long window of the whole period is the budget-exhausted alert, which \
             every SLO has; give the tier a shorter window",
            tier.name
        );
        // An error ratio never exceeds 1, so a threshold ratio at or above 1 can never fire.
        ensure!(
            tier.burn_rate * (Decimal::ONE - objective) < Decimal::ONE,
            "tier {:?}: burn rate {} can never fire: with target {} the error ratio would have \
             to exceed {} (the highest possible burn rate is 1/(1 - target) = {})",
            tier.name,
            plain(tier.burn_rate),
            plain(objective),
            plain(tier.burn_rate * (Decimal::ONE - objective)),
            plain((Decimal::ONE / (Decimal::ONE - objective)).round_dp(4))
        );
        slo_tiers.push(tier.clone());
    }
    let mut names = BTreeSet::new();
    for t in &slo_tiers {
        ensure!(
            names.insert(t.name.clone()),
            "tier {:?} listed twice",
            t.name
        );
    }

    let ann = &doc.metadata.annotations;
    let get = |k: &str| ann.get(&format!("{EXT}{k}"));
    for key in ann.keys() {
        if let Some(ext) = key.strip_prefix(EXT) {
            ensure!(
                [
                    "minimum-events",
                    "absent-for",
                    "cloud-monitoring-sli",
                    "datadog-sli"
                ]
                .contains(&ext),
                "unknown SLO annotation {key:?}"
            );
        }
    }
    let minimum_events: u64 = get("minimum-events")
        .ok_or_else(|| anyhow!("annotation {EXT}minimum-events is missing"))?
        .parse()
        .context("minimum-events must be a whole number")?;
    ensure!(minimum_events >= 1, "minimum-events must be at least 1");
    let absent_for = parse_duration(
        get("absent-for").ok_or_else(|| anyhow!("annotation {EXT}absent-for is missing"))?,
    )?;

    let inline = match (&spec.indicator, &spec.indicator_ref) {
        (Some(i), None) => (i.metadata.clone(), &i.spec),
        _ => bail!("give the Prometheus SLI inline as `indicator`"),
    };
    let sli = prom_sli(inline.1, buckets)?;

    let cloud_monitoring = match get("cloud-monitoring-sli") {
        Some(r) => Some(cm_sli(slis.get(r).ok_or_else(|| {
            anyhow!("cloud-monitoring-sli {r:?}: no SLI document of that name")
        })?)?),
        None => None,
    };
    let datadog = match get("datadog-sli") {
        Some(r) => Some(dd_sli(slis.get(r).ok_or_else(|| {
            anyhow!("datadog-sli {r:?}: no SLI document of that name")
        })?)?),
        None => None,
    };
    let _ = inline.0;

    Ok(Slo {
        display_name: doc
            .metadata
            .display_name
            .clone()
            .unwrap_or_else(|| name.clone()),
        objective_text: spec.objectives[0]
            .display_name
            .clone()
            .unwrap_or_else(|| format!("{} good", plain(objective))),
        description: spec
            .description
            .clone()
            .unwrap_or_default()
            .trim()
            .to_string(),
        name,
        objective,
        period,
        sli,
        minimum_events,
        absent_for,
        tiers: slo_tiers,
        cloud_monitoring,
        datadog,
    })
}

fn selector(raw: &BTreeMap<String, MatcherDoc>, need_counter: bool) -> Result<Selector> {
    let mut out = Vec::new();
    for (label, m) in raw {
        ensure!(label_name_ok(label), "label name {label:?} is not valid");
        ensure!(label != "le", "`le` is set with `le:`, not in a selector");
        let matcher = match (&m.values, &m.regex) {
            (Some(values), None) => {
                ensure!(!values.is_empty(), "label {label:?}: `in` is empty");
                ensure!(
                    m.examples.is_empty() && m.datadog.is_none(),
                    "label {label:?}: `examples` and `datadog` go with `regex`"
                );
                Matcher::In {
                    values: values.clone(),
                    counterexamples: m.counterexamples.clone(),
                }
            }
            (None, Some(regex)) => {
                ensure!(!regex.is_empty(), "label {label:?}: empty regex");
                ensure!(
                    !m.examples.is_empty(),
                    "label {label:?}: a regex needs `examples` (values it matches) for the \
                     generated tests"
                );
                Matcher::Regex {
                    regex: regex.clone(),
                    datadog: m.datadog.clone(),
                    examples: m.examples.clone(),
                    counterexamples: m.counterexamples.clone(),
                }
            }
            _ => bail!("label {label:?}: give exactly one of `in` or `regex`"),
        };
        if need_counter {
            ensure!(
                !matcher.counterexamples().is_empty(),
                "label {label:?}: a `bad` matcher needs `counterexamples` (good values) for the \
                 generated tests"
            );
        }
        for v in matcher.examples().iter().chain(matcher.counterexamples()) {
            ensure!(
                !v.contains('"') && !v.contains('\\'),
                "label {label:?}: value {v:?} may not hold quotes or backslashes"
            );
        }
        out.push((label.clone(), matcher));
    }
    Ok(out)
}

fn prom_source(s: &Source) -> Result<PromSource> {
    ensure!(
        s.metric_source.kind == "Prometheus",
        "the inline indicator's metric sources must be of type Prometheus, got {:?}",
        s.metric_source.kind
    );
    serde_yaml::from_value(s.metric_source.spec.clone()).context("Prometheus metric source")
}

fn prom_sli(spec: &SliSpec, buckets: &BTreeMap<String, Vec<Decimal>>) -> Result<PromSli> {
    let ratio = spec
        .ratio_metric
        .as_ref()
        .ok_or_else(|| anyhow!("the indicator must be a ratioMetric"))?;
    ensure!(
        ratio.counter,
        "ratioMetric.counter must be true: ratios come from counters, never from averages"
    );
    let total = prom_source(&ratio.total)?;
    ensure!(total.le.is_none(), "total: `le` belongs to `good`");
    let histogram = total
        .histogram
        .clone()
        .ok_or_else(|| anyhow!("total: `histogram` is missing"))?;
    ensure!(
        label_name_ok(&histogram),
        "histogram {histogram:?} is not a valid metric name"
    );
    let total_sel = selector(&total.selector, false).context("total")?;
    let kind = match (&ratio.good, &ratio.bad) {
        (Some(good), None) => {
            let g = prom_source(good)?;
            ensure!(
                g.histogram.is_none() && g.selector.is_empty(),
                "good: give only `le` (good events are the total's observations under it)"
            );
            let le = decimal(
                g.le.as_ref()
                    .ok_or_else(|| anyhow!("good: `le` is missing"))?,
            )?;
            let bounds = buckets.get(&histogram).ok_or_else(|| {
                anyhow!("histogram {histogram:?} has no buckets annotation on the Service")
            })?;
            ensure!(
                bounds.contains(&le),
                "latency threshold {} is not a bucket boundary of {histogram} ({}): no series \
                 counts the observations under it",
                plain(le),
                bounds
                    .iter()
                    .map(|b| plain(*b))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            SliKind::GoodUnder(le)
        }
        (None, Some(bad)) => {
            let b = prom_source(bad)?;
            ensure!(
                b.histogram.is_none() && b.le.is_none(),
                "bad: give only `selector` (bad events are the total's events that also match it)"
            );
            let sel = selector(&b.selector, true).context("bad")?;
            ensure!(!sel.is_empty(), "bad: the selector is empty");
            for (l, _) in &sel {
                ensure!(
                    !total_sel.iter().any(|(t, _)| t == l),
                    "bad: label {l:?} is already matched by total"
                );
            }
            SliKind::BadWhere(sel)
        }
        _ => bail!("give exactly one of `good` or `bad` besides `total`"),
    };
    Ok(PromSli {
        histogram,
        selector: total_sel,
        kind,
    })
}

fn cm_sli(doc: &Doc) -> Result<CloudMonitoringSli> {
    let spec: SliSpec = spec_of(doc)?;
    let ctx = || format!("SLI {:?}", doc.metadata.name);
    let check = |s: &Source| -> Result<String> {
        ensure!(
            s.metric_source.kind == "CloudMonitoring",
            "{}: metric source type must be CloudMonitoring",
            ctx()
        );
        let src: CmRatioSource =
            serde_yaml::from_value(s.metric_source.spec.clone()).with_context(ctx)?;
        Ok(src.filter.trim().to_string())
    };
    if let Some(r) = &spec.ratio_metric {
        ensure!(r.counter, "{}: counter must be true", ctx());
        let good = r.good.as_ref().map(check).transpose()?;
        let bad = r.bad.as_ref().map(check).transpose()?;
        ensure!(
            good.is_some() != bad.is_some(),
            "{}: give exactly one of good or bad",
            ctx()
        );
        Ok(CloudMonitoringSli::GoodTotalRatio {
            good,
            bad,
            total: Some(check(&r.total)?),
        })
    } else if let Some(t) = &spec.threshold_metric {
        ensure!(
            t.metric_source.kind == "CloudMonitoring",
            "{}: metric source type must be CloudMonitoring",
            ctx()
        );
        let src: CmWindowsSource =
            serde_yaml::from_value(t.metric_source.spec.clone()).with_context(ctx)?;
        let period = parse_duration(&src.window_period).with_context(ctx)?;
        ensure!(
            period >= 60 && 86_400 % period == 0,
            "{}: windowPeriod must be at least 60s and divide a day",
            ctx()
        );
        let range = &src.metric_mean_in_range;
        ensure!(
            range.min.is_some() || range.max.is_some(),
            "{}: give min, max or both",
            ctx()
        );
        Ok(CloudMonitoringSli::MeanInRange {
            window_period: format!("{period}s"),
            filter: range.filter.trim().to_string(),
            min: range.min.as_ref().map(decimal).transpose()?,
            max: range.max.as_ref().map(decimal).transpose()?,
        })
    } else {
        bail!("{}: give ratioMetric or thresholdMetric", ctx())
    }
}

fn dd_sli(doc: &Doc) -> Result<DatadogTimeSlice> {
    let spec: SliSpec = spec_of(doc)?;
    let t = spec
        .threshold_metric
        .as_ref()
        .ok_or_else(|| anyhow!("Datadog SLI {:?}: give thresholdMetric", doc.metadata.name))?;
    ensure!(
        t.metric_source.kind == "Datadog",
        "metric source type must be Datadog"
    );
    let src: DdSource = serde_yaml::from_value(t.metric_source.spec.clone())?;
    let ts = src.time_slice;
    ensure!(
        ["<", "<=", ">", ">="].contains(&ts.comparator.as_str()),
        "comparator {:?}",
        ts.comparator
    );
    ensure!(
        [60, 300].contains(&ts.query_interval_seconds),
        "queryIntervalSeconds must be 60 or 300"
    );
    Ok(DatadogTimeSlice {
        query: ts.query,
        comparator: ts.comparator,
        threshold: decimal(&ts.threshold)?,
        query_interval_seconds: ts.query_interval_seconds,
    })
}

/// The project's own spec, parsed: the fixture the generators' unit tests share.
#[cfg(test)]
pub fn project_service() -> Service {
    parse(
        include_str!("../../../slo/challenge-latam-api.yaml"),
        "slo/challenge-latam-api.yaml",
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../../../slo/challenge-latam-api.yaml");
    const SOURCE: &str = "slo/challenge-latam-api.yaml";

    fn err_of(text: &str) -> String {
        format!("{:#}", parse(text, SOURCE).unwrap_err())
    }

    #[test]
    fn the_service_spec_parses_into_four_slos_with_four_tiers_each() {
        let svc = parse(SPEC, SOURCE).unwrap();
        let names: Vec<_> = svc.slos.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "availability",
                "ingest-latency",
                "query-latency",
                "freshness"
            ]
        );
        for slo in &svc.slos {
            let tiers: Vec<_> = slo.tiers.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(tiers, ["fast", "medium", "slow", "slowest"]);
        }
        let a = &svc.slos[0];
        assert_eq!(plain(a.objective), "0.9995");
        assert_eq!(plain(a.threshold(&a.tiers[0])), "0.0072");
        assert_eq!(svc.burn_alert(a), "ChallengeLatamApiAvailabilityBudgetBurn");
    }

    #[test]
    fn a_tier_whose_burn_rate_exceeds_the_maximum_is_rejected() {
        // query-latency has target 0.95: the highest burn rate is 20.
        let text = SPEC.replace("threshold: 14.4", "threshold: 25");
        assert!(
            err_of(&text).contains("can never fire"),
            "{}",
            err_of(&text)
        );
    }

    #[test]
    fn a_burn_rate_equal_to_the_maximum_is_rejected_too() {
        let text = SPEC.replace("threshold: 14.4", "threshold: 20");
        assert!(err_of(&text).contains("can never fire"));
    }

    #[test]
    fn a_latency_threshold_off_the_bucket_boundaries_is_rejected() {
        let text = SPEC.replace("le: 0.25", "le: 0.3");
        assert!(
            err_of(&text).contains("not a bucket boundary"),
            "{}",
            err_of(&text)
        );
    }

    #[test]
    fn targets_outside_zero_and_one_are_rejected() {
        for bad in ["target: 1\n", "target: 0\n", "target: 99.95\n"] {
            let text = SPEC.replace("target: 0.9995\n", bad);
            assert!(err_of(&text).contains("strictly between 0 and 1"), "{bad}");
        }
    }

    #[test]
    fn a_short_window_not_shorter_than_the_long_one_is_rejected() {
        let text = SPEC.replace("short-window: 5m", "short-window: 1h");
        assert!(err_of(&text).contains("must be shorter"));
    }

    #[test]
    fn a_long_window_beyond_the_period_is_rejected() {
        let text = SPEC.replace("lookbackWindow: 3d", "lookbackWindow: 31d");
        assert!(err_of(&text).contains("longer than the period"));
    }

    #[test]
    fn an_unknown_field_or_annotation_is_rejected() {
        let text = SPEC.replace(
            "budgetingMethod: Occurrences",
            "budgetingMethod: Occurrences\n  colour: red",
        );
        assert!(err_of(&text).contains("colour"));
        let text = SPEC.replace("minimum-events:", "minimum-event:");
        assert!(err_of(&text).contains("unknown SLO annotation"));
    }

    #[test]
    fn an_average_based_ratio_is_rejected() {
        let text = SPEC.replace("counter: true", "counter: false");
        assert!(err_of(&text).contains("never from averages"));
    }

    #[test]
    fn drill_compression_divides_every_window() {
        let svc = parse(SPEC, SOURCE).unwrap().compressed().unwrap();
        let fast = &svc.slos[0].tiers[0];
        assert_eq!((fast.long, fast.short), (60, 5));
        assert_eq!(svc.slos[0].absent_for, 15);
        assert_eq!((svc.slos[0].period, svc.budget_eval), (43_200, 5));
    }

    #[test]
    fn a_tier_over_the_whole_period_is_left_to_the_budget_exhausted_alert() {
        let text = SPEC.replace("lookbackWindow: 3d", "lookbackWindow: 30d");
        assert!(
            err_of(&text).contains("budget-exhausted alert"),
            "{}",
            err_of(&text)
        );
    }

    #[test]
    fn every_slo_has_a_budget_exhausted_alert_and_the_dashboard_is_read() {
        let svc = parse(SPEC, SOURCE).unwrap();
        assert_eq!(
            svc.exhausted_alert(&svc.slos[1]),
            "ChallengeLatamApiIngestLatencyBudgetExhausted"
        );
        assert_eq!(svc.alert_names().len(), 2 * svc.slos.len() + 1);
        assert!(svc
            .dashboard
            .as_deref()
            .unwrap()
            .contains("challenge-latam-slo"));
        let text = SPEC.replace("/d/challenge-latam-slo", "/d/a dashboard");
        assert!(
            err_of(&text).contains("without spaces"),
            "{}",
            err_of(&text)
        );
    }
}
