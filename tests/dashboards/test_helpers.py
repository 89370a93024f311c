"""Unit tests of the dashboard checker's parsers: if they miss a name, the metric check is blind."""

import pytest

from check_dashboards import CheckError, datadog_metrics, datadog_to_prometheus, promql_metrics, render_templatefile

EXPOSITION = {
    "http_server_request_duration_seconds": "histogram",
    "http_server_request_duration_seconds_bucket": "histogram",
    "messaging_client_sent_messages_total": "counter",
    "pipeline_backlog_messages": "gauge",
}


def test_promql_metrics_finds_names_and_skips_functions_labels_and_keywords():
    expr = ('sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{service=~"$service",le="0.25"}[5m])) '
            'or on (service) label_replace(vector(14.4), "threshold", "x", "", "") / ignoring(slo) slo:sli_error:ratio_rate5m')
    assert promql_metrics(expr) == {"http_server_request_duration_seconds_bucket", "slo:sli_error:ratio_rate5m"}


def test_promql_metrics_finds_a_bare_name_and_one_inside_a_string_is_not_a_name():
    assert promql_metrics('up{job="process_cpu_seconds_total"} > 0') == {"up"}


def test_datadog_metrics_reads_each_aggregation_prefix():
    q = "sum:a.b.count{x:y} by {z}.as_count() / max:gcp.run.request_latencies.p99{service_name:s*}"
    assert datadog_metrics(q) == {"a.b.count", "gcp.run.request_latencies.p99"}


@pytest.mark.parametrize("name, prom", [
    ("challenge_latam_api.http_server_request_duration_seconds.bucket", "http_server_request_duration_seconds_bucket"),
    ("challenge_latam_api.http_server_request_duration_seconds.count", "http_server_request_duration_seconds_count"),
    ("challenge_latam_api.messaging_client_sent_messages.count", "messaging_client_sent_messages_total"),
    ("challenge_latam_api.pipeline_backlog_messages", "pipeline_backlog_messages"),
    ("challenge_latam_api.http_server_request_duration_seconds", "<unmapped http_server_request_duration_seconds>"),
    ("challenge_latam_api.pipeline_backlog_messages.count", "<unmapped pipeline_backlog_messages.count>"),
    ("gcp.run.request_count", None),
])
def test_datadog_names_map_back_to_the_exposition(name, prom):
    assert datadog_to_prometheus(name, EXPOSITION) == prom


def test_templatefile_fills_variables_and_unescapes_and_refuses_unknown_ones():
    assert render_templatefile('"projects/${project_id}" "$${labels.x}"', "t", {"project_id": "p"}) == '"projects/p" "${labels.x}"'
    with pytest.raises(CheckError):
        render_templatefile('"${labels.x}"', "t", {"project_id": "p"})
