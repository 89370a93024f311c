#!/usr/bin/env python3
"""Fails on an `le` matcher that selects a whole histogram bound in one spelling only.

Prometheus 2 stores a classic histogram's `le` as the exporter wrote it (`1`, `60`); Prometheus 3
normalises it to float form on ingestion (`1.0`, `60.0`). So `le="1"` selects nothing on
Prometheus 3 and `le="1.0"` nothing on Prometheus 2: a latency or freshness SLI built on either
silently reads as empty (a panel goes blank, a burn-rate alert can never fire). The generators
write `le=~"1|1\\.0"` for a whole bound (tools/slo/src/prometheus.rs `le_matcher`, which also
writes every matcher dashboards/generate.py uses into dashboards/slo-model.json); a bound such as 0.25 is spelt alike by both and may stay
exact. This check reads every PromQL expression of the files it is given and refuses:

  - an exact matcher (`=` or `!=`) on `le` whose value is a whole number (`1`, `60`, `1.0`);
  - a regex matcher (`=~` or `!~`) on `le` that matches one spelling of a whole number and not
    the other (`le=~"1|60"`, `le=~"1\\.0"`), tried on every whole number written in the regex
    and every whole bucket boundary of the SLO model (dashboards/slo-model.json, from slo/*.yaml).

Where PromQL lives, per file kind:
  - Grafana dashboard JSON: every `expr` (panel targets and annotations);
  - Cloud Monitoring dashboard JSON (and the .tftpl template): every `prometheusQuery`;
  - Prometheus rules YAML (`*.rules.yml`): every rule's `expr`;
  - promtool test YAML (`*.test.yml`): every `promql_expr_test` `expr`. The `input_series`
    `series` strings are not matchers but the stored samples' own label sets, so they are left
    alone (a test may well feed `le="1"`, as Prometheus 2 stores it);
  - Datadog dashboard JSON holds no PromQL (queries select `upper_bound` tags in the form of
    the OTLP mapping, which the dashboard check verifies against the real export): such a file
    is listed as having no PromQL, not silently passed as checked.

Why not a PromQL parser: none is installed in .tools/venv (scripts/deps/*.pip has no
promql-parser), and the Debian Prometheus 2.42 offers no parse/AST endpoint. Only label
matchers matter here, and they have a small closed grammar: `{` (label op string `,`?)* `}`
with the label a name or (Prometheus 3) a quoted string, op one of = != =~ !~, and the string
in double quotes, single quotes or backticks. `scan()` below is a lexer for exactly that: it
walks the expression skipping string literals and `#` comments, so a brace or an `le=` inside
a string (a label_replace argument, a Grafana legend) is never mistaken for a matcher, and it
fails loudly on a selector it cannot read rather than skipping it. The real Prometheus of
scripts/checks/30-dashboards.sh still runs every dashboard expression, and promtool checks
every rule, so a syntax error is caught there.

    python tests/dashboards/le_matchers.py PATH...            # files or directories
    python tests/dashboards/le_matchers.py --expect-rejected N PATH  # a known-bad fixture

Exit 0 when every matcher is good (prints the counts), 1 on a bad matcher or an unreadable
file; with --expect-rejected N, 0 only when exactly N le matchers are refused and nothing else
(so the fixture proves the check fails on the bad matcher and passes its good neighbours).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ParseError(Exception):
    pass


@dataclass
class Matcher:
    label: str
    op: str
    value: str


# --- The lexer ---------------------------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")  # longest first
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


def _string(expr: str, i: int) -> tuple[str, int]:
    """Reads the string literal at expr[i] (as Go's strconv.Unquote, which PromQL uses);
    returns (its value, the index after it)."""
    quote = expr[i]
    j, out = i + 1, []
    if quote == "`":
        end = expr.find("`", j)
        if end < 0:
            raise ParseError(f"unterminated raw string at {i}")
        return expr[j:end], end + 1
    while j < len(expr):
        c = expr[j]
        if c == quote:
            return "".join(out), j + 1
        if c == "\n":
            raise ParseError(f"newline in a string at {j}")
        if c == "\\":
            j += 1
            if j >= len(expr):
                break
            e = expr[j]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                j += 1
            elif e in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[e]
                digits = expr[j + 1:j + 1 + width]
                if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise ParseError(f"bad \\{e} escape at {j}")
                out.append(chr(int(digits, 16)))
                j += 1 + width
            elif e in "01234567":
                digits = expr[j:j + 3]
                if len(digits) != 3 or not all(d in "01234567" for d in digits):
                    raise ParseError(f"bad octal escape at {j}")
                out.append(chr(int(digits, 8)))
                j += 3
            else:
                # Go refuses an unknown escape such as "\." (write "\\." for a regex's \.).
                raise ParseError(f"unknown escape \\{e} at {j}")
            continue
        out.append(c)
        j += 1
    raise ParseError(f"unterminated string at {i}")


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i] in " \t\r\n":
        i += 1
    return i


def _selector(expr: str, i: int) -> tuple[list[Matcher], int]:
    """Reads the matchers of the `{...}` whose `{` is at expr[i]."""
    out: list[Matcher] = []
    i = _skip_space(expr, i + 1)
    while True:
        if i >= len(expr):
            raise ParseError("unterminated label matchers")
        if expr[i] == "}":
            return out, i + 1
        quoted = expr[i] in "\"'`"
        if quoted:
            label, i = _string(expr, i)
        else:
            m = _NAME.match(expr, i)
            if not m:
                raise ParseError(f"expected a label name at {i}: {expr[i:i + 20]!r}")
            label, i = m.group(0), m.end()
        i = _skip_space(expr, i)
        op = next((o for o in _OPS if expr.startswith(o, i)), None)
        if op is None:
            if quoted and expr[i:i + 1] in (",", "}"):  # Prometheus 3: a quoted metric name alone in the braces
                out.append(Matcher("__name__", "=", label))
            else:
                raise ParseError(f"expected a matcher operator after {label!r} at {i}: {expr[i:i + 20]!r}")
        else:
            i = _skip_space(expr, i + len(op))
            if i >= len(expr) or expr[i] not in "\"'`":
                raise ParseError(f"expected a string after {label}{op} at {i}")
            value, i = _string(expr, i)
            out.append(Matcher(label, op, value))
        i = _skip_space(expr, i)
        if i < len(expr) and expr[i] == ",":
            i = _skip_space(expr, i + 1)
        elif i < len(expr) and expr[i] != "}":
            raise ParseError(f"expected ',' or '}}' at {i}: {expr[i:i + 20]!r}")


def scan(expr: str) -> list[Matcher]:
    """Every label matcher of a PromQL expression."""
    out: list[Matcher] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            _, i = _string(expr, i)
        elif c == "#":
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end + 1
        elif c == "{":
            found, i = _selector(expr, i)
            out += found
        elif c == "}":
            raise ParseError(f"'}}' without '{{' at {i}")
        else:
            i += 1
    return out


# --- The rule --------------------------------------------------------------------------------------


def whole_bounds(root: str = ROOT) -> set[int]:
    """The whole bucket boundaries of every histogram an SLI reads, as tools/slo writes them into
    dashboards/slo-model.json (tools/slo is the only reader of slo/*.yaml)."""
    with open(os.path.join(root, "dashboards", "slo-model.json"), encoding="utf-8") as f:
        model = json.load(f)
    return {int(b) for svc in model["services"] for bounds in svc["buckets"].values() for b in bounds if float(b).is_integer()}


def _whole(value: str) -> bool:
    try:
        f = float(value)
    except ValueError:
        return False
    return f == f and f not in (float("inf"), float("-inf")) and f.is_integer()


def problem(m: Matcher, bounds: set[int]) -> str | None:
    """Why an `le` matcher does not select a whole bound in both spellings, or None."""
    if m.label != "le":
        return None
    if m.op in ("=", "!="):
        if _whole(m.value):
            n = int(float(m.value))
            return (f'le{m.op}"{m.value}" is exact on a whole bound: Prometheus 2 stores "{n}", Prometheus 3 "{n}.0"; '
                    f'write le{"=~" if m.op == "=" else "!~"}"{n}|{n}\\\\.0"')
        return None
    # Prometheus anchors the regex and runs it with RE2; Python's re agrees with RE2 on what such
    # matchers use (alternation, classes, groups, escapes), and a regex it cannot compile fails.
    try:
        rx = re.compile(m.value)
    except re.error as e:
        return f"le{m.op}{m.value!r}: cannot read the regex ({e})"
    for n in sorted(bounds | {int(d) for d in re.findall(r"\d+", m.value)}):
        plain, dotted = bool(rx.fullmatch(str(n))), bool(rx.fullmatch(f"{n}.0"))
        if plain != dotted:
            return (f'le{m.op}"{m.value}" matches "{n if plain else f"{n}.0"}" but not "{f"{n}.0" if plain else n}": '
                    f"one Prometheus version stores the other spelling")
    return None


# --- Files -------------------------------------------------------------------------------------------


def _strings_under(doc, key: str) -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == key and isinstance(v, str):
                out.append(v)
            else:
                out += _strings_under(v, key)
    elif isinstance(doc, list):
        for v in doc:
            out += _strings_under(v, key)
    return out


def expressions(path: str) -> tuple[str, list[str]]:
    """(kind, PromQL expressions) of one file."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if name.endswith((".json", ".json.tftpl")):
        doc = json.loads(text)  # a .tftpl's ${...} sit inside JSON strings
        if "mosaicLayout" in doc or "gridLayout" in doc:
            return "cloud-monitoring", _strings_under(doc, "prometheusQuery")
        if "panels" in doc:
            return "grafana", _strings_under(doc, "expr")
        if "widgets" in doc and "layout_type" in doc:
            return "datadog", []
        raise ParseError(f"{path}: neither a Grafana, a Cloud Monitoring nor a Datadog dashboard")
    if name.endswith((".yml", ".yaml")):
        doc = yaml.safe_load(text) or {}
        if "groups" in doc:
            return "rules", [r["expr"] for g in doc["groups"] for r in g.get("rules", []) if "expr" in r]
        if "tests" in doc:
            return "promtool tests", [t["expr"] for case in doc["tests"] for t in case.get("promql_expr_test") or []]
        raise ParseError(f"{path}: neither a rules file (groups) nor a promtool test file (tests)")
    raise ParseError(f"{path}: not a file kind this check reads")


def _rel(path: str) -> str:
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def _short(expr: str) -> str:
    return " ".join(expr.split())[:160]


def files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            for ext in ("*.json", "*.json.tftpl", "*.rules.yml", "*.test.yml"):
                out += glob.glob(os.path.join(p, "**", ext), recursive=True)
        else:
            out.append(p)
    return sorted(set(out))


@dataclass
class Report:
    files: dict[str, int] = field(default_factory=dict)  # kind -> files
    no_promql: list[str] = field(default_factory=list)
    exprs: int = 0
    matchers: int = 0
    le_regex: int = 0
    le_exact: int = 0
    problems: list[str] = field(default_factory=list)  # every reason to fail
    bad_le: int = 0  # of which, le matchers that select one spelling only


def check(paths: list[str], bounds: set[int] | None = None) -> Report:
    bounds = whole_bounds() if bounds is None else bounds
    r = Report()
    for path in files(paths):
        rel = _rel(path)
        try:
            kind, exprs = expressions(path)
        except (ParseError, ValueError, yaml.YAMLError, KeyError, TypeError) as e:
            r.problems.append(f"{rel}: cannot read: {e}")
            continue
        r.files[kind] = r.files.get(kind, 0) + 1
        if not exprs:
            if kind in ("grafana", "rules"):
                # Every Grafana panel and every rule is PromQL: finding none means this reader
                # no longer finds them, so fail rather than pass blind. A Cloud Monitoring
                # dashboard may hold Monitoring filters only, a promtool test file alert tests
                # only, and a Datadog dashboard never holds PromQL.
                r.problems.append(f"{rel}: a {kind} file in which no PromQL expression was found")
            r.no_promql.append(rel)
            continue
        for expr in exprs:
            r.exprs += 1
            try:
                ms = scan(expr)
            except ParseError as e:
                r.problems.append(f"{rel}: cannot read the label matchers ({e}) of: {_short(expr)}")
                continue
            r.matchers += len(ms)
            for m in ms:
                if m.label != "le":
                    continue
                if m.op in ("=~", "!~"):
                    r.le_regex += 1
                else:
                    r.le_exact += 1
                why = problem(m, bounds)
                if why:
                    r.bad_le += 1
                    r.problems.append(f"{rel}: {why}; in: {_short(expr)}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--expect-rejected", type=int, metavar="N",
                    help="the paths are known-bad: fail unless exactly N le matchers are refused, and nothing else")
    ap.add_argument("--prefix", default="le-matchers", help="the line prefix (the calling check's name)")
    args = ap.parse_args()
    r = check(args.paths)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(r.files.items()))
    counts = (f"{sum(r.files.values())} files ({kinds}), {r.exprs} PromQL expressions, {r.matchers} label matchers, "
              f"{r.le_regex + r.le_exact} on le ({r.le_regex} regex, {r.le_exact} exact)")
    if args.expect_rejected is not None:
        if r.bad_le != args.expect_rejected or len(r.problems) != r.bad_le:
            print(f"{args.prefix}: FAIL: known-bad {' '.join(args.paths)}: want exactly {args.expect_rejected} le matcher(s) "
                  f"refused, got {r.bad_le} ({counts})" + "".join(f"\n  {p}" for p in r.problems), file=sys.stderr)
            return 1
        print(f"{args.prefix}: le check refuses {' '.join(_rel(p) for p in args.paths)} as it should: "
              f"{r.problems[0].split(': ', 1)[-1][:120]}")
        return 0
    if r.problems:
        print(f"{args.prefix}: FAIL: {r.bad_le} le matcher(s) select a whole bound in one spelling only "
              f"(Prometheus 2 stores \"1\", Prometheus 3 \"1.0\"), {len(r.problems) - r.bad_le} file(s) or "
              f"expression(s) unreadable:\n  " + "\n  ".join(r.problems), file=sys.stderr)
        return 1
    extra = f"; {len(r.no_promql)} file(s) without PromQL" if r.no_promql else ""
    print(f"{args.prefix}: le matchers: {counts}; every whole bound matched in both spellings, none exact on one{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
