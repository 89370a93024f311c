"""Unit tests of the OTLP receiver and the Datadog mapping the dashboard check applies to it:
if the mapping were wrong, the check would approve queries that find nothing in Datadog."""

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from otlp_datadog import QueryError, Receiver, check_query, datadog_series, format_bound, otlp_metrics

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def kv(**attrs):
    return [common_pb2.KeyValue(key=k.replace("__", "."), value=common_pb2.AnyValue(string_value=v)) for k, v in attrs.items()]


def export():
    """What the service sends, in miniature: a delta histogram, a delta counter, a gauge."""
    hist = metrics_pb2.Metric(name="http_server_request_duration_seconds", histogram=metrics_pb2.Histogram(
        aggregation_temporality=DELTA,
        data_points=[metrics_pb2.HistogramDataPoint(
            attributes=kv(http_request_method="POST", http_route="/challenge-latam-api/ingestData", http_response_status_code="200"),
            count=3, sum=0.3, bucket_counts=[1, 1, 0, 0, 0, 0, 1] + [0] * 8, explicit_bounds=BOUNDS, min=0.001, max=0.2)]))
    counter = metrics_pb2.Metric(name="messaging_client_sent_messages_total", sum=metrics_pb2.Sum(
        aggregation_temporality=DELTA, is_monotonic=True,
        data_points=[metrics_pb2.NumberDataPoint(attributes=kv(messaging_system="local", error_type=""), as_int=4)]))
    gauge = metrics_pb2.Metric(name="pipeline_backlog_messages", gauge=metrics_pb2.Gauge(
        data_points=[metrics_pb2.NumberDataPoint(as_int=0)]))
    resource = resource_pb2.Resource(attributes=kv(service__name="challenge-latam-api", deployment__environment__name="Prod",
                                                   service__version="1.2.3", host__name="ignored"))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource, scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[hist, counter, gauge])])])


@pytest.fixture(scope="module")
def series():
    with Receiver() as r:
        with grpc.insecure_channel(f"127.0.0.1:{r.port}") as ch:
            metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(export(), timeout=5)
        got = otlp_metrics(r.requests())
    assert got["http_server_request_duration_seconds"].temporality == {"DELTA"}
    assert got["http_server_request_duration_seconds"].count == 3
    return datadog_series(got)


def test_bounds_are_spelled_as_the_agent_spells_them():
    assert [format_bound(b) for b in (0.005, 0.25, 1, 10, 60, 300, float("inf"), float("-inf"), 0)] == \
        ["0.005", "0.25", "1.0", "10.0", "60.0", "300.0", "inf", "-inf", "0"]


def test_names_types_and_tags_follow_the_counters_mode_mapping(series):
    assert {n: s.type for n, s in series.items()} == {
        "http_server_request_duration_seconds.bucket": "count",
        "http_server_request_duration_seconds.count": "count",
        "http_server_request_duration_seconds.sum": "count",
        "http_server_request_duration_seconds.min": "gauge",
        "http_server_request_duration_seconds.max": "gauge",
        "messaging_client_sent_messages_total": "count",
        "pipeline_backlog_messages": "gauge",
    }
    bucket = series["http_server_request_duration_seconds.bucket"].tags
    assert bucket["upper_bound"] == {format_bound(b) for b in BOUNDS} | {"inf"}
    assert "1.0" in bucket["upper_bound"] and "1" not in bucket["upper_bound"]
    assert bucket["lower_bound"] >= {"-inf", "0.25"}
    assert bucket["http_route"] == {"/challenge-latam-api/ingestdata"}        # lowercased
    assert bucket["service"] == {"challenge-latam-api"} and bucket["env"] == {"prod"} and bucket["version"] == {"1.2.3"}
    assert "host.name" not in bucket                                           # not a mapped resource attribute
    assert series["messaging_client_sent_messages_total"].tags["error_type"] == {"n/a"}


def test_distributions_mode_would_have_no_buckets(series):
    with Receiver() as r:
        with grpc.insecure_channel(f"127.0.0.1:{r.port}") as ch:
            metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(export(), timeout=5)
        dist = datadog_series(otlp_metrics(r.requests()), histogram_mode="distributions", send_aggregation_metrics=False)
    assert "http_server_request_duration_seconds.bucket" not in dist and dist["http_server_request_duration_seconds"].type == "distribution"


GOOD = ("sum:http_server_request_duration_seconds.bucket{service:challenge-latam-api AND http_request_method:post AND "
        "upper_bound IN (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25)} by {http_route}.as_count()")


@pytest.mark.parametrize("query", [
    GOOD,
    "sum:http_server_request_duration_seconds.count{service:$service.value AND $env AND http_response_status_code:2*}.as_count()",
    "sum:messaging_client_sent_messages_total{service:$service.value} by {error_type}.as_rate()",
    "max:pipeline_backlog_messages{$env} / max:gcp.pubsub.subscription.num_undelivered_messages{subscription_id:x*}",
])
def test_queries_on_what_exists_pass(series, query):
    check_query(query, series, {"gcp.pubsub.subscription.num_undelivered_messages"}, {"service": "service", "env": "env"})


@pytest.mark.parametrize("query, why", [
    ("sum:challenge_latam_api.http_server_request_duration_seconds.count{*}.as_count()", "not a metric"),   # OpenMetrics naming
    ("sum:messaging_client_sent_messages.count{*}.as_count()", "not a metric"),                              # _total dropped
    ("sum:http_server_request_duration_seconds{*}.as_count()", "not a metric"),                              # distributions naming
    ("sum:http_server_request_duration_seconds.bucket{upper_bound IN (0.005,0.01,0.025,0.05,0.075,0.1,0.25,0.5,0.75,1)}.as_count()", "upper_bound:1"),
    ("sum:http_server_request_duration_seconds.bucket{upper_bound:0.25}.as_count()", "not cumulative"),      # read like `le`
    ("sum:http_server_request_duration_seconds.count{http_route:/challenge-latam-api/ingestData}.as_count()", "no series has"),
    ("sum:http_server_request_duration_seconds.count{deployment.environment.name:prod}.as_count()", "never carries"),
    ("sum:pipeline_backlog_messages{service:$service.value} by {http_route}", "never carries"),
    ("sum:http_server_request_duration_seconds.count{$region}.as_count()", "not defined"),
])
def test_queries_on_what_does_not_exist_fail(series, query, why):
    with pytest.raises(QueryError, match=why):
        check_query(query, series, set(), {"service": "service", "env": "env"})
