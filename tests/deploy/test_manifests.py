"""deploy/k8s: schema-valid objects that fit together and run a config tokenway accepts.

No cluster runs here. Every object is validated against the Kubernetes JSON schemas that the
`kubernetes-validate` package bundles (strict: unknown fields fail), with the network shut so
that a validator reaching out would fail the test; the rest checks what a schema cannot: the
config passes `tokenway config check`, the container's command parses, and the objects name
each other (selectors, ports, Secret keys, mounts) consistently.
"""

from __future__ import annotations

import copy
import inspect
import re
import socket
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.deploy.k8s import (
    CONFIG_VAR,
    K8S,
    KUSTOMIZATION,
    ROOT,
    SECRET_TEMPLATE,
    config_path,
    config_text,
    documents,
    find,
    gateway,
    gateway_container,
    of_kind,
    placeholder_env,
    secret_template,
)
from tokenway import cli
from tokenway.accounting.postgres import parse_url
from tokenway.config.load import Config, parse_config

# The oldest Kubernetes these manifests are for, and the newest the validator knows.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
WORKLOADS = ("Deployment", "StatefulSet")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"network access to {address!r} while validating")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def served_config(env: dict[str, str] | None = None) -> Config:
    return parse_config(yaml.safe_load(config_text()), env=env or placeholder_env())


def pod_specs() -> list[dict[str, Any]]:
    return [w["spec"]["template"]["spec"] for kind in WORKLOADS for w in of_kind(kind)]


def containers() -> list[dict[str, Any]]:
    return [c for spec in pod_specs() for c in spec["containers"]]


# ---- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    [d for _, d in documents()],
    ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in documents()],
)
def test_every_manifest_is_valid_kubernetes(
    doc: dict[str, Any], version: str, offline: None
) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "path, value",
    [
        # a misspelt field, a wrong type, a missing required field
        (("spec", "template", "spec", "containers", 0, "readinesProbe"), {}),
        (("spec", "replicas"), "three"),
        (("spec", "template", "spec", "containers", 0, "name"), None),
    ],
)
def test_the_validator_rejects_a_broken_deployment(
    path: tuple[str | int, ...], value: Any, offline: None
) -> None:
    doc = copy.deepcopy(gateway())
    node: Any = doc
    for step in path[:-1]:
        node = node[step]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_kustomization_applies_everything_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / KUSTOMIZATION).read_text(encoding="utf-8"))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {KUSTOMIZATION, SECRET_TEMPLATE}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert kustomization["namespace"] == find("Namespace", "tokenway")["metadata"]["name"]
    assert secret_template()["metadata"]["namespace"] == kustomization["namespace"]


# ---- the config the pods serve ------------------------------------------------------------


def test_configmap_config_passes_config_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in placeholder_env().items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "tokenway.yaml"
    path.write_text(config_text(), encoding="utf-8")
    assert cli.main(["config", "check", str(path)]) == 0
    assert "ok (2 providers, 2 models, 1 keys)" in capsys.readouterr().out


def test_config_shares_state_on_redis_and_ledger_on_postgres() -> None:
    config = served_config()
    storage = config.raw.storage
    assert storage.state == "redis://redis:6379/0"
    assert urlsplit(storage.ledger).scheme == "postgresql"
    # Every server the config names is a Service of these manifests, on the right port.
    for url in (storage.state, storage.ledger):
        parts = urlsplit(url)
        service = find("Service", str(parts.hostname))
        assert parts.port in [p["port"] for p in service["spec"]["ports"]]
    # Each pod falls back to 1/replicas of every limit while Redis is down.
    assert storage.replicas == gateway()["spec"]["replicas"]


def test_every_config_variable_comes_from_the_secret() -> None:
    wanted = set(CONFIG_VAR.findall(config_text()))
    env = {e["name"]: e for e in gateway_container()["env"]}
    assert wanted == set(env)
    for name in wanted:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "tokenway-secrets"
        assert ref["key"] == name


def test_every_secret_reference_exists_and_the_template_holds_no_secret() -> None:
    template = secret_template()["stringData"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for c in containers()
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert refs
    for ref in refs:
        assert ref["name"] == "tokenway-secrets"
        assert ref["key"] in template
    assert all(value == "" for value in template.values())


def test_an_unfilled_secret_stops_the_gateway_at_start() -> None:
    from tokenway.config.load import ConfigError

    empty = dict.fromkeys(placeholder_env(), "")
    with pytest.raises(ConfigError, match=r"keys\[0\]\.key: empty"):
        served_config(empty)


@given(password=st.text(alphabet="0123456789abcdef", min_size=1, max_size=64))
def test_a_hex_password_reaches_postgres_intact(password: str) -> None:
    env = {**placeholder_env(), "POSTGRES_PASSWORD": password}
    dsn = urlsplit(parse_url(served_config(env).raw.storage.ledger).dsn)
    assert (dsn.username, dsn.password) == ("tokenway", password)
    assert (dsn.hostname, dsn.port, dsn.path) == ("postgres", 5432, "/tokenway")


# ---- the gateway container ----------------------------------------------------------------


def test_container_command_is_one_the_cli_accepts() -> None:
    c = gateway_container()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert c["command"] == ["tokenway"]
    assert "tokenway" in pyproject["project"]["scripts"]
    args = cli.build_parser().parse_args(c["args"])
    assert args.fn is cli.cmd_serve
    assert args.config == config_path()
    assert args.host == "0.0.0.0"
    # One event loop per worker: as many workers as CPUs the container may use.
    assert args.workers == cpu(c["resources"]["limits"]["cpu"])
    assert args.workers == cpu(c["resources"]["requests"]["cpu"])
    port = served_config().port
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "http"] == [port]


def test_probes_ask_readyz_and_healthz_on_the_serving_port() -> None:
    c = gateway_container()
    ports = {p["name"] for p in c["ports"]}
    expected = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        assert c[probe]["httpGet"]["path"] == path
        assert c[probe]["httpGet"]["port"] in ports


def test_shutdown_lets_balancers_stop_then_streams_finish_then_the_ledger_flush() -> None:
    pod = gateway()["spec"]["template"]["spec"]
    sleep = gateway_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    pre_stop_s = int(sleep[1])
    assert pre_stop_s >= 5
    # How long `tokenway serve` lets open requests and streams finish after SIGTERM.
    match = re.search(r"timeout_graceful_shutdown=(\d+)", inspect.getsource(cli._serve))
    assert match, "tokenway serve no longer sets uvicorn's timeout_graceful_shutdown"
    drain_s = int(match.group(1))
    flush_margin_s = 10
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + drain_s + flush_margin_s


def test_every_path_the_gateway_writes_is_a_writable_volume() -> None:
    c = gateway_container()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [Path(m["mountPath"]) for m in c["volumeMounts"] if not m.get("readOnly")]
    spool = parse_url(served_config().raw.storage.ledger).spool_dir
    for path in (spool, Path("/tmp")):
        assert any(path.is_relative_to(mount) for mount in writable), path
    assert Path(config_path()).parent not in writable


# ---- how the objects fit together ---------------------------------------------------------


def test_services_select_a_workload_and_its_named_ports() -> None:
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        pods = [
            w["spec"]["template"]
            for kind in WORKLOADS
            for w in of_kind(kind)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, service["metadata"]["name"]
        names = {p["name"] for c in pods[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names


def test_workload_selectors_match_their_pods() -> None:
    for kind in WORKLOADS:
        for w in of_kind(kind):
            labels = w["spec"]["template"]["metadata"]["labels"]
            assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
            if kind == "StatefulSet":
                find("Service", w["spec"]["serviceName"])


def test_disruption_budget_keeps_gateways_serving() -> None:
    pdb = find("PodDisruptionBudget", "tokenway")
    assert pdb["spec"]["selector"] == gateway()["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] < gateway()["spec"]["replicas"]
    assert gateway()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_only_gateways_reach_redis_and_postgres() -> None:
    gateway_labels = gateway()["spec"]["template"]["metadata"]["labels"]
    for name, service in (("redis-from-gateway", "redis"), ("postgres-from-gateway", "postgres")):
        spec = find("NetworkPolicy", name)["spec"]
        target = find("StatefulSet", service)["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= target.items()
        (rule,) = spec["ingress"]
        assert rule["from"][0]["podSelector"]["matchLabels"].items() <= gateway_labels.items()
        ports = [p["port"] for p in find("Service", service)["spec"]["ports"]]
        assert [p["port"] for p in rule["ports"]] == ports


def test_every_container_is_sized_and_unprivileged() -> None:
    for spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
    for c in containers():
        res = c["resources"]
        assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"])
        assert memory(res["requests"]["memory"]) <= memory(res["limits"]["memory"])
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def cpu(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def memory(quantity: str) -> int:
    for suffix, factor in _BINARY.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)
