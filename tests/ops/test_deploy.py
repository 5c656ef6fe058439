"""deploy/ lines up with the code: files parse, variables exist, ports/paths/metrics match.

Docker and Kubernetes are not run here; every file is parsed and cross-checked instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import tomllib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gateway.cli import build_parser
from gateway.ops import HEALTHZ_PATH, METRICS_PATH, READYZ_PATH, Readiness, add_ops_routes
from gateway.ops.drain import HANGUP_TIMEOUT_S
from gateway.store.models import MAX_CALL_DURATION_RANGE_S
from tests.helpers.redis_server import free_port
from tests.ops.deploy_files import (
    DEPLOY,
    GATEWAY_IMAGE_NAMES,
    PROCESS_ENV,
    check_settings,
    compose_value,
    dashboard,
    dashboard_panels,
    dockerfile_env,
    dockerfile_instructions,
    exported_metrics,
    k8s_objects,
    label_values,
    promql_groupings,
    promql_metric_names,
    promql_selectors,
    read_by_gateway,
    yaml_documents,
)

LONGEST_CALL_S = MAX_CALL_DURATION_RANGE_S[1]
PORT = 8080
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what containers must listen on
MASTER_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()


def _compose() -> dict[str, Any]:
    (doc,) = yaml_documents(DEPLOY / "compose.yaml")
    assert isinstance(doc, dict)
    return doc


def _gateway_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {
        name: service
        for name, service in services.items()
        if str(service.get("image", "")).startswith(GATEWAY_IMAGE_NAMES)
    }


def _serving() -> list[str]:
    """The compose services that run ``serve`` (the gateways proper)."""
    return [n for n, s in _gateway_services().items() if s.get("command") == ["serve"]]


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    supplied = {"RYMI_MASTER_KEYS": MASTER_KEY}
    return {str(k): compose_value(str(v), supplied) for k, v in raw.items()}


def _duration_s(text: str) -> int:
    """``2h5m``/``7500s``/``2h10m`` -> seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


def _pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return containers


# -- every file parses ----------------------------------------------------------------


def test_every_deploy_file_parses() -> None:
    yaml_files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(yaml_files) >= 12
    for path in yaml_files:
        assert yaml_documents(path), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())
    assert dockerfile_instructions(DEPLOY / "Dockerfile")


def test_the_image_build_stage_has_what_the_package_build_needs() -> None:
    # pyproject's build hook compiles the resampler's C kernel: the build stage must copy
    # the hook and have a compiler, or `pip install .` fails (or silently goes numpy).
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    hook = project["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["path"]
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    build_stage = instructions[stages[0] : stages[1]]
    copied = {arg for k, rest in build_stage if k == "COPY" for arg in rest.split()[:-1]}
    assert hook in copied
    assert any(k == "RUN" and "gcc" in rest for k, rest in build_stage)
    for module in ("rymi_codecs._fir", "gateway.server._mask"):  # the image checks both built
        assert any(k == "RUN" and module in rest for k, rest in build_stage), module


def test_kubernetes_objects_are_the_expected_set() -> None:
    kinds = {key.split("/")[0] for key in k8s_objects()}
    expected = {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    assert expected | {"HorizontalPodAutoscaler", "Job"} <= kinds
    (kustomization,) = yaml_documents(DEPLOY / "k8s" / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource


# -- environment variables exist in the settings ------------------------------------------


def _all_gateway_env() -> dict[str, dict[str, str]]:
    """Every variable set for a gateway process, by where it is set."""
    places: dict[str, dict[str, str]] = {"Dockerfile": dockerfile_env(DEPLOY / "Dockerfile")}
    for name, service in _gateway_services().items():
        places[f"compose:{name}"] = _compose_env(service)
    for key, obj in k8s_objects().items():
        if obj["kind"] == "ConfigMap":
            places[key] = dict(obj["data"])
        elif obj["kind"] == "Secret":
            places[key] = dict(obj["stringData"])
        elif obj["kind"] in ("Deployment", "Job"):
            for container in (
                _pod_containers(obj)
                if obj["kind"] == "Deployment"
                else (obj["spec"]["template"]["spec"]["containers"])
            ):
                places[f"{key}:{container['name']}"] = {
                    e["name"]: e.get("value", "") for e in container.get("env", [])
                }
    return places


def test_the_read_probe_tells_known_from_unknown_variables() -> None:
    # The probe is what the next test relies on: prove it can say no.
    assert read_by_gateway("RYMI_PORT")
    assert read_by_gateway("RYMI_DATA_DIR")
    assert read_by_gateway("RYMI_TWILIO_API_BASE_URL")
    assert read_by_gateway("RYMI_LOG_FORMAT")
    assert not read_by_gateway("RYMI_PORTT")
    assert not read_by_gateway("RYMI_DRAIN_DEADLINE_SECONDS")


def test_every_variable_set_for_a_gateway_is_read_by_the_settings() -> None:
    places = _all_gateway_env()
    assert len(places) >= 5
    for place, env in places.items():
        for name, value in env.items():
            if name.startswith("RYMI_"):
                assert read_by_gateway(name, value), f"{place} sets {name}, which no setting reads"
            else:
                assert name in PROCESS_ENV, f"{place} sets {name}, which nothing reads"


def test_the_values_set_parse_and_agree_with_each_other() -> None:
    places = _all_gateway_env()
    configmap = places["ConfigMap/rymi-gateway"]
    settings, ops = check_settings(configmap)
    assert (settings.host, settings.port, ops.log_format) == (ALL_INTERFACES, PORT, "json")
    assert settings.redis_url is not None  # a fleet coordinates through Redis
    for name, service in _gateway_services().items():
        if service.get("command") != ["serve"]:
            continue
        settings, ops = check_settings(_compose_env(service))
        assert settings.port == PORT, name
        assert settings.redis_url is not None, name
        assert settings.database_url.startswith("postgresql+asyncpg://"), name
        assert settings.master_keys, name
    settings, _ = check_settings(places["Dockerfile"])
    assert (settings.host, settings.port) == (ALL_INTERFACES, PORT)


# -- ports, paths and commands line up ----------------------------------------------------


def test_dockerfile_is_multistage_non_root_with_a_healthz_check() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    assert sum(keyword == "FROM" for keyword, _ in instructions) >= 2
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users
    assert not users[-1].startswith(("root", "0"))
    (healthcheck,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert HEALTHZ_PATH in healthcheck
    assert "RYMI_PORT" in healthcheck
    assert ("EXPOSE", str(PORT)) in instructions
    entrypoint = json.loads(dict(instructions)["ENTRYPOINT"])
    command = json.loads(dict(instructions)["CMD"])
    assert entrypoint == ["rymi-gateway"]
    build_parser().parse_args(command)


def test_commands_given_to_the_image_are_real_cli_commands() -> None:
    for service in _gateway_services().values():
        build_parser().parse_args(service["command"])
    for obj in k8s_objects().values():
        if obj["kind"] in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                build_parser().parse_args(container["args"])


def test_kubernetes_probes_ports_and_grace_period() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment/rymi-gateway"]
    pod = deployment["spec"]["template"]
    (container,) = _pod_containers(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == READYZ_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == HEALTHZ_PATH
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", PORT)
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= LONGEST_CALL_S + 60
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    _, ops = check_settings(objects["ConfigMap/rymi-gateway"]["data"])
    if ops.drain_deadline_s is not None:  # the deadline's hang-ups must finish before SIGKILL
        assert int(pre_stop[1]) + ops.drain_deadline_s + HANGUP_TIMEOUT_S < grace
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == METRICS_PATH
    assert annotations["prometheus.io/port"] == str(PORT)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
    assert refs == {"rymi-gateway", "rymi-gateway-secrets"}
    assert {"ConfigMap/rymi-gateway", "Secret/rymi-gateway-secrets"} <= set(objects)


def test_service_pdb_and_hpa_point_at_the_deployment() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment/rymi-gateway"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = objects["Service/rymi-gateway"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", PORT)
    pdb = objects["PodDisruptionBudget/rymi-gateway"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpas = [obj for obj in objects.values() if obj["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpas) == 2
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", "rymi-gateway")
        assert hpa["spec"]["minReplicas"] >= 2


def test_compose_gateways_proxy_and_grace() -> None:
    compose = _compose()
    gateways = _gateway_services()
    assert len(_serving()) == 2
    for name in _serving():
        service = gateways[name]
        assert str(PORT) in [str(p) for p in service["expose"]]
        grace = _duration_s(service["stop_grace_period"])
        assert grace >= LONGEST_CALL_S
        _, ops = check_settings(_compose_env(service))
        assert (ops.drain_deadline_s or 0) + HANGUP_TIMEOUT_S < grace
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    assert {"redis", "postgres", "prometheus", "grafana", "proxy"} <= set(compose["services"])


def test_haproxy_routes_on_readiness_and_keeps_websockets_open() -> None:
    config = (DEPLOY / "proxy" / "haproxy.cfg").read_text()
    lines = [line.split("#")[0].strip() for line in config.splitlines()]
    assert f"http-check send meth GET uri {READYZ_PATH}" in lines
    servers = [line.split() for line in lines if line.startswith("server ")]
    assert {s[2] for s in servers} == {f"{name}:{PORT}" for name in _serving()}
    (tunnel,) = [line.split()[-1] for line in lines if line.startswith("timeout tunnel")]
    assert _duration_s(tunnel) >= LONGEST_CALL_S
    assert "shutdown-sessions" not in " ".join(lines)  # a DOWN server keeps its live calls
    assert f"bind :{PORT}" in lines


def test_prometheus_scrapes_every_gateway_on_the_metrics_path() -> None:
    (config,) = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH
    targets = set(job["static_configs"][0]["targets"])
    assert targets == {f"{name}:{PORT}" for name in _serving()}
    mounted = {volume.split(":")[1] for volume in _compose()["services"]["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounted


def test_grafana_provisioning_matches_the_dashboard() -> None:
    (datasources,) = yaml_documents(
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    )
    uids = {ds["uid"] for ds in datasources["datasources"]}
    board = dashboard()
    for panel in dashboard_panels(board["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert panel["targets"], panel["title"]
    (providers,) = yaml_documents(DEPLOY / "grafana" / "provisioning" / "dashboards" / "rymi.yaml")
    path = providers["providers"][0]["options"]["path"]
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in _compose()["services"]["grafana"]["volumes"]
    }
    assert (DEPLOY / mounts[path] / "rymi-gateway.json").is_file()


# -- metric names and labels referenced exist ----------------------------------------------


def _all_promql() -> list[tuple[str, str]]:
    (rules,) = yaml_documents(DEPLOY / "prometheus" / "alerts.yml")
    board = dashboard()
    return [
        *((f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]),
        *(
            (f"panel {panel['title']}", target["expr"])
            for panel in dashboard_panels(board["panels"])
            for target in panel.get("targets", [])
        ),
        *((f"variable {v['name']}", v["query"]["query"]) for v in board["templating"]["list"]),
    ]


def test_every_metric_in_the_dashboard_and_alerts_exists() -> None:
    exported = exported_metrics()
    exprs = _all_promql()
    assert len(exprs) >= 30
    used: set[str] = set()
    for where, expr in exprs:
        for name in promql_metric_names(expr):
            assert name in exported or name == "up", f"{where} uses unknown metric {name}"
            used.add(name)
    families = {n.removesuffix("_bucket").removesuffix("_total") for n in used}
    assert len(families) >= 15  # the dashboard covers the catalogue, not a sample of it


def test_every_label_and_label_value_in_the_dashboard_and_alerts_exists() -> None:
    exported = exported_metrics()
    target_labels = {"instance", "job"}
    (config,) = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for where, expr in _all_promql():
        referenced: set[str] = set(target_labels)
        for metric, matchers in promql_selectors(expr):
            known = exported.get(metric, set()) | target_labels
            referenced |= known
            for label, _operator, val in matchers:
                assert label in known, f"{where}: {metric} has no label {label}"
                if metric == "up" and label == "job":
                    assert val in jobs, where
                closed = label_values(metric, label)
                if closed and "~" not in val and "$" not in val:
                    for alternative in val.split("|"):
                        assert alternative in closed, f"{where}: {label}={alternative}?"
        for name in promql_metric_names(expr):
            referenced |= exported.get(name, set())
        for label in promql_groupings(expr):
            assert label in referenced, f"{where} groups by unknown label {label}"


def test_the_parsers_used_above_find_what_they_should() -> None:
    expr = 'sum by (carrier, le) (rate(gateway_x_bucket{reason!~"a|b", instance=~"$i"}[5m])) or up'
    assert promql_metric_names(expr) == {"gateway_x_bucket", "up"}
    assert promql_selectors(expr) == [
        ("gateway_x_bucket", [("reason", "!~", "a|b"), ("instance", "=~", "$i")])
    ]
    assert promql_groupings(expr) == {"carrier", "le"}
    assert compose_value("a${X:-dflt}b${Y}", {"Y": "y"}) == "adfltby"
    with pytest.raises(KeyError, match="Z"):
        compose_value("${Z:?needed}", {})
    assert _duration_s("2h5m") == 7500


async def test_the_image_healthcheck_command_really_probes_healthz() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    (healthcheck,) = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"

    async def probe(port: int) -> int:
        env = {**os.environ, "RYMI_PORT": str(port)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv[1:], env=env, stderr=asyncio.subprocess.DEVNULL
        )
        return await proc.wait()

    app = web.Application()
    add_ops_routes(app, exposition=CollectorRegistry(), readiness=Readiness(lambda: True, {}))
    async with TestServer(app, port=0) as server:
        assert server.port is not None
        assert await probe(server.port) == 0  # healthy even while draining (not ready)
    assert await probe(free_port()) != 0  # nothing listening: unhealthy
