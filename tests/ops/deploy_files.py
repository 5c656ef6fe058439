"""Readers for deploy/: YAML documents, the Dockerfile, PromQL names (for test_deploy)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.metrics import GatewayMetrics, TenantLabels
from gateway.ops.registry import metrics_registries
from gateway.ops.settings import ENV_NAMES as OPS_ENV_NAMES
from gateway.ops.settings import OpsSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

GATEWAY_IMAGE_NAMES = ("rymi-gateway:",)
PROCESS_ENV = frozenset(
    {
        # Not settings of ours, but read by the runtime or a library we use.
        "PATH",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client multiprocess mode
    }
)

# -- YAML / JSON ------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file (safe loader; merge keys resolved)."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def k8s_objects() -> dict[str, dict[str, Any]]:
    """The Kubernetes manifests under deploy/k8s by ``Kind/name`` (kustomization skipped)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_documents(path):
            if doc.get("kind") == "Kustomization":
                continue
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            if key in objects:  # the two HPAs are alternatives with one name
                key = f"{key}@{path.name}"
            objects[key] = doc
    return objects


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "rymi-gateway.json").read_text()
    )
    return doc


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


# -- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env(path: Path) -> dict[str, str]:
    """The ENV of the final stage (``KEY=value`` pairs)."""
    stages: list[dict[str, str]] = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            stages.append({})
        elif keyword == "ENV":
            for pair in rest.split():
                key, _, val = pair.partition("=")
                stages[-1][key] = val
    return stages[-1]


# -- settings ---------------------------------------------------------------------------

_PROBES = ("\x00not valid", "7", "12345", "redis://probe:1/0", "https://probe.example", "json")


def read_by_gateway(name: str, value: str | None = None) -> bool:
    """True when Settings.from_env (or OpsSettings.from_env) reads ``name``.

    Decided by behaviour, not by reading config.py: a variable is read when some value
    changes the settings or is refused with a ConfigError naming it. A variable that
    from_env ignores leaves the settings equal to the defaults for every value.
    """
    if name in OPS_ENV_NAMES:
        return True
    base = Settings.from_env({})
    for probe in (value, *_PROBES) if value else _PROBES:
        try:
            if Settings.from_env({name: probe}) != base:
                return True
        except ConfigError as exc:
            if exc.field == name:
                return True
    return False


def check_settings(env: Mapping[str, str]) -> tuple[Settings, OpsSettings]:
    """Parse an environment with both settings classes (raises ConfigError if bad)."""
    return Settings.from_env(env), OpsSettings.from_env(env)


_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose_value(raw: str, supplied: Mapping[str, str]) -> str:
    """A compose value with ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` resolved
    from ``supplied`` (a required variable missing from it raises KeyError)."""

    def sub(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in supplied:
            return supplied[name]
        if "?" in operator:
            raise KeyError(f"compose requires {name}: {rest}")
        return rest if "-" in operator else ""

    return _COMPOSE_VAR.sub(sub, raw)


# -- metrics and PromQL -------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name GatewayMetrics can export -> the label names seen on it.

    Names come from the families (present even without samples); labels from the
    samples of a registry where every labelled family has at least one series.
    """
    registry = metrics_registries({}).metrics
    metrics = GatewayMetrics(registry, tenants=TenantLabels(frozenset({"t"})))
    metrics.agent_error("timeout")
    metrics.lease_operation("renew", "renewed")
    metrics.observe_added_latency("in", 0.001)
    metrics.observe_gc_pause(2, 0.001)
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in _SUFFIXES[family.type]:
            names[family.name + suffix] = set()
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def label_values(name: str, label: str) -> set[str]:
    """The values a label takes in the series GatewayMetrics creates up front."""
    metrics = GatewayMetrics(CollectorRegistry())
    return {
        sample.labels[label]
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name and label in sample.labels
    }


_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")

PROMQL_WORDS = frozenset(
    {
        "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "by", "without",
        "histogram_quantile", "clamp_min", "clamp_max", "or", "and", "unless", "on",
        "ignoring", "group_left", "group_right", "label_values", "offset", "bool",
        "__rate_interval", "__interval", "__all", "instance", "le", "s", "m", "h",
    }
)  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Identifiers of ``expr`` outside label matchers and groupings that are not PromQL
    words or numbers: the metric names it references."""
    stripped = _GROUPING.sub(" ", re.sub(r"\{[^}]*\}", " ", expr))
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)  # range durations
    stripped = re.sub(r"\"[^\"]*\"", " ", stripped)
    return {word for word in _IDENT.findall(stripped) if word not in PROMQL_WORDS}


def promql_selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, operator, value), ...]) for each ``metric{...}`` selector."""
    return [(m.group(1), _MATCHER.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def promql_groupings(expr: str) -> set[str]:
    """Label names used in ``by (...)`` / ``without (...)``."""
    return {
        label.strip()
        for group in _GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }
