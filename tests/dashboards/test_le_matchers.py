"""Unit tests of the le-matcher check (le_matchers.py): its lexer must find every matcher and
only matchers, and its rule must refuse one spelling of a whole bound and nothing else."""

import json

import pytest

from le_matchers import Matcher, ParseError, check, expressions, problem, scan

BOUNDS = {1, 2, 5, 10, 30, 60, 120, 300}


def le(op: str, value: str) -> Matcher:
    return Matcher("le", op, value)


def test_scan_reads_each_matcher_with_its_unquoted_value():
    expr = r'sum(rate(h_bucket{service=~"$service", le=~"1|1\\.0",route!="/a"}[5m])) / h_count{ le = "0.25" }'
    assert [(m.label, m.op, m.value) for m in scan(expr)] == [
        ("service", "=~", "$service"), ("le", "=~", r"1|1\.0"), ("route", "!=", "/a"), ("le", "=", "0.25")]


def test_scan_skips_braces_and_le_inside_strings_and_comments():
    expr = ('label_replace(up{job="a{b}"}, "x", "le=\\"1\\"", "y", "{.*}")  # le="60" in a comment\n'
            "+ on() vector(1)")
    assert [(m.label, m.value) for m in scan(expr)] == [("job", "a{b}")]


def test_scan_reads_single_quoted_backtick_and_quoted_label_names():
    ms = scan("a{le='1', `x`!~`\\d+`} + {\"utf8.name\", \"le\"=\"60\"}")
    assert [(m.label, m.op, m.value) for m in ms] == [
        ("le", "=", "1"), ("x", "!~", "\\d+"), ("__name__", "=", "utf8.name"), ("le", "=", "60")]


@pytest.mark.parametrize("expr", ['a{le="1"', 'a{le}', 'a{le="1\\.0"}', 'a{le="1"}}', 'a{le 1}'])
def test_scan_refuses_what_it_cannot_read(expr):
    with pytest.raises(ParseError):
        scan(expr)


@pytest.mark.parametrize("m", [le("=", "1"), le("=", "60"), le("=", "60.0"), le("!=", "1"), le("=", "1e0"),
                               le("=~", "1"), le("=~", "1|60"), le("=~", r"1\.0"), le("=~", "0.25|1"),
                               le("!~", "60"), le("=~", "[0-9]+")])
def test_one_spelling_of_a_whole_bound_is_refused(m):
    assert problem(m, BOUNDS)


@pytest.mark.parametrize("m", [le("=~", r"1|1\.0"), le("=~", r"60|60\.0"), le("=~", r"(1|60)(\.0)?"),
                               le("=", "0.25"), le("=", "+Inf"), le("!=", "+Inf"), le("=~", ".+"),
                               le("=~", "0.25|0.5"), Matcher("http_route", "=", "1")])
def test_both_spellings_or_a_bound_spelt_alike_pass(m):
    assert problem(m, BOUNDS) is None


def test_promtool_tests_read_expressions_not_input_series(tmp_path):
    f = tmp_path / "x.test.yml"
    f.write_text("tests:\n  - interval: 1m\n    input_series:\n      - series: 'h_bucket{le=\"1\"}'\n"
                 "        values: '0+1x10'\n    promql_expr_test:\n      - expr: 'h_bucket{le=~\"1|1\\\\.0\"}'\n"
                 "        eval_time: 5m\n")
    assert expressions(str(f)) == ("promtool tests", ['h_bucket{le=~"1|1\\\\.0"}'])
    r = check([str(f)], BOUNDS)
    assert (r.exprs, r.le_regex, r.problems) == (1, 1, [])


def test_a_grafana_dashboard_without_expressions_fails_and_a_datadog_one_is_listed(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"panels": [{"type": "row"}]}))
    d = tmp_path / "d.json"
    d.write_text(json.dumps({"widgets": [], "layout_type": "ordered"}))
    r = check([str(g), str(d)], BOUNDS)
    assert len(r.problems) == 1 and "no PromQL expression" in r.problems[0]
    assert len(r.no_promql) == 2 and r.files == {"grafana": 1, "datadog": 1}
