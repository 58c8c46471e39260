"""The Grafana dashboard asks only for what the exporter really serves: every PromQL expression in it is read for
metric and label names, and each is checked against a scrape rendered by the exporter from fixture inputs (names
and labels collected from that output, no list kept here) plus the labels the scrape config adds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgekit.metrics.scrape import ScrapeTarget, targets_json
from tests.test_exporter import fixture_scrape, strict_parse

DASHBOARD = Path(__file__).resolve().parents[1] / "edgekit/dashboards/edgekit-grafana.json"
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
PROMETHEUS_LABELS = {"instance", "job"}          # every scraped series gets these from Prometheus itself


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses: strings, ranges and Grafana variables dropped, label
    names read from matchers and grouping clauses, identifiers followed by '(' being functions."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    matcher = r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)"
    labels = {name for body in re.findall(r"\{([^}]*)\}", e) for name in re.findall(matcher, body)}
    e = re.sub(r"\{[^}]*\}", " ", e)
    labels |= {name.strip() for body in re.findall(GROUPING, e) for name in body.split(",") if name.strip()}
    e = re.sub(GROUPING, " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if m.start() and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue                                 # the exponent of a number (1e3)
        if e[m.end():].lstrip().startswith("(") or m.group(0) in KEYWORDS:
            continue
        names.add(m.group(0))
    return names, labels


def test_the_promql_reader_finds_names_and_labels():
    assert promql_names('sum by (target, model) (rate(a_total{target=~"$target", x!="y"}[$__rate_interval])) '
                        '/ on(c) (b:c > 1e3)') == ({"a_total", "b:c"}, {"target", "model", "x", "c"})
    assert promql_names('time() - edgekit_x{a="1"}') == ({"edgekit_x"}, {"a"})


def expressions(node) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets' `expr`, in rows and nested panels too."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            found.append(node["expr"])
        for value in node.values():
            found += expressions(value)
    elif isinstance(node, list):
        for value in node:
            found += expressions(value)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[set[str], set[str]]:
    """The metric names and label names the exporter serves for fixture inputs, plus the scrape config's labels."""
    fams = strict_parse(fixture_scrape(tmp_path_factory.mktemp("device")))
    names = {name for fam in fams.values() for name, _, _ in fam["samples"]}
    labels = {label for fam in fams.values() for _, lab, _ in fam["samples"] for label in lab}
    group = json.loads(targets_json([ScrapeTarget("orin", "10.0.0.5", board="b", model="m")]))[0]
    return names, labels | set(group["labels"]) | PROMETHEUS_LABELS


def test_every_metric_and_label_in_the_dashboard_is_served(dashboard, served):
    names, labels = served
    exprs = expressions(dashboard["panels"])
    assert len(exprs) >= 15
    used: set[str] = set()
    for expr in exprs:
        metrics, expr_labels = promql_names(expr)
        assert metrics, f"no metric in {expr!r}"
        assert metrics <= names, f"{expr!r} asks for {sorted(metrics - names)}, which the exporter does not serve"
        assert expr_labels <= labels, f"{expr!r} uses labels {sorted(expr_labels - labels)} that no series has"
        used |= metrics
    for wanted in ("llamacpp:tokens_predicted_total", "llamacpp:prompt_seconds_total", "llamacpp:requests_deferred",
                   "edgekit_gpu_load_ratio", "edgekit_board_power_watts", "edgekit_temperature_celsius"):
        assert wanted in used, f"the dashboard has no panel for {wanted}"


def test_legends_name_served_labels(dashboard, served):
    _, labels = served
    legends = [t["legendFormat"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("legendFormat")]
    assert legends and {name for legend in legends for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)} <= labels


def test_the_board_variable_comes_from_a_served_series_and_every_query_uses_it(dashboard, served):
    names, labels = served
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variables["target"]["query"]["query"]).groups()
    assert metric in names and label in labels
    for expr in expressions(dashboard["panels"]):
        assert 'target=~"$target"' in expr, f"{expr!r} is not filtered by the board variable"


def test_panels_fit_the_grid_and_have_unique_ids(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "edgekit-fleet"
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        assert p["type"] == "row" or p["datasource"]["uid"] == "${datasource}"
