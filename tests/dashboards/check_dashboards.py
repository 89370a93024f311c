#!/usr/bin/env python3
"""Checks every dashboard in dashboards/ against the tools that read it and the metrics that exist.

1. Shape: Grafana JSON (schemaVersion, grid, targets with expr, variables defined); Cloud
   Monitoring JSON as Terraform's file() reads it (slo.json.tftpl as templatefile() renders it),
   then parsed strictly into the Dashboard proto (google-cloud-monitoring-dashboards: unknown field or enum value fails);
   Datadog JSON deserialized into datadog-api-client's Dashboard model (unknown key, enum or
   widget type fails).
2. Metrics: starts the service binary with its OTLP exporter pointed at a receiver this check
   runs (tests/dashboards/otlp_datadog.py), drives known traffic (ingest, getData, 404, 422, an
   injected 5xx and broker/store error burst, every Idempotency-Key outcome, a 304 revalidation,
   and concurrent getData that coalesces and exceeds a low QUERY_MAX_IN_FLIGHT), scrapes its
   admin port, and runs a real Prometheus on 127.0.0.1 scraping it with the generated rules.
   Every metric a Grafana or Cloud Monitoring dashboard queries must be in that scrape, a
   recording rule of alerts/prometheus, or a platform metric listed in
   dashboards/platform-metrics.yaml (an entry no dashboard uses fails too). The service's own
   metrics that only BACKEND=gcp emits are declared there under `service_gcp_only` with type and
   label values: the declaration must match src/, the local service must not emit them, and the
   declared series are served to Prometheus (a second target) and added to the Datadog mapping,
   so queries on them are run and checked too. Every PromQL expression (Grafana and Cloud
   Monitoring) is run by that Prometheus: an error fails, and so does an empty answer
   (annotations excepted: a deploy marker is empty until a restart). Datadog: what the service
   really exported over OTLP (delta temporality, the contract's names and buckets, the same
   counts as the scrape) is mapped as the serverless-init sidecar maps it
   (dashboards/datadog/README.md), and every metric, tag key and tag value of every Datadog
   dashboard query and of every Datadog SLO of alerts/datadog must exist there.
3. SLOs: every SLO of the model tools/slo writes from slo/*.yaml (dashboards/slo-model.json) has
   its panels on each backend's SLO dashboard, with every one of its alert tiers' burn-rate
   thresholds drawn, and a column in the fleet summary. The fleet view of every backend has an
   Apdex per latency SLO, the billing metrics (BigQuery bytes billed, Pub/Sub bytes published,
   Cloud Run billable instance time), and Grafana's links lead to dashboards that exist.
4. Known-bad fixtures (tests/dashboards/fixtures) must each be rejected, so a pass means something.

Usage: check_dashboards.py --bin target/release/challenge-latam-api
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent import futures

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "dashboards"))
import generate  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "loadtests", "lib"))
import service as svc  # noqa: E402  (the launcher of the release binary)
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

DASH = os.path.join(ROOT, "dashboards")
FIXTURES = os.path.join(ROOT, "tests", "dashboards", "fixtures")
SERVICE = generate.SERVICE
from otlp_datadog import QueryError, Receiver, check_query, datadog_series, otlp_metrics  # noqa: E402


class CheckError(Exception):
    pass


def say(msg: str) -> None:
    print(f"30-dashboards: {msg}", flush=True)


# --- 1. Shapes -----------------------------------------------------------------------------------

GRAFANA_PANELS = {"row", "timeseries", "stat", "table", "gauge", "bargauge", "text", "heatmap", "state-timeline"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all", "__interval_ms"}


def grafana_targets(doc: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, annotations included."""
    out = []
    for p in doc.get("panels", []):
        for t in p.get("targets", []):
            out.append((p.get("title", "?"), t.get("expr", "")))
    for a in doc.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')}", a["expr"]))
    return out


def check_grafana(doc: dict, name: str) -> None:
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in doc:
            raise CheckError(f"{name}: no '{key}'")
    if not isinstance(doc["schemaVersion"], int) or doc["schemaVersion"] < 30:
        raise CheckError(f"{name}: schemaVersion {doc['schemaVersion']!r} is not a current integer")
    variables = {v["name"] for v in doc["templating"]["list"]}
    if "service" not in variables:
        raise CheckError(f"{name}: no 'service' variable")
    ids, cells = set(), set()
    for p in doc["panels"]:
        title = p.get("title", "?")
        if p.get("type") not in GRAFANA_PANELS:
            raise CheckError(f"{name}: panel '{title}' has unknown type {p.get('type')!r}")
        if p.get("id") in ids:
            raise CheckError(f"{name}: panel id {p.get('id')} repeats")
        ids.add(p.get("id"))
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            raise CheckError(f"{name}: panel '{title}' has a bad gridPos {g}")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    raise CheckError(f"{name}: panel '{title}' overlaps another at x={x} y={y}")
                cells.add((x, y))
        if p["type"] == "row":
            continue
        targets = p.get("targets") or []
        if not targets:
            raise CheckError(f"{name}: panel '{title}' has no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(t.get("expr") for t in targets):
            raise CheckError(f"{name}: panel '{title}' has a target without expr or a repeated refId")
    for title, expr in grafana_targets(doc):
        for var in re.findall(r"\$\{?(\w+)", expr):
            if var not in variables and var not in GRAFANA_BUILTINS and not var[0].isdigit():  # $1: a label_replace group
                raise CheckError(f"{name}: '{title}' uses undefined variable ${var}")


def render_templatefile(text: str, name: str, variables: dict[str, str]) -> str:
    """What Terraform's templatefile() makes of the text; fails where templatefile would."""
    if "%{" in text.replace("%%{", ""):
        raise CheckError(f"{name}: a %{{ directive templatefile() would interpret")
    out, i = [], 0
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.index("}", i)
            var = text[i + 2:end]
            if var not in variables:
                raise CheckError(f"{name}: templatefile() would fail on ${{{var}}} (variables: {', '.join(variables)})")
            out.append(variables[var])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


CM_VARS = {"project_id": "example-project", "env": "prod"}


def check_cloud_monitoring(text: str, name: str) -> dict:
    """A *.json file is read as Terraform's file() reads it; a *.tftpl as templatefile() renders it."""
    from google.cloud import monitoring_dashboard_v1
    from google.protobuf import json_format

    if name.endswith(".tftpl"):
        rendered = render_templatefile(text, name, CM_VARS)
    else:
        leftover = [v for v in CM_VARS if "${%s}" % v in text]
        if leftover:
            raise CheckError(f"{name}: Terraform's file() would leave ${{{leftover[0]}}} unfilled (make it a .tftpl)")
        rendered = text
    try:
        doc = json.loads(rendered)
    except json.JSONDecodeError as e:
        raise CheckError(f"{name}: not JSON after templatefile(): {e}") from e
    try:
        json_format.Parse(rendered, monitoring_dashboard_v1.Dashboard.pb()())
    except json_format.ParseError as e:
        raise CheckError(f"{name}: the Dashboard proto rejects it: {str(e)[:300]}") from e
    if not doc.get("displayName"):
        raise CheckError(f"{name}: no displayName")
    for t in doc.get("mosaicLayout", {}).get("tiles", []):
        if t.get("xPos", 0) + t["width"] > doc["mosaicLayout"]["columns"]:
            raise CheckError(f"{name}: tile '{t['widget'].get('title')}' is wider than the layout")
    return doc


def _dd_walk(model, path: str, name: str) -> int:
    """Fails on anything the Datadog client could not place in its schema; returns models seen."""
    from datadog_api_client.model_utils import ModelComposed, ModelNormal

    seen = 1
    if getattr(model, "_unparsed", False):
        raise CheckError(f"{name}: Datadog's schema does not accept {path} (unknown enum value or widget shape)")
    if isinstance(model, ModelComposed):
        inst = model.get_oneof_instance()
        if inst is None:
            raise CheckError(f"{name}: {path} matches no Datadog widget/query type")
        return seen + _dd_walk(inst, path, name)
    if isinstance(model, ModelNormal):
        unknown = set(model._data_store) - set(model.attribute_map)
        if unknown:
            raise CheckError(f"{name}: {path} ({type(model).__name__}) has keys Datadog does not know: {sorted(unknown)}")
        for key, value in model._data_store.items():
            seen += _dd_walk(value, f"{path}.{key}", name)
    elif isinstance(model, list):
        for i, v in enumerate(model):
            seen += _dd_walk(v, f"{path}[{i}]", name)
    return seen


def check_datadog(doc: dict, name: str) -> int:
    from datadog_api_client import Configuration
    from datadog_api_client.model_utils import validate_and_convert_types
    from datadog_api_client.v1.model.dashboard import Dashboard

    try:
        model = validate_and_convert_types(copy.deepcopy(doc), (Dashboard,), ["dashboard"], True, True, Configuration())
    except Exception as e:  # the client raises several exception types for type errors
        raise CheckError(f"{name}: datadog-api-client rejects it: {str(e)[:300]}") from e
    variables = {v["name"] for v in doc.get("template_variables", [])}
    for q in datadog_queries(doc):
        for flt in re.findall(r"\{([^}]*)\}", q):
            bare = re.sub(r"\([^)]*\)", "()", flt)
            if re.search(r"\b(AND|OR|IN|NOT)\b", flt) and ("," in bare or "!" in bare):
                raise CheckError(f"{name}: filter mixes ',' or '!' with AND/OR/IN/NOT, which Datadog refuses: {q}")
        for var in re.findall(r"\$(\w+)", q):
            if var not in variables:
                raise CheckError(f"{name}: query uses undefined template variable ${var}: {q}")
    return _dd_walk(model, "dashboard", name)


# --- 2. Metric names -----------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "inf", "nan", "atan2",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names in a grouping or a matcher, or durations."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    s = re.sub(r"\{[^}]*\}", "{}", s)                        # label matchers
    s = re.sub(r"\[[^\]]*\]", "[]", s)                       # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def family(name: str, scraped: set[str]) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in scraped:
            return name[: -len(suffix)]
    return name


def datadog_tables(doc) -> list[dict]:
    """The requests of every query_table widget."""
    out = []
    for g in doc.get("widgets", []):
        for w in g["definition"].get("widgets", [g]):
            if w["definition"].get("type") == "query_table":
                out += w["definition"]["requests"]
    return out


def datadog_queries(doc) -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "query" and isinstance(v, str):
                out.append(v)
            else:
                out += datadog_queries(v)
    elif isinstance(doc, list):
        for v in doc:
            out += datadog_queries(v)
    return out


def datadog_metrics(query: str) -> set[str]:
    return set(re.findall(r"(?:^|[\s(,])(?:sum|avg|max|min|p\d+|count\(v: [^)]*\)):([A-Za-z0-9_.]+)\{", query))


def datadog_slo_queries(doc: dict, where: str) -> list[tuple[str, str, dict]]:
    """(where, query, template variables) of every query of a Datadog SLO file of alerts/datadog."""
    out = []
    for slo in doc.get("slos", []):
        for part in ("numerator", "denominator"):
            if slo.get("query", {}).get(part):
                out.append((f"{where} {slo['slo_id']} {part}", slo["query"][part], {}))
        ts = slo.get("sli_specification", {}).get("time_slice")
        if ts:
            out.append((f"{where} {slo['slo_id']} time_slice", ts["query"], {}))
    return out


def datadog_query_sources(dashboards: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """(where, query, template variable -> tag prefix) of every query of these dashboards."""
    out = []
    for n, d in dashboards.items():
        variables = {v["name"]: v.get("prefix") or v["name"] for v in d.get("template_variables", [])}
        out += [(f"datadog/{n}", q, variables) for q in datadog_queries(d)]
    return out


def datadog_alert_queries() -> list[tuple[str, str, dict]]:
    """The queries of the Datadog SLOs Terraform deploys (alerts/datadog; the examples deploy nowhere)."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "datadog", "*.json"))):
        with open(path, encoding="utf-8") as f:
            out += datadog_slo_queries(json.load(f), os.path.relpath(path, ROOT))
    if not out:
        raise CheckError("alerts/datadog holds no SLO query")
    return out


# The contract's buckets (CONTRACT.md, "Metrics"): the HTTP, messaging and database histograms
# share the latency buckets; the end-to-end histogram has its own. The SLO model carries both.
LATENCY_HISTOGRAMS = ("http_server_request_duration_seconds", "messaging_client_operation_duration_seconds",
                      "db_client_operation_duration_seconds")


def check_otlp_export(otlp: dict, exposition: dict[str, str], label_keys: dict[str, set[str]],
                      scrape_bounds: dict[str, set[tuple[float, ...]]]) -> dict:
    """What the exporter sent must be what the contract promises (the scrape's names, DELTA,
    the contract's buckets); returns the Datadog metrics it becomes with the sidecar's settings."""
    families = {n for n, t in exposition.items() if not n.startswith("process_")
                and not (t == "histogram" and n.endswith(("_bucket", "_count", "_sum")))}
    missing = sorted(families - set(otlp))
    if missing:
        raise CheckError(f"metrics of /metrics the OTLP export lacks (the exporter must send every contract metric under "
                         f"its Prometheus name): {missing}; it sent {sorted(otlp)}")
    not_delta = sorted(n for n, m in otlp.items() if m.kind in ("sum", "histogram") and m.temporality != {"DELTA"})
    if not_delta:
        raise CheckError(f"OTLP metrics not in DELTA temporality (Datadog's recommendation; the mapping assumes it): "
                         + ", ".join(f"{n} {sorted(otlp[n].temporality)}" for n in not_delta))
    buckets = generate.load_buckets()
    want = {h: buckets["http_server_request_duration_seconds"] for h in LATENCY_HISTOGRAMS}
    want["pipeline_end_to_end_latency_seconds"] = buckets["pipeline_end_to_end_latency_seconds"]
    for name, bounds in want.items():
        m = otlp.get(name)
        if m is None or m.kind != "histogram":
            raise CheckError(f"{name} is not an explicit-bucket histogram in the OTLP export ({m.kind if m else 'absent'})")
        if m.bounds != {tuple(bounds)}:
            raise CheckError(f"{name}: OTLP explicit bounds {sorted(m.bounds)} are not the contract's {bounds}")
    # Every other histogram (the cache age's, say) has the bounds /metrics shows: a Datadog
    # `upper_bound` value exists only if the OTLP export carries that bound.
    bounds_differ = sorted(n for n in families if exposition[n] == "histogram" and n in otlp
                           and otlp[n].bounds != scrape_bounds.get(n))
    if bounds_differ:
        raise CheckError("OTLP explicit bounds differ from the `le` bounds of /metrics: "
                         + "; ".join(f"{n}: OTLP {sorted(otlp[n].bounds)}, /metrics {sorted(scrape_bounds.get(n, set()))}" for n in bounds_differ))
    keys_differ = sorted(n for n in families if set(otlp[n].attributes) != label_keys.get(n, set()))
    if keys_differ:
        raise CheckError("OTLP attribute keys differ from the Prometheus label names: "
                         + "; ".join(f"{n}: OTLP {sorted(otlp[n].attributes)}, /metrics {sorted(label_keys.get(n, set()))}" for n in keys_differ))
    # A gauge must stay a gauge: a delta UpDownCounter would reach Datadog as a count of changes.
    wrong_kind = sorted(n for n in families if exposition[n] == "counter" and (otlp[n].kind != "sum" or otlp[n].monotonic != {True})
                        or exposition[n] == "gauge" and otlp[n].kind != "gauge"
                        or exposition[n] == "histogram" and otlp[n].kind != "histogram")
    if wrong_kind:
        raise CheckError(f"OTLP kinds differ from the exposition's types (counter -> monotonic sum, gauge -> gauge, histogram -> "
                         f"histogram): {[(n, exposition[n], otlp[n].kind) for n in wrong_kind]}")
    service = {v for m in otlp.values() for v in m.resource.get("service.name", set())}
    env = {v for m in otlp.values() for v in m.resource.get("deployment.environment.name", set())}
    if service != {SERVICE} or env != {OTLP_ENV}:
        raise CheckError(f"OTLP resource: service.name {sorted(service)}, deployment.environment.name {sorted(env)}; "
                         f"want {SERVICE} and {OTLP_ENV} (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES)")
    return datadog_series(otlp)


def cm_filters(doc) -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "filter" and isinstance(v, str):
                out.append(v)
            else:
                out += cm_filters(v)
    elif isinstance(doc, list):
        for v in doc:
            out += cm_filters(v)
    return out


def cm_promql(doc) -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "prometheusQuery":
                out.append(v)
            else:
                out += cm_promql(v)
    elif isinstance(doc, list):
        for v in doc:
            out += cm_promql(v)
    return out


# --- Metrics only BACKEND=gcp emits ----------------------------------------------------------------
# The service's own metrics that only the gcp backend registers (app_bigquery_*: BigQuery answers
# them) cannot come out of the local binary this check runs. platform-metrics.yaml lists them
# under `service_gcp_only` with their type and every label value; the declaration is held against
# src/ here, the local scrape must not show them (then they belong to no list), and the declared
# series are served to Prometheus and added to the Datadog mapping, so every query on them still
# runs, returns data and is checked for its metric, labels and values.

GCP_ONLY = "service_gcp_only"
SRC = os.path.join(ROOT, "src")
METRICS_RS = os.path.join(SRC, "telemetry", "metrics.rs")


def check_gcp_only_declaration(entry: dict, where: str = "platform-metrics.yaml") -> None:
    """The entry names a metric constant of src/telemetry/metrics.rs, described with its type,
    recorded elsewhere in src/ with each declared label key and value."""
    name, typ, labels = entry.get("name"), entry.get("type"), entry.get("labels")
    if typ not in ("counter", "gauge") or not isinstance(labels, dict) \
            or not all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in labels.values()):
        raise CheckError(f"{where}: {GCP_ONLY} entry {name}: needs type counter or gauge and labels as "
                         f"{{label: [values]}} ({{}} for none)")
    with open(METRICS_RS, encoding="utf-8") as f:
        metrics_rs = f.read()
    const = re.search(rf'pub const (\w+): &str = "{re.escape(name)}";', metrics_rs)
    if not const:
        raise CheckError(f"{where}: {GCP_ONLY} entry {name} is no metric name constant of src/telemetry/metrics.rs")
    ident = const.group(1)
    described = re.search(rf"describe_(counter|gauge|histogram)!\(\s*{ident}\s*,", metrics_rs)
    if not described or described.group(1) != typ:
        raise CheckError(f"{where}: {GCP_ONLY} entry {name} says {typ}; src/telemetry/metrics.rs describes it as "
                         f"{described.group(1) if described else 'nothing'}")
    users = []
    for path in glob.glob(os.path.join(SRC, "**", "*.rs"), recursive=True):
        if os.path.abspath(path) != os.path.abspath(METRICS_RS):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if re.search(rf"\b{ident}\b", text):
                users.append(text)
    if not users:
        raise CheckError(f"{where}: {GCP_ONLY} entry {name}: nothing in src/ records {ident}")
    code = "\n".join(users)
    for key, values in labels.items():
        if not re.search(rf'"{re.escape(key)}"\s*=>', code):
            raise CheckError(f"{where}: {GCP_ONLY} entry {name}: the code that records {ident} sets no label {key!r}")
        for v in values:
            if f'"{v}"' not in code:
                raise CheckError(f"{where}: {GCP_ONLY} entry {name}: the code that records {ident} never writes {key}={v!r}")


def check_gcp_only_absent(names: set[str], exposition: dict, otlp: dict, where: str = "platform-metrics.yaml") -> None:
    """A declared metric the local service emits after all needs no declaration (and would hide
    its real series behind the declared ones)."""
    emitted = sorted(names & (set(exposition) | set(otlp)))
    if emitted:
        raise CheckError(f"{where} lists {emitted} under {GCP_ONLY}, but the local service emits them, so they need no declaration")


def declared_series(entries: list[dict]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, type, labels) of every series the declarations describe (each combination of values)."""
    out = []
    for e in entries:
        combos = [{}]
        for key, values in e["labels"].items():
            combos = [{**c, key: v} for c in combos for v in values]
        out += [(e["name"], e["type"], c) for c in combos]
    return out


def declared_datadog(entries: list[dict]) -> dict:
    """The Datadog metrics the declared series would become over OTLP (the same mapping as the
    export's: a counter is a count, a gauge a gauge; labels are tags; service and env from the
    resource, as the checked service sends them)."""
    from otlp_datadog import Series, datadog_tag_value

    out: dict[str, Series] = {}
    for name, typ, labels in declared_series(entries):
        s = out.setdefault(name, Series(type="count" if typ == "counter" else "gauge",
                                        tags={"service": {SERVICE}, "env": {OTLP_ENV}}))
        for k, v in labels.items():
            s.tags.setdefault(k, set()).add(datadog_tag_value(v))
    return out


class DeclaredTarget:
    """A scrape target on 127.0.0.1 exposing the declared series with the `service` label of the
    service's own target (counters grow by one a scrape, gauges read 1)."""

    def __init__(self, entries: list[dict]):
        import http.server

        self.series, self.scrapes = declared_series(entries), 0
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server method name)
                target.scrapes += 1
                lines, typed = [], set()
                for name, typ, labels in target.series:
                    if name not in typed:
                        lines.append(f"# TYPE {name} {typ}")
                        typed.add(name)
                    sel = ",".join(f'{k}="{v}"' for k, v in {"service": SERVICE, **labels}.items())
                    lines.append(f"{name}{{{sel}}} {target.scrapes if typ == 'counter' else 1}")
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- The live stack ----------------------------------------------------------------------------


def http(method: str, url: str, body: object | None = None, timeout: float = 5,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    return http_response(method, url, body, timeout, headers)[:2]


def http_response(method: str, url: str, body: object | None = None, timeout: float = 5,
                  headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers (names lowercased) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def wait_for(url: str, seconds: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckError(f"{what} exited with {proc.returncode} before answering {url}")
        try:
            if http("GET", url, timeout=1)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(0.2)
    raise CheckError(f"{what} did not answer {url} within {seconds:.0f} s")


# What terraform/modules/cloud_run gives the app for its OTLP export (the env value aside), with a
# short export interval so the check does not wait the default 10 s.
OTLP_ENV = "check"
# getData store queries at once in the checked service (its default is 32): the traffic runs
# two more than this concurrently, so some are answered 503.
QUERY_MAX_IN_FLIGHT = 2


class Stack:
    """The service on the embedded default, exporting OTLP to a receiver of this check, and a
    Prometheus scraping it every second."""

    def __init__(self, binary: str, rule_files: list[str], gcp_only: list[dict]):
        self.binary, self.rule_files, self.gcp_only = binary, rule_files, gcp_only
        self.tmp = tempfile.mkdtemp(prefix="dashboards-check-")
        self.procs: list[subprocess.Popen] = []
        self.declared: DeclaredTarget | None = None

    def __enter__(self) -> "Stack":
        self.prom_port = svc.free_port()  # Prometheus cannot report a port 0 choice
        self.otlp = Receiver().__enter__()
        env = {"RUST_LOG": "warn", "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "1000",
               "OTEL_SERVICE_NAME": SERVICE, "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment.name={OTLP_ENV}"}
        # A low bound on getData's store queries, so the known traffic can exceed it (503).
        env["QUERY_MAX_IN_FLIGHT"] = str(QUERY_MAX_IN_FLIGHT)
        # No keys file: the launcher gives the service a clean environment.
        try:
            self.service = svc.Service(data_dir=os.path.join(self.tmp, "data"), env=env,
                                       log=os.path.join(self.tmp, "app.log"), binary=self.binary).start()
        except RuntimeError as e:
            raise CheckError(f"the service did not start: {e}") from e
        self.port, self.admin = self.service.port, self.service.admin_port
        # The generated rules as they are, but for each group's own `interval`: the whole-period
        # groups (budget left, budget exhausted) run every 5 minutes, longer than this check
        # waits, and the panels reading their records must be shown to return data. When they
        # run is the promtool tests' business (scripts/checks/20-slo.sh).
        rules = []
        for path in self.rule_files:
            copy_path = os.path.join(self.tmp, os.path.basename(path))
            with open(path, encoding="utf-8") as src, open(copy_path, "w", encoding="utf-8") as dst:
                dst.write(re.sub(r"^    interval: \S+\n", "", src.read(), flags=re.M))
            rules.append(copy_path)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{"job_name": SERVICE, "static_configs": [
                {"targets": [f"127.0.0.1:{self.admin}"], "labels": {"service": SERVICE}}]}],
        }
        if self.gcp_only:
            # The series carry their own `service` label (honor_labels); the target's `up` has
            # none, so no panel selecting a service counts it as an instance.
            self.declared = DeclaredTarget(self.gcp_only)
            config["scrape_configs"].append({"job_name": "declared-gcp-only", "honor_labels": True,
                                             "static_configs": [{"targets": [f"127.0.0.1:{self.declared.port}"]}]})
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            yaml.safe_dump(config, f)
        self.prom = self._start(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.tmp}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
                                os.environ.copy(), "prometheus.log")
        wait_for(f"http://127.0.0.1:{self.prom_port}/-/ready", 30, self.prom, "prometheus")
        return self

    def _start(self, argv: list[str], env: dict, log: str) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=env, stdout=open(os.path.join(self.tmp, log), "w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if getattr(self, "service", None):
            self.service.stop(timeout=10)
        self.otlp.__exit__(*exc)
        if self.declared is not None:
            self.declared.close()
        if exc[0] is not None:
            for log in ("app.log", "prometheus.log"):
                path = os.path.join(self.tmp, log)
                if os.path.exists(path):
                    print(f"--- {log} (last lines)", file=sys.stderr)
                    print("".join(open(path).readlines()[-20:]), file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def drive_traffic(self) -> dict[str, int]:
        """Known traffic: each SLI and panel has something to show."""
        record = {"customerId": "9854764321", "name": "Ronald Ramos",
                  "orders": [{"orderId": "1", "total": 50.0}], "revenue": 50.0}
        codes: dict[str, int] = {}
        lock = threading.Lock()

        def hit(method, path, body=None, headers=None):
            code, _, got = http_response(method, self.api(path), body, headers=headers)
            with lock:
                codes[str(code)] = codes.get(str(code), 0) + 1
            return got

        def at_once(calls):
            """Sends the requests concurrently (a cache's coalescing and the in-flight bound
            only show under concurrency)."""
            with futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
                for f in [pool.submit(hit, *c) for c in calls]:
                    f.result()

        for _ in range(10):
            hit("POST", "/challenge-latam-api/ingestData", record)
            hit("POST", "/challenge-latam-api/ingestData", [record, record])
            hit("GET", "/challenge-latam-api/getData?limit=5")
        hit("GET", "/no-such-route")
        hit("POST", "/challenge-latam-api/ingestData", {"customerId": "1"})
        hit("GET", "/healthz")
        hit("GET", "/readyz")
        faults = f"http://127.0.0.1:{self.admin}/admin/faults"

        def inject(**rates):
            code, body = http("PUT", faults, {"http_error_rate": 0.0, "store_error_rate": 0.0, "broker_error_rate": 0.0,
                                              "store_latency_ms": 0, "broker_latency_ms": 0, **rates})
            if code != 200:
                raise CheckError(f"PUT /admin/faults answered {code}: {body[:200]!r}")

        # Idempotency-Key on ingest: every outcome of app_idempotent_requests_total. A new key
        # publishes, the same key and body again is replayed, another body is key_reused (409),
        # and a second request while the first is still publishing (slowed broker) is in_flight (409).
        key = {"Idempotency-Key": f"dashboards-check-{os.getpid()}"}
        hit("POST", "/challenge-latam-api/ingestData", record, key)
        hit("POST", "/challenge-latam-api/ingestData", record, key)
        hit("POST", "/challenge-latam-api/ingestData", [record, record], key)
        inject(broker_latency_ms=500)
        key = {"Idempotency-Key": f"dashboards-check-{os.getpid()}-slow"}
        at_once([("POST", "/challenge-latam-api/ingestData", record, key)] * 2)
        # getData's read path (src/pages.rs), with the store slowed so queries overlap: identical
        # concurrent misses share one query (coalesced), and more distinct queries than
        # QUERY_MAX_IN_FLIGHT (set low in the stack) are answered 503 (rejected).
        inject(store_latency_ms=400)
        at_once([("GET", "/challenge-latam-api/getData?limit=4&customerId=coalesce-check")] * 5)
        at_once([("GET", f"/challenge-latam-api/getData?limit={n}&customerId=bound-check") for n in range(1, QUERY_MAX_IN_FLIGHT + 3)])
        inject()
        # A revalidation: If-None-Match with the page's ETag is a 304 (a read that sends no body).
        etag = hit("GET", "/challenge-latam-api/getData?limit=3").get("etag")
        if not etag:
            raise CheckError("getData answered without an ETag")
        hit("GET", "/challenge-latam-api/getData?limit=3", None, {"If-None-Match": etag})

        inject(http_error_rate=1.0)          # 500s: the availability SLI's bad events
        for _ in range(5):
            hit("POST", "/challenge-latam-api/ingestData", record)
            hit("GET", "/challenge-latam-api/getData")
        inject(broker_error_rate=1.0, store_error_rate=1.0)   # dependency errors (error_type set)
        for _ in range(5):
            hit("POST", "/challenge-latam-api/ingestData", record)
            hit("GET", "/challenge-latam-api/getData")
        inject()
        for _ in range(5):
            hit("POST", "/challenge-latam-api/ingestData", record)
            hit("GET", "/challenge-latam-api/getData")
        # Over the rate limit (default 50/s, burst 100) until it answers 429 a few times; bounded,
        # so a slow machine sends more requests but never an unbounded number.
        for _ in range(1000):
            hit("GET", "/challenge-latam-api/getData?limit=1")
            if codes.get("429", 0) >= 10:
                break
        return codes

    def families(self) -> list:
        """The admin port's exposition, read by prometheus_client's parser."""
        code, body = http("GET", f"http://127.0.0.1:{self.admin}/metrics")
        if code != 200:
            raise CheckError(f"/metrics answered {code}")
        return list(text_string_to_metric_families(body.decode()))

    def scrape(self) -> dict[str, str]:
        """Metric name -> type, from the admin port's exposition: every sample name, and a
        histogram's family name too."""
        out = {}
        for fam in self.families():
            typ = "untyped" if fam.type == "unknown" else fam.type
            out.update({s.name: typ for s in fam.samples})
            if fam.type == "histogram":
                out[fam.name] = typ
        return out

    def scrape_label_keys(self) -> dict[str, set[str]]:
        """Metric (a histogram by its family name) -> every label name its series carry (`le`
        aside), from the exposition."""
        keys: dict[str, set[str]] = {}
        for fam in self.families():
            for s in fam.samples:
                name = fam.name if fam.type == "histogram" else s.name
                keys.setdefault(name, set()).update(k for k in s.labels if k != "le")
        return keys

    def scrape_bounds(self) -> dict[str, set[tuple[float, ...]]]:
        """Histogram family -> the finite `le` bounds of each of its series, from the exposition."""
        out: dict[str, set[tuple[float, ...]]] = {}
        for fam in self.families():
            if fam.type != "histogram":
                continue
            per_series: dict[str, set[float]] = {}
            for s in fam.samples:
                if s.name == f"{fam.name}_bucket" and float(s.labels["le"]) != float("inf"):
                    series = json.dumps(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                    per_series.setdefault(series, set()).add(float(s.labels["le"]))
            for bounds in per_series.values():
                out.setdefault(fam.name, set()).add(tuple(sorted(bounds)))
        return out

    def scrape_by_label(self, name: str, label: str) -> dict[str, float]:
        """Value of the samples called `name` summed by their `label`, from the exposition."""
        out: dict[str, float] = {}
        for s in (s for fam in self.families() for s in fam.samples if s.name == name):
            value = s.labels.get(label, "")
            out[value] = out.get(value, 0.0) + s.value
        return out

    def scrape_count(self, histogram: str) -> float:
        """Sum of `<histogram>_count` over every series of the admin port's exposition."""
        return sum(self.scrape_by_label(f"{histogram}_count", "").values())

    def wait_for_otlp(self, histogram: str, seconds: float = 20) -> dict:
        """The metrics the service exported over OTLP, once the deltas it sent for `histogram`
        add up to the count the scrape shows (so every request of the traffic is in them)."""
        deadline, want, got = time.time() + seconds, None, None
        while time.time() < deadline:
            want = self.scrape_count(histogram)
            metrics = otlp_metrics(self.otlp.requests())
            got = metrics[histogram].count if histogram in metrics else None
            if got is not None and got == want:
                return metrics
            time.sleep(0.5)
        if not self.otlp.requests():
            raise CheckError(f"the service exported no metrics over OTLP to {self.otlp.endpoint} within {seconds:.0f} s "
                             f"(OTEL_EXPORTER_OTLP_ENDPOINT set, OTEL_METRIC_EXPORT_INTERVAL=1000)")
        raise CheckError(f"OTLP and /metrics disagree on {histogram}: the exported points add up to {got} requests, the "
                         f"scrape counts {want} (not delta temporality, or requests missing from the export)")

    def query(self, expr: str) -> list:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, body = http("GET", url, timeout=20)
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise CheckError(f"Prometheus rejects the expression ({doc.get('errorType')}: {doc.get('error')}): {expr}")
        return doc["data"]["result"]

    def wait_for_samples(self, seconds: float = 20) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            r = self.query(f'count_over_time(up{{service="{SERVICE}"}}[1m])')
            if r and float(r[0]["value"][1]) >= 6:
                return
            time.sleep(0.5)
        raise CheckError("Prometheus did not scrape the service 6 times")


def substitute_grafana(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$service", SERVICE)


def rule_files() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "alerts", "prometheus", "*.y*ml")))


# --- 3. SLO coverage -----------------------------------------------------------------------------


def check_slo_coverage(grafana: dict, cm: dict, dd: dict, fleet: dict, slos: list[dict], policies: dict,
                       dd_fleet: dict | None = None) -> int:
    panels = 0
    for slo in slos:
        n = slo["name"]
        gp = [p for p in grafana["panels"] if p.get("type") != "row" and p["title"].startswith(f"{n}: ")]
        if not any("budget left" in p["title"] for p in gp):
            raise CheckError(f"grafana/slo.json: SLO '{n}' has no error-budget panel")
        cm_titles = [t["widget"].get("title", "") for t in cm["mosaicLayout"]["tiles"]]
        if not any(t.startswith(f"{n}: error budget left") for t in cm_titles):
            raise CheckError(f"cloud-monitoring/slo.json.tftpl: SLO '{n}' has no error-budget scorecard")
        dd_groups = [g["definition"] for g in dd["widgets"] if g["definition"]["title"].startswith(f"SLO {n}:")]
        if not dd_groups:
            raise CheckError(f"datadog/slo.json: SLO '{n}' has no group")
        dd_widgets = dd_groups[0]["widgets"]
        for pname in slo["policies"]:
            p = policies[pname]
            thr = p["burn_rate"]
            g = [x for x in gp if f" {pname} burn " in x["title"]]
            if not g or not any(s.get("value") == thr for s in g[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]) \
                    or g[0]["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "off" or len(g[0]["targets"]) != 2:
                raise CheckError(f"grafana/slo.json: SLO '{n}' lacks the {pname} burn panel with both windows and a {thr:g} threshold line")
            c = [t["widget"] for t in cm["mosaicLayout"]["tiles"] if t["widget"].get("title", "").startswith(f"{n}: {pname} burn")]
            if not c or not any(t["value"] == thr for t in c[0]["xyChart"].get("thresholds", [])):
                raise CheckError(f"cloud-monitoring/slo.json.tftpl: SLO '{n}' lacks the {pname} burn chart with a {thr:g} threshold")
            d = [w["definition"] for w in dd_widgets if f" {pname} burn " in w["definition"]["title"]]
            if not d or not any(m["value"] == f"y = {thr:g}" for m in d[0].get("markers", [])):
                raise CheckError(f"datadog/slo.json: SLO '{n}' lacks the {pname} burn chart with a {thr:g} marker")
            panels += 3
        table = [p for p in fleet["panels"] if p["type"] == "table"]
        if not table or not any(t["legendFormat"].startswith(f"{n} ") for t in table[0]["targets"]):
            raise CheckError(f"grafana/fleet.json: the summary table has no column for SLO '{n}'")
        if dd_fleet is not None:
            aliases = [f.get("alias", "") for q in datadog_tables(dd_fleet) for f in q.get("formulas", [])]
            if not any(a.startswith(f"{n} ") for a in aliases):
                raise CheckError(f"datadog/fleet.json: the summary table has no column for SLO '{n}'")
    return panels


BILLING = {"grafana": ["app_bigquery_billed_bytes_total"],
           "cloud-monitoring": ["app_bigquery_billed_bytes_total", "pubsub.googleapis.com/topic/byte_cost",
                                "run.googleapis.com/container/billable_instance_time"],
           "datadog": ["app_bigquery_billed_bytes_total", "gcp.pubsub.topic.byte_cost", "gcp.run.container.billable_instance_time"]}


def check_fleet(grafana: dict, cm_fleet: dict, dd_fleet: dict, slos: list[dict]) -> str:
    """The fleet view answers "50 similar systems": Apdex per latency SLO on every backend, the
    metrics tied to billing, and (Grafana) links from a service to its own dashboards."""
    fleet = grafana["fleet.json"]
    latency = [s for s in slos if s["model"].get("apdex")]
    if not latency:
        raise CheckError("the model has no latency SLO with an Apdex")
    texts = {"grafana": json.dumps(fleet), "cloud-monitoring": json.dumps(cm_fleet), "datadog": json.dumps(dd_fleet)}
    for backend, text in texts.items():
        for s in latency:
            if f"{s['name']} Apdex (T " not in text:
                raise CheckError(f"{backend}/fleet.json: no Apdex of SLO '{s['name']}'")
        for name in BILLING[backend]:
            if name not in text:
                raise CheckError(f"{backend}/fleet.json: no billing metric {name}")
    uids = {d["uid"] for d in grafana.values()}
    links = [(p["title"], link["url"]) for p in fleet["panels"] for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])]
    linked = {t for t, _ in links}
    for p in fleet["panels"]:
        if p["type"] != "row" and any("by (service)" in t["expr"] for t in p["targets"]) and p["title"] not in linked:
            raise CheckError(f"grafana/fleet.json: '{p['title']}' is per service but links to no service's dashboard")
    for title, url in links:
        m = re.match(r"/d/([\w-]+)\?var-service=\$\{__(data\.fields|field\.labels)\.service\}", url)
        if not m or m.group(1) not in uids:
            raise CheckError(f"grafana/fleet.json: '{title}' links to {url}, not to a generated dashboard of that service")
    return f"{len(latency)} Apdex views and {sum(map(len, BILLING.values()))} billing metrics across 3 backends, {len(links)} Grafana drill-down links"


# --- Main ------------------------------------------------------------------------------------------


def load(rel: str):
    with open(os.path.join(DASH, rel), encoding="utf-8") as f:
        return f.read()


def expect_rejected(label: str, fn) -> str:
    try:
        fn()
    except CheckError as e:
        return str(e).split(": ", 1)[-1][:90]
    raise CheckError(f"known-bad fixture {label} passed: the check cannot fail")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the service binary")
    args = ap.parse_args()
    started = time.time()
    try:
        # Generated files are current.
        r = subprocess.run([sys.executable, os.path.join(DASH, "generate.py"), "--check"], capture_output=True, text=True)
        if r.returncode:
            raise CheckError(r.stderr.strip() or r.stdout.strip())
        say("generated files match dashboards/generate.py and the SLO model (dashboards/slo-model.json)")

        # 1. Shapes.
        grafana = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob(f"{DASH}/grafana/*.json"))}
        cm = {os.path.basename(p).replace(".tftpl", ""): check_cloud_monitoring(open(p).read(), f"cloud-monitoring/{os.path.basename(p)}")
              for p in sorted(glob.glob(f"{DASH}/cloud-monitoring/*.json") + glob.glob(f"{DASH}/cloud-monitoring/*.tftpl"))}
        dd = {os.path.basename(p): json.load(open(p)) for p in sorted(glob.glob(f"{DASH}/datadog/*.json"))}
        for want in ("service.json", "pipeline.json", "slo.json", "fleet.json"):
            for backend, docs in (("grafana", grafana), ("cloud-monitoring", cm), ("datadog", dd)):
                if want not in docs:
                    raise CheckError(f"dashboards/{backend}/{want} is missing")
        for n, d in grafana.items():
            check_grafana(d, f"grafana/{n}")
        dd_models = sum(check_datadog(d, f"datadog/{n}") for n, d in dd.items())
        n_g_panels = sum(1 for d in grafana.values() for p in d["panels"] if p["type"] != "row")
        n_cm_tiles = sum(len(d["mosaicLayout"]["tiles"]) for d in cm.values())
        n_dd = sum(len(g["definition"]["widgets"]) for d in dd.values() for g in d["widgets"])
        say(f"shape: grafana {len(grafana)} dashboards / {n_g_panels} panels; cloud monitoring {len(cm)} / {n_cm_tiles} tiles "
            f"(as file()/templatefile() send them, parsed by the Dashboard proto); datadog {len(dd)} / {n_dd} widgets ({dd_models} schema objects)")

        # 3. SLO coverage (before the slow part).
        slos, policies = generate.load_slos()
        n = check_slo_coverage(grafana["slo.json"], cm["slo.json"], dd["slo.json"], grafana["fleet.json"], slos, policies, dd["fleet.json"])
        say(f"SLOs: {len(slos)} in the model ({', '.join(s['name'] for s in slos)}); {n} burn-rate panels with thresholds across 3 backends")
        say(f"fleet: {check_fleet(grafana, cm['fleet.json'], dd['fleet.json'], slos)}")

        platform = yaml.safe_load(load("platform-metrics.yaml"))
        for backend, entries in platform.items():
            for e in entries:
                if not str(e.get("doc", "")).startswith("https://") or not e.get("name"):
                    raise CheckError(f"platform-metrics.yaml: {backend} entry {e} needs a name and an https doc link")
        listed = {b: {e["name"] for e in entries} for b, entries in platform.items()}
        gcp_only = platform.get(GCP_ONLY) or []
        for e in gcp_only:
            check_gcp_only_declaration(e)
        gcp_only_names = listed.get(GCP_ONLY, set())

        # 4. Known-bad fixtures are rejected (offline part).
        rejected = []
        rejected.append(expect_rejected("grafana-undefined-variable.json", lambda: check_grafana(json.load(open(f"{FIXTURES}/grafana-undefined-variable.json")), "fixture")))
        rejected.append(expect_rejected("cloud-monitoring-unknown-field.json", lambda: check_cloud_monitoring(open(f"{FIXTURES}/cloud-monitoring-unknown-field.json").read(), "fixture")))
        rejected.append(expect_rejected("cloud-monitoring-unescaped.json", lambda: check_cloud_monitoring(open(f"{FIXTURES}/cloud-monitoring-unescaped.json").read(), "fixture.tftpl")))
        rejected.append(expect_rejected("datadog-bad-widget.json", lambda: check_datadog(json.load(open(f"{FIXTURES}/datadog-bad-widget.json")), "fixture")))
        rejected.append(expect_rejected("datadog-mixed-filter.json", lambda: check_datadog(json.load(open(f"{FIXTURES}/datadog-mixed-filter.json")), "fixture")))
        rejected.append(expect_rejected("datadog-unknown-key.json", lambda: check_datadog(json.load(open(f"{FIXTURES}/datadog-unknown-key.json")), "fixture")))
        for fixture in ("gcp-only-wrong-type.yaml", "gcp-only-wrong-label.yaml"):
            entries = yaml.safe_load(open(f"{FIXTURES}/{fixture}"))[GCP_ONLY]
            rejected.append(expect_rejected(fixture, lambda entries=entries, fixture=fixture:
                                            [check_gcp_only_declaration(e, fixture) for e in entries]))
        short = copy.deepcopy(grafana["slo.json"])
        short["panels"] = [p for p in short["panels"] if not p.get("title", "").startswith(f"{slos[-1]['name']}: ")]
        unlinked = copy.deepcopy(grafana)
        for p in unlinked["fleet.json"]["panels"]:
            p.get("fieldConfig", {}).get("defaults", {}).pop("links", None)
        rejected.append(expect_rejected("fleet.json without drill-down links", lambda: check_fleet(unlinked, cm["fleet.json"], dd["fleet.json"], slos)))
        dead = copy.deepcopy(grafana)
        for p in dead["fleet.json"]["panels"]:
            for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                link["url"] = link["url"].replace("/d/challenge-latam-", "/d/renamed-")
        rejected.append(expect_rejected("fleet.json linking to a dashboard that does not exist", lambda: check_fleet(dead, cm["fleet.json"], dd["fleet.json"], slos)))
        rejected.append(expect_rejected("slo.json without its last SLO", lambda: check_slo_coverage(short, cm["slo.json"], dd["slo.json"], grafana["fleet.json"], slos, policies)))

        # 2. Metrics, against the live service and a real Prometheus.
        if not os.access(args.bin, os.X_OK):
            raise CheckError(f"{args.bin} is not an executable (build it: cargo build --release)")
        if not shutil.which("prometheus"):
            raise CheckError("prometheus is not installed (scripts/deps/dashboards.apt)")
        rules = rule_files()
        recorded = generate.recording_rules()
        with Stack(args.bin, rules, gcp_only) as stack:
            codes = stack.drive_traffic()
            for want in ("200", "304", "404", "409", "422", "429", "500", "503"):
                if want not in codes:
                    raise CheckError(f"the known traffic produced no {want} (answers: {codes})")
            exposition = stack.scrape()
            stack.wait_for_samples()
            time.sleep(2)  # a rule evaluation after the last traffic
            lookups = stack.scrape_by_label("app_getdata_cache_lookups_total", "result")
            shed = stack.scrape_by_label("app_getdata_store_queries_rejected_total", "")
            idempotent = stack.scrape_by_label("app_idempotent_requests_total", "idempotency_outcome")
            say(f"live service: traffic answered {dict(sorted(codes.items()))}; getData cache lookups "
                f"{ {k: int(v) for k, v in sorted(lookups.items())} }, {int(sum(shed.values()))} rejected at the in-flight bound "
                f"({QUERY_MAX_IN_FLIGHT}); idempotent ingest { {k: int(v) for k, v in sorted(idempotent.items())} }")
            say(f"live service: scrape shows {len(exposition)} names; "
                f"prometheus on 127.0.0.1:{stack.prom_port} with {len(rules)} rule file(s), {len(recorded)} recording rules")
            otlp = stack.wait_for_otlp("http_server_request_duration_seconds")
            series = check_otlp_export(otlp, exposition, stack.scrape_label_keys(), stack.scrape_bounds())
            check_gcp_only_absent(gcp_only_names, exposition, otlp)
            series = {**series, **declared_datadog(gcp_only)}
            say(f"OTLP export: {len(stack.otlp.requests())} metric exports, {len(otlp)} metrics ({sum(1 for m in otlp.values() if m.kind == 'histogram')} "
                f"histograms with the contract's buckets), all DELTA, {otlp['http_server_request_duration_seconds'].count:g} requests as in the scrape; "
                f"{stack.otlp.spans} spans; as Datadog maps them: {len(series)} metrics")

            allowed_prom = set(exposition) | recorded | listed.get("prometheus", set()) | gcp_only_names
            used_platform: dict[str, set[str]] = {b: set() for b in listed}
            unknown, checked_names = [], set()

            # PromQL: Grafana and Cloud Monitoring.
            exprs = [(f"grafana/{n}", title, substitute_grafana(e)) for n, d in grafana.items() for title, e in grafana_targets(d)]
            exprs += [(f"cloud-monitoring/{n}", "prometheusQuery", e) for n, d in cm.items() for e in cm_promql(d)]
            empty, gcp_only_exprs = [], set()
            for where, title, expr in exprs:
                for m in promql_metrics(expr):
                    checked_names.add(m)
                    if m in listed.get("prometheus", set()):
                        used_platform["prometheus"].add(m)
                    if m in gcp_only_names:
                        used_platform[GCP_ONLY].add(m)
                        gcp_only_exprs.add(expr)
                    if m not in allowed_prom:
                        unknown.append(f"{where} '{title}': {m}")
                if not stack.query(expr) and not title.startswith("annotation "):
                    empty.append(f"{where} '{title}': {expr[:160]}")
            # Cloud Monitoring filters.
            n_filters = 0
            for n, d in cm.items():
                for flt in cm_filters(d):
                    n_filters += 1
                    for sel in re.findall(r'select_slo_\w+\("projects/[^/]+/services/[^/]+/serviceLevelObjectives/([^"]+)"', flt):
                        if sel not in {s["name"] for s in slos}:
                            unknown.append(f"cloud-monitoring/{n}: SLO '{sel}' is not in the SLO model")
                    for mt in re.findall(r'metric\.type="([^"]+)"', flt):
                        checked_names.add(mt)
                        if mt.startswith("prometheus.googleapis.com/"):
                            prom = mt.split("/")[1]
                            if prom in gcp_only_names:
                                used_platform[GCP_ONLY].add(prom)
                            elif prom not in exposition:
                                unknown.append(f"cloud-monitoring/{n}: {mt}")
                        elif mt in listed.get("cloud_monitoring", set()):
                            used_platform["cloud_monitoring"].add(mt)
                        else:
                            unknown.append(f"cloud-monitoring/{n}: {mt} (not emitted, not in platform-metrics.yaml)")
            # Datadog queries (dashboards and the SLOs of alerts/datadog): against what the OTLP
            # export becomes in Datadog, tags and values included.
            n_dd_q = 0
            dd_platform = listed.get("datadog", set())
            for where, q, variables in datadog_query_sources(dd) + datadog_alert_queries():
                n_dd_q += 1
                try:
                    names = check_query(q, series, dd_platform, variables)
                except QueryError as e:
                    unknown.append(f"{where}: {e}")
                    continue
                checked_names |= names
                used_platform["datadog"] |= names & dd_platform
                if GCP_ONLY in used_platform:
                    used_platform[GCP_ONLY] |= names & gcp_only_names
            if unknown:
                raise CheckError("metrics neither emitted by the service nor listed in dashboards/platform-metrics.yaml:\n  " + "\n  ".join(sorted(set(unknown))))
            stale = {b: sorted(listed[b] - used_platform[b]) for b in listed if listed[b] - used_platform[b]}
            if stale:
                raise CheckError(f"platform-metrics.yaml lists metrics no dashboard uses: {stale}")
            if empty:
                raise CheckError(f"{len(empty)} PromQL expressions return no data after the known traffic:\n  " + "\n  ".join(empty))
            say(f"metrics: {len(exprs)} PromQL expressions ran on Prometheus, all returned data; {n_filters} Cloud Monitoring filters; "
                f"{n_dd_q} Datadog queries (dashboards and alerts/datadog), every metric, tag and value in the OTLP export as Datadog maps it; "
                f"{len(checked_names)} distinct names, all emitted or listed "
                f"({sum(len(v) for b, v in used_platform.items() if b != GCP_ONLY)} platform metrics with doc links)")
            if gcp_only:
                say(f"gcp-only service metrics: {len(gcp_only)} declared in platform-metrics.yaml ({', '.join(sorted(gcp_only_names))}), "
                    f"each a constant of src/telemetry/metrics.rs with its type and recorded with its labels; absent from the local "
                    f"service as declared; {len(gcp_only_exprs)} PromQL expressions and the Datadog queries on them ran against "
                    f"their declared series ({len(declared_series(gcp_only))}, {stack.declared.scrapes} scrapes)")

            # Known-bad fixtures against the live stack.
            bad = json.load(open(f"{FIXTURES}/grafana-bad-promql.json"))
            rejected.append(expect_rejected("grafana-bad-promql.json", lambda: [stack.query(substitute_grafana(e)) for _, e in grafana_targets(bad)]))
            bad = json.load(open(f"{FIXTURES}/grafana-unknown-metric.json"))
            names = {m for _, e in grafana_targets(bad) for m in promql_metrics(e)}

            def unknown_metric():
                missing = names - allowed_prom
                if missing:
                    raise CheckError(f"not emitted: {sorted(missing)}")
            rejected.append(expect_rejected("grafana-unknown-metric.json", unknown_metric))
            fixture = "gcp-only-emitted-locally.yaml"
            entries = yaml.safe_load(open(f"{FIXTURES}/{fixture}"))[GCP_ONLY]

            def emitted_locally(entries=entries, fixture=fixture):
                for e in entries:
                    check_gcp_only_declaration(e, fixture)   # a faithful declaration, but
                check_gcp_only_absent({e["name"] for e in entries}, exposition, otlp, fixture)
            rejected.append(expect_rejected(fixture, emitted_locally))
            for fixture in ("datadog-unknown-metric.json", "datadog-openmetrics-names.json", "datadog-slo-cumulative-bucket.json",
                            "datadog-gcp-only-unknown-value.json"):
                bad_doc = json.load(open(f"{FIXTURES}/{fixture}"))

                def dd_unknown(doc=bad_doc, name=fixture):
                    srcs = datadog_query_sources({name: doc}) if "widgets" in doc else datadog_slo_queries(doc, name)
                    for where, q, variables in srcs:
                        try:
                            check_query(q, series, listed.get("datadog", set()), variables)
                        except QueryError as e:
                            raise CheckError(f"{where}: {e}") from e
                rejected.append(expect_rejected(fixture, dd_unknown))
        say(f"known-bad fixtures: {len(rejected)} rejected as they should be ({'; '.join(rejected)})")
    except CheckError as e:
        print(f"30-dashboards: FAIL: {e}", file=sys.stderr)
        return 1
    say(f"all dashboard checks passed in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
