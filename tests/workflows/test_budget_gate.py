"""The error-budget gate's Cloud Monitoring source, verdicts and override (scripts/release/budget_gate.py).

No Google Cloud is reachable here, so the Cloud Monitoring source talks over real HTTP to a stand-in
on 127.0.0.1 that answers with response bodies shaped as Google's API reference documents them:
  - services.serviceLevelObjectives.list -> ListServiceLevelObjectivesResponse
    (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/services.serviceLevelObjectives/list,
    ServiceLevelObjective: https://cloud.google.com/monitoring/api/ref_v3/rest/v3/services.serviceLevelObjectives);
  - projects.timeSeries.list -> ListTimeSeriesResponse
    (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list,
    TimeSeries, Point and TypedValue: https://cloud.google.com/monitoring/api/ref_v3/rest/v3/TimeSeries),
    with the SLO selectors of "Retrieving SLO data"
    (https://cloud.google.com/stackdriver/docs/solutions/slo-monitoring/api/timeseries-selectors).
The stand-in records each request, so the tests check what the gate asks as well as how it reads
the answers. The Prometheus source runs against a real Prometheus in budget_gate_prometheus.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from policy import ROOT

spec_ = importlib.util.spec_from_file_location("budget_gate", ROOT / "scripts" / "release" / "budget_gate.py")
gate = importlib.util.module_from_spec(spec_)
sys.modules["budget_gate"] = gate  # dataclasses look their module up there
spec_.loader.exec_module(gate)

PROJECT = "challenge-latam-dev"
SERVICE = "challenge-latam-api-dev"
NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z
SPEC = json.loads((ROOT / "alerts" / "cloud-monitoring" / "challenge-latam-api.json").read_text())


def slo_name(slo_id: str) -> str:
    return f"projects/{PROJECT}/services/{SERVICE}/serviceLevelObjectives/{slo_id}"


def slo_resource(slo_id: str) -> dict:
    """A ServiceLevelObjective as services.serviceLevelObjectives.list returns it."""
    return {
        "name": slo_name(slo_id),
        "displayName": f"challenge-latam-api {slo_id}",
        "serviceLevelIndicator": {"requestBased": {"goodTotalRatio": {
            "totalServiceFilter": 'metric.type="run.googleapis.com/request_count" resource.type="cloud_run_revision"',
            "badServiceFilter": 'metric.type="run.googleapis.com/request_count" metric.label.response_code_class="5xx"'}}},
        "goal": 0.9995,
        "rollingPeriod": "2592000s",
    }


def series(*values_newest_first: float, kind: str = "doubleValue") -> dict:
    """A ListTimeSeriesResponse with one GAUGE DOUBLE series; points newest first, as the API
    lists them, one minute apart."""
    points = []
    for i, v in enumerate(values_newest_first):
        end = gate.rfc3339(NOW - 60 * i)
        points.append({"interval": {"startTime": end, "endTime": end},
                       "value": {kind: str(int(v)) if kind == "int64Value" else v}})
    return {"timeSeries": [{"metric": {"type": "select_slo_budget_fraction"}, "resource": {"type": "global", "labels": {"project_id": PROJECT}},
                            "metricKind": "GAUGE", "valueType": "DOUBLE", "points": points}],
            "unit": "10^2.%"}


class StandIn:
    """Cloud Monitoring on 127.0.0.1: answers from `self.answers[filter or path]`, records requests."""

    def __init__(self):
        self.requests: list[tuple[str, dict, dict]] = []
        self.answers: dict[str, object] = {}
        self.slo_pages = [{"serviceLevelObjectives": [slo_resource(s["slo_id"]) for s in SPEC["slos"][:2]], "nextPageToken": "page-2"},
                          {"serviceLevelObjectives": [slo_resource(s["slo_id"]) for s in SPEC["slos"][2:]]}]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                outer.requests.append((url.path, params, dict(self.headers)))
                if url.path.endswith("/serviceLevelObjectives"):
                    body = outer.slo_pages[1 if params.get("pageToken") == "page-2" else 0]
                else:
                    body = outer.answers.get(params.get("filter", ""), {})
                if isinstance(body, int):
                    self.send_response(body)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"code": %d, "status": "PERMISSION_DENIED"}}' % body)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def healthy(self, budget_left: float = 0.8, burn: float = 0.5) -> None:
        for slo in SPEC["slos"]:
            self.answers[f'select_slo_budget_fraction("{slo_name(slo["slo_id"])}")'] = series(budget_left, budget_left + 0.001)
            for tier in slo["burn_rate_alerts"]:
                for lookback in (tier["lookback_duration"], tier["short_lookback_duration"]):
                    self.answers[f'select_slo_burn_rate("{slo_name(slo["slo_id"])}", "{lookback}")'] = series(burn)

    def source(self, token: str = "ya29.test-token") -> "gate.CloudMonitoringSource":
        return gate.CloudMonitoringSource(PROJECT, SERVICE, SPEC, token, base_url=self.url, now=lambda: NOW)


@pytest.fixture
def cm():
    stand_in = StandIn()
    yield stand_in
    stand_in.server.shutdown()


def test_the_generated_spec_has_the_page_tiers_and_exhausted_condition_the_gate_reads():
    for slo in SPEC["slos"]:
        pages = [t for t in slo["burn_rate_alerts"] if t["severity"] == "page"]
        assert [t["tier"] for t in pages] == ["fast", "medium"], slo["slo_id"]
        assert slo["budget_exhausted_alert"]["filter"] == "select_slo_budget_fraction"
        assert slo["budget_exhausted_alert"]["comparison"] == "COMPARISON_LT"
        assert slo["budget_exhausted_alert"]["threshold_value"] == 0.0


def test_cloud_monitoring_requests_list_the_slos_then_read_budget_and_page_burn_rates(cm):
    cm.healthy()
    states = cm.source().states()
    assert [s.slo for s in states] == [s["slo_id"] for s in SPEC["slos"]]
    paths = [p for p, _, _ in cm.requests]
    # Both pages of the SLO list, then per SLO: the budget and two lookbacks of each page tier.
    assert paths[:2] == [f"/v3/projects/{PROJECT}/services/{SERVICE}/serviceLevelObjectives"] * 2
    assert cm.requests[1][1] == {"pageToken": "page-2"}
    assert all(p == f"/v3/projects/{PROJECT}/timeSeries" for p in paths[2:])
    assert len(paths) == 2 + len(SPEC["slos"]) * (1 + 2 * 2)
    filters = [params["filter"] for _, params, _ in cm.requests[2:7]]
    assert filters == [
        f'select_slo_budget_fraction("{slo_name("availability")}")',
        f'select_slo_burn_rate("{slo_name("availability")}", "3600s")',
        f'select_slo_burn_rate("{slo_name("availability")}", "300s")',
        f'select_slo_burn_rate("{slo_name("availability")}", "21600s")',
        f'select_slo_burn_rate("{slo_name("availability")}", "1800s")',
    ]
    _, params, headers = cm.requests[2]
    assert params["interval.endTime"] == "2026-05-28T20:26:40Z"
    assert params["interval.startTime"] == "2026-05-28T20:16:40Z"
    assert headers["Authorization"] == "Bearer ya29.test-token"


def test_healthy_slos_pass_with_the_budget_left_of_the_newest_point(cm, capsys):
    cm.healthy(budget_left=0.8)
    states = cm.source().states()
    assert all(s.budget_left == 0.8 and not s.exhausted and not s.page_burns for s in states)
    assert gate.check(cm.source(), "", "dev") == gate.PASS
    assert "| availability | 80.0% | no | none |" in capsys.readouterr().out


def test_a_page_tier_fires_only_when_both_lookbacks_are_over_its_threshold(cm):
    cm.healthy()
    name = slo_name("availability")
    cm.answers[f'select_slo_burn_rate("{name}", "3600s")'] = series(20.0)  # long window over 14.4
    assert cm.source().states()[0].page_burns == []  # short window 0.5: the policy's AND holds it
    cm.answers[f'select_slo_burn_rate("{name}", "300s")'] = series(30.0)
    assert cm.source().states()[0].page_burns == ["fast"]
    cm.answers[f'select_slo_burn_rate("{name}", "21600s")'] = series(6.0)  # equal is not over
    cm.answers[f'select_slo_burn_rate("{name}", "1800s")'] = series(7.0)
    assert cm.source().states()[0].page_burns == ["fast"]
    assert gate.check(cm.source(), "", "dev") == gate.REFUSED


def test_a_budget_below_zero_is_exhausted_and_refused(cm, capsys):
    cm.healthy()
    cm.answers[f'select_slo_budget_fraction("{slo_name("query-latency")}")'] = series(-0.05, 0.01)
    states = {s.slo: s for s in cm.source().states()}
    assert states["query-latency"].exhausted and states["query-latency"].budget_left == -0.05
    assert not states["availability"].exhausted
    assert gate.check(cm.source(), "", "dev") == gate.REFUSED
    assert "- query-latency: error budget exhausted (-5.0% left)" in capsys.readouterr().out


def test_the_newest_point_is_read_by_its_end_time_and_int64_values_are_numbers():
    older_first = {"timeSeries": [{"points": [
        {"interval": {"endTime": "2026-05-28T20:20:00Z"}, "value": {"doubleValue": 0.4}},
        {"interval": {"endTime": "2026-05-28T20:25:00Z"}, "value": {"doubleValue": -0.2}}]}]}
    assert gate.newest_value(older_first) == -0.2
    assert gate.newest_value(series(3, kind="int64Value")) == 3.0
    assert gate.newest_value({"unit": "1"}) is None


def test_no_data_a_missing_slo_or_a_denied_call_cannot_judge_and_refuse(cm, monkeypatch, tmp_path):
    cm.healthy()
    cm.answers.pop(f'select_slo_burn_rate("{slo_name("freshness")}", "300s")')
    with pytest.raises(gate.GateError, match="no data for select_slo_burn_rate"):
        cm.source().states()
    assert gate.check(cm.source(), "", "dev") == gate.CANNOT_JUDGE

    cm.healthy()
    cm.slo_pages[1] = {}
    with pytest.raises(gate.GateError, match=r"SLO [a-z-]+ of the spec is not in .*found: \[.availability., .ingest-latency.\]"):
        cm.source().states()

    cm.answers[f'select_slo_budget_fraction("{slo_name("availability")}")'] = 403
    with pytest.raises(gate.GateError, match="HTTP 403"):
        cm.source().states()
    with pytest.raises(gate.GateError, match="no access token"):
        cm.source(token="")

    cm.healthy()
    cm.slo_pages[1] = {"serviceLevelObjectives": [slo_resource(s["slo_id"]) for s in SPEC["slos"][2:]]}
    broken = json.loads(json.dumps(SPEC))
    del broken["slos"][0]["budget_exhausted_alert"]
    source = gate.CloudMonitoringSource(PROJECT, SERVICE, broken, "t", base_url=cm.url, now=lambda: NOW)
    with pytest.raises(gate.GateError, match="lacks 'budget_exhausted_alert'"):
        source.states()


def test_the_command_line_refuses_then_passes_with_a_logged_override(cm, monkeypatch, tmp_path):
    cm.healthy()
    cm.answers[f'select_slo_burn_rate("{slo_name("availability")}", "3600s")'] = series(20.0)
    cm.answers[f'select_slo_burn_rate("{slo_name("availability")}", "300s")'] = series(25.0)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GCP_ACCESS_TOKEN", "ya29.test-token")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTOR", "release-manager")
    monkeypatch.setattr(gate.time, "time", lambda: NOW)
    args = ["check", "--source", "cloud-monitoring", "--project", PROJECT, "--cm-service", SERVICE,
            "--spec", str(ROOT / "alerts" / "cloud-monitoring" / "challenge-latam-api.json"), "--monitoring-url", cm.url]
    assert gate.main(args) == gate.REFUSED
    assert gate.main(args + ["--override", "   "]) == gate.REFUSED  # a blank reason is no override
    assert gate.main(args + ["--override", "INC-7: this release is the fix"]) == gate.PASS
    text = summary.read_text()
    assert text.count("**Refused**") == 2
    assert "**Overridden** by `release-manager` at 2026-05-28T20:26:40Z: INC-7: this release is the fix" in text
    assert "- availability: fast burn-rate page firing" in text


def test_report_writes_the_baseline_and_watch_rolls_back_only_on_a_new_burn(cm, monkeypatch, tmp_path):
    cm.healthy()
    cm.answers[f'select_slo_burn_rate("{slo_name("availability")}", "3600s")'] = series(20.0)
    cm.answers[f'select_slo_burn_rate("{slo_name("availability")}", "300s")'] = series(25.0)
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    assert gate.report(cm.source(), "prod") == gate.PASS
    assert outputs.read_text() == "page_burns=availability/fast\n"

    clock = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    assert gate.watch(cm.source(), 3, 60, {"availability/fast"}, "prod", sleep=sleep, clock=lambda: clock[0]) == gate.PASS
    assert sleeps == [60, 60, 60]  # four polls over three minutes
    cm.answers[f'select_slo_burn_rate("{slo_name("ingest-latency")}", "21600s")'] = series(9.0)
    cm.answers[f'select_slo_burn_rate("{slo_name("ingest-latency")}", "1800s")'] = series(9.0)
    assert gate.watch(cm.source(), 3, 60, {"availability/fast"}, "prod", sleep=sleep, clock=lambda: clock[0]) == gate.REFUSED
