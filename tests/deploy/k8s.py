"""Reading deploy/k8s: every manifest document, and lookups the tests share."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATION = "kustomization.yaml"
SECRET_TEMPLATE = "secret.template.yaml"
CONFIG_KEY = "tokenway.yaml"
# `${VAR}` or `${VAR:-default}`, as tokenway.config.load expands them.
CONFIG_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


@cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every Kubernetes object under deploy/k8s."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == KUSTOMIZATION:
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path.name, doc))
    return tuple(out)


def find(kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` named `name`."""
    hits = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def gateway() -> dict[str, Any]:
    return find("Deployment", "tokenway")


def gateway_container() -> dict[str, Any]:
    containers = gateway()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def config_text() -> str:
    """The tokenway config the gateway pods serve, as the ConfigMap holds it."""
    text: str = find("ConfigMap", "tokenway-config")["data"][CONFIG_KEY]
    return text


def config_path() -> str:
    """Where the gateway container sees the config: its ConfigMap volume's mount + key."""
    pod = gateway()["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name"))
    assert volume["configMap"]["name"] == "tokenway-config"
    mount = next(m for m in gateway_container()["volumeMounts"] if m["name"] == volume["name"])
    return f"{mount['mountPath'].rstrip('/')}/{CONFIG_KEY}"


def secret_template() -> dict[str, Any]:
    return find("Secret", "tokenway-secrets")


def placeholder_env() -> dict[str, str]:
    """Every variable the Secret template defines, with a stand-in value (hex, as advised)."""
    return {name: f"{i:02x}" * 16 for i, name in enumerate(secret_template()["stringData"])}
