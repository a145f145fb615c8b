"""A platform's monitoring configuration as the gate uses it: rules, Alertmanager, dashboard.

The user's files are read as they are. What the gate changes to run them in seconds instead of
minutes (`for:` durations, rate windows, Alertmanager group timings, notification URLs) is done
here and listed, so reports can say exactly what was shortened or rewritten.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import promql_parser
import yaml

from suite.errors import PlatformError
from suite.platform import Platform
from suite.timings import GROUP_WAIT_S

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# A range selector `[5m]` (not a subquery `[5m:1m]`): the only PromQL text the gate rewrites.
_RANGE = re.compile(r"\[(\d+(?:ms|s|m|h|d|w|y))\]")


def seconds(duration: str) -> float:
    match = _DURATION.match(str(duration).strip())
    if not match:
        raise PlatformError(f"{duration!r} is not a Prometheus duration like 30s or 5m")
    return int(match.group(1)) * _SECONDS[match.group(2)]


@dataclass
class RuleSet:
    """Rule groups of one environment, with where they came from."""

    source: Path
    groups: List[dict]

    @property
    def rules(self) -> List[dict]:
        return [rule for group in self.groups for rule in group.get("rules", [])]

    @property
    def alerts(self) -> List[dict]:
        return [rule for rule in self.rules if "alert" in rule]

    def to_yaml(self) -> str:
        return yaml.safe_dump({"groups": self.groups}, sort_keys=False)


def load_rules(path: Path) -> RuleSet:
    """A plain Prometheus rule file or a PrometheusRule custom resource."""
    try:
        body = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise PlatformError(f"rule file {path} is not valid YAML: {exc}") from exc
    if isinstance(body, dict) and body.get("kind") == "PrometheusRule":
        groups = (body.get("spec") or {}).get("groups")
    elif isinstance(body, dict):
        groups = body.get("groups")
    else:
        groups = None
    if not isinstance(groups, list):
        raise PlatformError(
            f"rule file {path} has no rule groups: expected a Prometheus rule file "
            f"(`groups:`) or a PrometheusRule resource (`spec.groups`)."
        )
    return RuleSet(Path(path), groups)


def rules_for(platform: Platform, env: str) -> Optional[RuleSet]:
    monitoring = platform.spec.monitoring
    if monitoring is None or monitoring.rules is None:
        return None
    rules = monitoring.rules
    if isinstance(rules, dict):
        if env not in rules:
            raise PlatformError(f"monitoring.rules names files for {sorted(rules)} but not for environment {env!r}")
        return load_rules(platform.resolve(rules[env]))
    return load_rules(platform.resolve(rules))


def shorten_rules(rules: RuleSet, max_for: float, max_range: str) -> Tuple[RuleSet, List[str]]:
    """A copy whose `for:` and range windows are at most the given values, and what changed."""
    changes: List[str] = []
    groups = copy.deepcopy(rules.groups)
    limit = seconds(max_range)
    for group in groups:
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            if "for" in rule and seconds(rule["for"]) > max_for:
                changes.append(f"{name}: for {rule['for']} -> {max_for:g}s")
                rule["for"] = f"{max_for:g}s"
            expr = str(rule.get("expr", ""))
            shorter = _RANGE.sub(lambda m: f"[{max_range}]" if seconds(m.group(1)) > limit else m.group(0), expr)
            if shorter != expr:
                windows = sorted(set(_RANGE.findall(expr)))
                changes.append(f"{name}: range {', '.join(windows)} -> {max_range}")
                rule["expr"] = shorter
    return RuleSet(rules.source, groups), changes


# -- PromQL ---------------------------------------------------------------------------------


def metric_names(expr: str) -> Set[str]:
    """Metric names an expression selects, from the real PromQL parser."""
    try:
        tree = promql_parser.parse(expr)
    except Exception as exc:  # the parser raises its own ValueError subclasses
        raise PlatformError(f"not valid PromQL: {expr!r}: {exc}") from exc
    return set(_names(tree))


def _names(node) -> Iterator[str]:
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        for matcher in node.matchers.matchers:  # {__name__="x"} selects by name too
            if matcher.name == "__name__":
                yield matcher.value
        return
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from _names(child)
    for child in getattr(node, "args", None) or []:
        yield from _names(child)


def fires_when_target_down(expr: str) -> bool:
    """Whether an alert expression detects a target that is down: `up... == 0`, `up... < 1` or
    `absent(up...)`, anywhere in it. Merely reading `up` (say, in a join) is not enough."""
    try:
        tree = promql_parser.parse(expr)
    except Exception as exc:
        raise PlatformError(f"not valid PromQL: {expr!r}: {exc}") from exc
    return _detects_down(tree)


def _detects_down(node) -> bool:
    if isinstance(node, promql_parser.Call) and node.func.name == "absent":
        return any("up" in set(_names(arg)) for arg in node.args)
    if isinstance(node, promql_parser.BinaryExpr):
        op = str(node.op)
        for selector, number in ((node.lhs, node.rhs), (node.rhs, node.lhs)):
            value = getattr(number, "val", None) if isinstance(number, promql_parser.NumberLiteral) else None
            if (
                value is not None
                and "up" in set(_names(selector))
                and ((op == "==" and value == 0) or (op == "<" and value <= 1) or (op == "<=" and value < 1))
            ):
                return True
    children = [getattr(node, a, None) for a in ("lhs", "rhs", "expr", "param")]
    children += list(getattr(node, "args", None) or [])
    return any(_detects_down(c) for c in children if c is not None)


# -- dashboard --------------------------------------------------------------------------------


@dataclass
class PanelQuery:
    panel: str
    expr: str


def load_dashboard(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise PlatformError(f"dashboard {path} is not valid JSON: {exc}") from exc


def panel_queries(dashboard: dict) -> List[PanelQuery]:
    queries = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # rows hold panels
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append(PanelQuery(panel.get("title", f"panel {panel.get('id')}"), target["expr"]))
    return queries


def resolve_variables(expr: str, values: Dict[str, str]) -> str:
    """Grafana template variables ($x, ${x}, [[x]], $__rate_interval...) replaced by values."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise PlatformError(
                f"dashboard query uses variable ${name}, which the gate cannot resolve "
                f"(known: {sorted(values)}): {expr}"
            )
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)


# -- Alertmanager ------------------------------------------------------------------------------

_URL_KEYS = {
    "slack_configs": "api_url",
    "webhook_configs": "url",
    "discord_configs": "webhook_url",
    "msteams_configs": "webhook_url",
    "telegram_configs": "api_url",
    "pagerduty_configs": "url",
    "opsgenie_configs": "api_url",
    "victorops_configs": "api_url",
    "pushover_configs": "url",
}
# repeat_interval stays as the user set it: shortened, every firing group would re-notify each second.
_TIMINGS = ("group_wait", "group_interval")


@dataclass
class AlertmanagerConfig:
    source: Path
    body: dict
    changes: List[str] = field(default_factory=list)

    @property
    def receivers(self) -> List[str]:
        return [r.get("name") for r in self.body.get("receivers", [])]

    def notifying_receivers(self) -> List[str]:
        return [r.get("name") for r in self.body.get("receivers", []) if any(k in r for k in _URL_KEYS)]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.body, sort_keys=False)


def load_alertmanager(path: Path) -> AlertmanagerConfig:
    try:
        body = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise PlatformError(f"Alertmanager config {path} is not valid YAML: {exc}") from exc
    if not isinstance(body, dict) or "route" not in body:
        raise PlatformError(f"Alertmanager config {path} has no `route`: it is not an Alertmanager configuration")
    return AlertmanagerConfig(Path(path), body)


def alertmanager_for(platform: Platform, env: str) -> Optional[AlertmanagerConfig]:
    monitoring = platform.spec.monitoring
    if monitoring is None or not monitoring.alertmanager:
        return None
    if env not in monitoring.alertmanager:
        raise PlatformError(
            f"monitoring.alertmanager names {sorted(monitoring.alertmanager)} but not environment {env!r}"
        )
    return load_alertmanager(platform.resolve(monitoring.alertmanager[env]))


def for_the_gate(
    config: AlertmanagerConfig, capture_url: str, timing: str = f"{GROUP_WAIT_S:g}s"
) -> AlertmanagerConfig:
    """The same routing with notification URLs sent to the capture receiver (keyed by receiver
    name) and group timings shortened. Routes, matchers and receivers are untouched."""
    body = copy.deepcopy(config.body)
    changes = []
    for receiver in body.get("receivers", []):
        for key, url_key in _URL_KEYS.items():
            for target in receiver.get(key, []) or []:
                target[url_key] = f"{capture_url}/{receiver['name']}"
                target.pop(f"{url_key}_file", None)
                changes.append(f"receiver {receiver['name']}: {key}.{url_key} -> capture receiver")
    routes = [body["route"]]
    while routes:
        route = routes.pop()
        for key in _TIMINGS:
            if key in route and seconds(route[key]) > seconds(timing):
                changes.append(f"route {route.get('receiver', '(inherited)')}: {key} {route[key]} -> {timing}")
                route[key] = timing
        routes.extend(route.get("routes", []) or [])
    root = body["route"]
    for key in _TIMINGS:  # defaults apply when the file does not set them (group_wait 30s...)
        if key not in root:
            root[key] = timing
            changes.append(f"route root: {key} (default) -> {timing}")
    body.setdefault("global", {})["resolve_timeout"] = "5m"
    return AlertmanagerConfig(config.source, body, changes)


def keeps_label(expr: str, label: str) -> bool:
    """Whether an expression's result series still carry `label` (from the parsed PromQL).

    Aggregations keep only their `by` labels (or drop their `without` labels); a binary
    operation between vectors takes the left side's labels; numbers carry none.
    """
    return _keeps(promql_parser.parse(expr), label)


def _keeps(node, label: str) -> bool:
    if isinstance(node, promql_parser.VectorSelector):
        return True
    if isinstance(node, promql_parser.MatrixSelector):
        return True
    if isinstance(node, promql_parser.AggregateExpr):
        modifier = node.modifier
        if modifier is None:
            return False
        by = modifier.type == promql_parser.AggModifierType.By
        return (label in modifier.labels) if by else (label not in modifier.labels) and _keeps(node.expr, label)
    if isinstance(node, promql_parser.BinaryExpr):
        sides = [node.lhs, node.rhs]
        vectors = [
            side for side in sides if not isinstance(side, (promql_parser.NumberLiteral, promql_parser.StringLiteral))
        ]
        return _keeps(vectors[0], label) if vectors else False
    if isinstance(node, promql_parser.Call):
        if node.func.name in ("absent", "absent_over_time", "vector", "scalar", "time"):
            return False
        return any(
            _keeps(arg, label)
            for arg in node.args
            if not isinstance(arg, (promql_parser.NumberLiteral, promql_parser.StringLiteral))
        )
    for attribute in ("expr",):  # parentheses, unary minus, subqueries
        child = getattr(node, attribute, None)
        if child is not None:
            return _keeps(child, label)
    return False
