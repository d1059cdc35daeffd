from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.config.demo import demo_config
from tokenway.config.load import ConfigError, expand_env, load_config, parse_config


def base() -> dict[str, Any]:
    return {
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1"},
            {"name": "anthropic", "kind": "anthropic", "base_url": "https://api.anthropic.com"},
        ],
        "models": [{"name": "chat", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}],
        "keys": [{"name": "app", "key": "sk-app", "models": ["chat"]}],
    }


def test_valid_config() -> None:
    c = parse_config(base(), env={})
    assert c.models["chat"].targets[0].model == "gpt-4o-mini"
    assert (c.host, c.port) == ("127.0.0.1", 4141)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["providers"][0].update(colour="red"), "providers[0].colour: unknown key"),
        (lambda d: d.update(extra=1), "extra: unknown key"),
        (
            lambda d: d["models"][0]["targets"][0].update(provider="opneai"),
            "models[0].targets[0].provider: unknown provider 'opneai'",
        ),
        (lambda d: d["providers"][1].update(kind="cohere"), "providers[1].kind"),
        (lambda d: d["providers"].append(dict(d["providers"][0])), "duplicate provider"),
        (lambda d: d["keys"][0].update(models=["nope"]), "keys[0].models[0]: unknown model"),
        (lambda d: d.update(listen="nowhere"), "listen: expected HOST:PORT"),
        (lambda d: d["models"][0].update(targets=[]), "models[0].targets"),
        (lambda d: d["providers"][0].update(base_url="sim://ghost"), "providers[0].base_url"),
        (
            lambda d: d["models"].append(
                {
                    "name": "e",
                    "kind": "embedding",
                    "targets": [{"provider": "anthropic", "model": "x"}],
                }
            ),
            "offers no embeddings",
        ),
        (lambda d: d["providers"][1].update(responses=True), "providers[1].responses: only"),
        (
            lambda d: d["providers"][0].update(responses=True, azure=True),
            "providers[0].responses: only for kind openai (and not with azure)",
        ),
        (lambda d: d["providers"][1].update(batch_api=True), "providers[1].batch_api: only"),
        (
            lambda d: d["providers"][0].update(batch_api=True, azure=True),
            "providers[0].batch_api: only for kind openai (and not with azure)",
        ),
        (lambda d: d.update(batch={"upstream_poll_s": 0}), "batch: upstream_poll_s: must be"),
    ],
)
def test_errors_name_their_path(mutate: Any, message: str) -> None:
    d = base()
    mutate(d)
    with pytest.raises(ConfigError) as e:
        parse_config(d, env={})
    assert message in str(e.value)


def test_env_expansion_and_missing_variable(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "providers:\n"
        "  - {name: o, kind: openai, base_url: '${BASE:-https://x/v1}', api_key: ${OPENAI_KEY}}\n"
    )
    c = load_config(f, env={"OPENAI_KEY": "sk-1"})
    assert c.providers["o"].api_key == "sk-1"
    assert c.providers["o"].base_url == "https://x/v1"
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert "OPENAI_KEY" in str(e.value) and "providers[0].api_key" in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_demo_config_is_valid() -> None:
    c = demo_config()
    assert {"demo-chat", "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash"} <= set(c.models)
    assert c.raw.storage.ledger.startswith("sqlite:///tokenway-data/")


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
def test_expansion_leaves_plain_strings_alone(s: str) -> None:
    assert expand_env(s, {}) == s


def test_design_example_loads() -> None:
    env = {
        k: "x-" + k
        for k in (
            "TOKENWAY_ADMIN_KEY",
            "OPENAI_API_KEY",
            "DEEPSEEK_API_KEY",
            "ANTHROPIC_API_KEY",
            "APP_KEY",
        )
    }
    c = load_config(Path(__file__).with_name("design_example.yaml"), env=env)
    assert c.providers["deepseek"].api_key == "x-DEEPSEEK_API_KEY"
    assert c.providers["deepseek"].region == "cn"
    assert [t.provider for t in c.models["chat-fast"].targets] == ["openai", "deepseek"]
    assert c.keys[0].budget_usd == 500
