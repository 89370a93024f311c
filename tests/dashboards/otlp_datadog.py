"""What the service really sends over OTLP, and the names and tags Datadog makes of it.

On Cloud Run the app's metrics reach Datadog only over OTLP: the serverless-init sidecar receives
them on localhost:4317 and maps them with the Datadog Agent's OTLP translator
(dashboards/datadog/README.md documents the mapping and its sources). This module lets the
dashboard check hold every Datadog query against that reality:

- `Receiver`: an OTLP/gRPC endpoint on 127.0.0.1 (metrics and traces services) that keeps every
  metrics export the service sends;
- `datadog_series`: the Datadog metrics those exports become with the sidecar's settings
  (terraform/modules/cloud_run: histograms in `counters` mode with aggregation metrics), each
  with its type and every tag key and value seen;
- `check_query`: every metric a Datadog query names must be one of those (or a listed platform
  metric), every tag key it filters or groups on must be on that metric, every exact value must
  have been seen, and an `upper_bound` selection on a `.bucket` metric must take every bucket
  from the first one up (the buckets are per bucket, not cumulative like Prometheus' `le`).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
import threading
from concurrent import futures
from dataclasses import dataclass, field
from decimal import Decimal

# Resource attributes the agent turns into tags by default (resource_attributes_as_tags: false):
# unified service tagging (DataDog/opentelemetry-mapping-go, pkg/otlp/attributes, coreMapping).
RESOURCE_TAGS = {
    "service.name": "service",
    "service.version": "version",
    "deployment.environment": "env",
    "deployment.environment.name": "env",
}


class QueryError(Exception):
    pass


# --- The receiver --------------------------------------------------------------------------------


class Receiver:
    """OTLP/gRPC metrics (and traces, accepted and counted) on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metric_requests: list = []
        self.spans = 0
        self.server = None
        self.port = 0

    def __enter__(self) -> "Receiver":
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802 (the gRPC method name)
                with receiver.lock:
                    receiver.metric_requests.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                with receiver.lock:
                    receiver.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise RuntimeError("could not bind an OTLP receiver on 127.0.0.1")
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.server is not None:
            self.server.stop(grace=1).wait()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list:
        with self.lock:
            return list(self.metric_requests)


# --- What the exports say ------------------------------------------------------------------------


def _attr_value(v) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    return str(getattr(v, kind)) if kind else ""


@dataclass
class OtlpMetric:
    """One metric name as the exports carry it: kind, temporality, monotonicity, attribute keys
    and values, explicit bounds, and the summed counts of its points."""

    kind: str                                   # gauge, sum, histogram, exponential_histogram, summary
    temporality: set[str] = field(default_factory=set)
    monotonic: set[bool] = field(default_factory=set)
    attributes: dict[str, set[str]] = field(default_factory=dict)
    bounds: set[tuple[float, ...]] = field(default_factory=set)
    has_min_max: bool = False
    count: float = 0.0                           # histograms: sum of point counts; sums: of values
    resource: dict[str, set[str]] = field(default_factory=dict)


TEMPORALITY = {0: "UNSPECIFIED", 1: "DELTA", 2: "CUMULATIVE"}


def otlp_metrics(requests: list) -> dict[str, OtlpMetric]:
    out: dict[str, OtlpMetric] = {}
    for req in requests:
        for rm in req.resource_metrics:
            resource = {a.key: _attr_value(a.value) for a in rm.resource.attributes}
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    om = out.setdefault(m.name, OtlpMetric(kind=kind))
                    if om.kind != kind:
                        raise QueryError(f"metric {m.name} arrives as both {om.kind} and {kind}")
                    for k, v in resource.items():
                        om.resource.setdefault(k, set()).add(v)
                    data = getattr(m, kind)
                    if hasattr(data, "aggregation_temporality"):
                        om.temporality.add(TEMPORALITY.get(data.aggregation_temporality, str(data.aggregation_temporality)))
                    if kind == "sum":
                        om.monotonic.add(data.is_monotonic)
                    for p in data.data_points:
                        for a in p.attributes:
                            om.attributes.setdefault(a.key, set()).add(_attr_value(a.value))
                        if kind == "histogram":
                            om.bounds.add(tuple(p.explicit_bounds))
                            om.has_min_max |= p.HasField("min") and p.HasField("max")
                            om.count += p.count
                        elif kind == "sum":
                            om.count += p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
    return out


# --- The Datadog mapping (dashboards/datadog/README.md) ---------------------------------------------


def datadog_tag_value(value: str) -> str:
    """Datadog lowercases tag values and turns characters other than alphanumerics and
    `_ - : . /` into `_`; the translator writes an empty value as `n/a`."""
    if value == "":
        return "n/a"
    return re.sub(r"[^a-z0-9_\-:./]", "_", value.lower())


def format_bound(f: float) -> str:
    """formatFloat of the translator: Go's strconv.FormatFloat(f, 'g', -1, 64), then `.0` added to
    whole numbers; `inf`, `-inf`, `0` as such (0.25 -> 0.25, 1 -> 1.0, 60 -> 60.0)."""
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if math.isnan(f):
        return "nan"
    if f == 0:
        return "0"
    sign, digits, e = Decimal(repr(float(f))).normalize().as_tuple()   # shortest digits, as Go's
    ds = "".join(map(str, digits))
    dp = len(ds) + e                    # position of the decimal point
    x = dp - 1                          # the %e exponent
    if x < -4 or x >= 6:                # %g with shortest precision decides at 6 digits
        s = ds[0] + ("." + ds[1:] if len(ds) > 1 else "") + "e" + ("-" if x < 0 else "+") + f"{abs(x):02d}"
    elif dp <= 0:
        s = "0." + "0" * -dp + ds
    elif dp >= len(ds):
        s = ds + "0" * (dp - len(ds))
    else:
        s = ds[:dp] + "." + ds[dp:]
    s = ("-" if sign else "") + s
    return s + ".0" if f == math.floor(f) else s


@dataclass
class Series:
    type: str                                    # count or gauge
    tags: dict[str, set[str]] = field(default_factory=dict)


def _add(series: dict[str, Series], name: str, typ: str, tags: dict[str, set[str]]) -> None:
    s = series.setdefault(name, Series(type=typ))
    if s.type != typ:
        raise QueryError(f"Datadog metric {name} would be both {s.type} and {typ}")
    for k, vs in tags.items():
        s.tags.setdefault(k, set()).update(vs)


def datadog_series(metrics: dict[str, OtlpMetric], histogram_mode: str = "counters",
                   send_aggregation_metrics: bool = True) -> dict[str, Series]:
    """The Datadog metrics the exports become (names, types, tag keys and values)."""
    series: dict[str, Series] = {}
    for name, m in metrics.items():
        dd_name = "otel." + name if name.startswith(("system.", "process.")) else name
        tags = {k: {datadog_tag_value(v) for v in vs} for k, vs in m.attributes.items()}
        for attr, tag in RESOURCE_TAGS.items():
            if attr in m.resource:
                tags.setdefault(tag, set()).update(datadog_tag_value(v) for v in m.resource[attr])
        delta = m.temporality == {"DELTA"}
        if m.kind == "gauge":
            _add(series, dd_name, "gauge", tags)
        elif m.kind == "sum":
            cumulative_updown = "CUMULATIVE" in m.temporality and False in m.monotonic
            _add(series, dd_name, "gauge" if cumulative_updown else "count", tags)
        elif m.kind == "histogram":
            if send_aggregation_metrics:
                _add(series, f"{dd_name}.count", "count", tags)
                _add(series, f"{dd_name}.sum", "count", tags)
                if delta and m.has_min_max:
                    _add(series, f"{dd_name}.min", "gauge", tags)
                    _add(series, f"{dd_name}.max", "gauge", tags)
            if histogram_mode == "counters":
                lower, upper = set(), set()
                for bounds in m.bounds:
                    edges = [-math.inf, *bounds, math.inf]
                    lower.update(format_bound(b) for b in edges[:-1])
                    upper.update(format_bound(b) for b in edges[1:])
                _add(series, f"{dd_name}.bucket", "count", {**tags, "lower_bound": lower, "upper_bound": upper})
            elif histogram_mode == "distributions":
                _add(series, dd_name, "distribution", tags)
        elif m.kind == "exponential_histogram":
            _add(series, dd_name, "distribution", tags)
        elif m.kind == "summary":
            _add(series, f"{dd_name}.count", "count", tags)
            _add(series, f"{dd_name}.sum", "count", tags)
    return series


# --- Datadog queries -----------------------------------------------------------------------------

QUERY_RE = re.compile(r"(?:^|[\s(,])(?:sum|avg|max|min|p\d+|count\(v: [^)]*\)):([A-Za-z0-9_.]+)\{([^}]*)\}(?:\s*by\s*\{([^}]*)\})?")


@dataclass
class Term:
    key: str
    values: list[str]            # empty: the key only (a template variable's value)


def parse_filter(flt: str, variables: dict[str, str]) -> list[Term]:
    """Terms of a Datadog metric filter: `k:v`, `k IN (a, b)`, `$var` (its prefix is the key),
    joined by AND/OR/NOT and parentheses; `*` selects everything."""
    terms: list[Term] = []
    rest = flt
    for m in re.finditer(r"([A-Za-z_][\w.\-]*)\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", flt):
        terms.append(Term(m.group(1), [v.strip() for v in m.group(2).split(",") if v.strip()]))
    rest = re.sub(r"([A-Za-z_][\w.\-]*)\s+(?:NOT\s+)?IN\s*\(([^)]*)\)", " ", rest)
    for tok in re.sub(r"[()!]", " ", rest).replace(",", " ").split():
        if tok in ("AND", "OR", "NOT", "*"):
            continue
        if tok.startswith("$"):
            var = tok[1:].split(".")[0]
            if var not in variables:
                raise QueryError(f"template variable ${var} is not defined")
            terms.append(Term(variables[var], []))
        elif ":" in tok:
            key, value = tok.split(":", 1)
            terms.append(Term(key, [] if value.startswith("$") else [value]))
        else:
            raise QueryError(f"filter term {tok!r} is neither key:value, key IN (...) nor a template variable")
    return terms


def _bound_value(v: str) -> float:
    return math.inf if v == "inf" else -math.inf if v == "-inf" else float(v)


def check_query(query: str, series: dict[str, Series], platform: set[str], variables: dict[str, str]) -> set[str]:
    """Raises QueryError naming the first metric or tag of `query` that would not exist in
    Datadog; returns the metric names it checked."""
    found = QUERY_RE.findall(query)
    if not found:
        raise QueryError(f"no metric recognised in query {query}")
    names = set()
    for name, flt, by in found:
        names.add(name)
        if name in platform:
            continue
        s = series.get(name)
        if s is None:
            close = difflib.get_close_matches(name, list(series), n=3)
            raise QueryError(f"{name} is not a metric the service's OTLP export becomes in Datadog"
                             f"{' (closest: ' + ', '.join(close) + ')' if close else ''}")
        terms = parse_filter(flt, variables)
        terms += [Term(k.strip(), []) for k in by.split(",") if k.strip()]
        for t in terms:
            if t.key not in s.tags:
                raise QueryError(f"{name} never carries a tag {t.key!r} (its tags: {', '.join(sorted(s.tags))})")
            for v in t.values:
                seen = s.tags[t.key]
                if ("*" in v and not any(fnmatch.fnmatchcase(x, v) for x in seen)) or ("*" not in v and v not in seen):
                    raise QueryError(f"{name}: no series has {t.key}:{v} (seen: {', '.join(sorted(seen)[:20])})")
        if name.endswith(".bucket"):
            chosen = {v for t in terms if t.key == "upper_bound" for v in t.values}
            if chosen:
                top = max(_bound_value(v) for v in chosen)
                needed = {v for v in s.tags["upper_bound"] if _bound_value(v) <= top}
                if needed - chosen:
                    raise QueryError(f"{name}: upper_bound selects {', '.join(sorted(chosen, key=_bound_value))} but the buckets "
                                     f"are per bucket, not cumulative: the share under {top:g} also needs "
                                     f"{', '.join(sorted(needed - chosen, key=_bound_value))}")
    return names
