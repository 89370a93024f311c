"""Unit tests of the dashboard checker's parsers: if they miss a name, the metric check is blind."""

import pytest

from check_dashboards import CheckError, datadog_metrics, promql_metrics, render_templatefile


def test_promql_metrics_finds_names_and_skips_functions_labels_and_keywords():
    expr = ('sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{service=~"$service",le="0.25"}[5m])) '
            'or on (service) label_replace(vector(14.4), "threshold", "x", "", "") / ignoring(slo) slo:sli_error:ratio_rate5m')
    assert promql_metrics(expr) == {"http_server_request_duration_seconds_bucket", "slo:sli_error:ratio_rate5m"}


def test_promql_metrics_finds_a_bare_name_and_one_inside_a_string_is_not_a_name():
    assert promql_metrics('up{job="process_cpu_seconds_total"} > 0') == {"up"}


def test_datadog_metrics_reads_each_aggregation_prefix():
    q = "sum:a.b.count{x:y} by {z}.as_count() / max:gcp.run.request_latencies.p99{service_name:s*}"
    assert datadog_metrics(q) == {"a.b.count", "gcp.run.request_latencies.p99"}


def test_templatefile_fills_variables_and_unescapes_and_refuses_unknown_ones():
    assert render_templatefile('"projects/${project_id}" "$${labels.x}"', "t", {"project_id": "p"}) == '"projects/p" "${labels.x}"'
    with pytest.raises(CheckError):
        render_templatefile('"${labels.x}"', "t", {"project_id": "p"})
