"""`tokenway batch` as a user runs it: a real `python -m tokenway` process against a real
gateway in front of simulated providers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.stack import Stack
from tokenway.batch.client import CliError, prepare, resolve_target

from .conftest import KEY, chat_line, jsonl, upload, wait_done

WRONG_KEY = "sk-wrong-4f1c9a0e7d2b"


def env_for(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENWAY_", "OPENAI_"))}
    return {**env, "TOKENWAY_URL": stack.url, "TOKENWAY_API_KEY": KEY, **extra}


def batch_cli(
    stack: Stack, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenway", "batch", *args],
        cwd=cwd,
        env=env or env_for(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )


def plain(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def assert_one_clean_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_plain_bodies_are_wrapped_run_with_wait_and_results_come_one_per_line(
    stack: Stack, client: openai.OpenAI, tmp_path: Path
) -> None:
    lines = [json.dumps(plain("one")), json.dumps(plain("two")), "", json.dumps(plain("four"))]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")

    done = batch_cli(
        stack,
        "submit",
        "prompts.jsonl",
        "--model",
        "m-chat",
        "--wait",
        "--poll-interval",
        "0.2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    batch_id = out[0]
    assert batch_id.startswith("batch_")
    assert "status: completed" in out
    assert "requests: 3 total, 3 completed, 0 failed" in out
    batch = client.batches.retrieve(batch_id)
    assert batch.model == "m-chat" and batch.endpoint == "/v1/chat/completions"
    assert f"output_file_id: {batch.output_file_id}" in out
    assert "error_file_id: -" in out

    got = batch_cli(stack, "results", batch_id, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    records = [json.loads(x) for x in got.stdout.splitlines()]
    # custom_id names the line of the user's file (blank lines count)
    assert sorted(r["custom_id"] for r in records) == ["line-1", "line-2", "line-4"]
    assert all(r["response"]["status_code"] == 200 for r in records)
    assert all(r["response"]["body"]["object"] == "chat.completion" for r in records)

    saved = batch_cli(stack, "results", batch_id, "-o", "out.jsonl", cwd=tmp_path)
    assert saved.returncode == 0 and saved.stdout == ""
    assert (tmp_path / "out.jsonl").read_text() == got.stdout
    assert not (tmp_path / "out.jsonl.part").exists()

    none = batch_cli(stack, "results", batch_id, "--errors", cwd=tmp_path)
    assert none.returncode == 0 and none.stdout == ""
    assert "no error file (no request failed)" in none.stderr


def test_a_line_that_fails_upstream_is_in_the_error_file(stack: Stack, tmp_path: Path) -> None:
    lines = [chat_line(f"c{i}", f"about {i}") for i in range(3)]
    # the simulated provider refuses a tool_choice that names no tool (400)
    lines[1]["body"]["tools"] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    lines[1]["body"]["tool_choice"] = {"type": "function", "function": {"name": "missing"}}
    (tmp_path / "batch.jsonl").write_bytes(jsonl(lines))

    done = batch_cli(
        stack, "submit", "batch.jsonl", "--wait", "--poll-interval", "0.2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.splitlines()[0]
    assert "requests: 3 total, 2 completed, 1 failed" in done.stdout
    assert f"1 of 3 requests failed; their errors: `tokenway batch results {batch_id}" in (
        done.stderr
    )

    errors = batch_cli(stack, "results", batch_id, "--errors", cwd=tmp_path)
    assert errors.returncode == 0, errors.stderr
    (err,) = [json.loads(x) for x in errors.stdout.splitlines()]
    assert err["custom_id"] == "c1" and err["response"]["status_code"] == 400
    assert "missing" in err["response"]["body"]["error"]["message"]
    output = batch_cli(stack, "results", batch_id, cwd=tmp_path)
    assert sorted(json.loads(x)["custom_id"] for x in output.stdout.splitlines()) == ["c0", "c2"]


def test_a_file_that_is_not_jsonl_is_refused_before_upload_naming_the_line(
    stack: Stack, client: openai.OpenAI, tmp_path: Path
) -> None:
    (tmp_path / "bad.jsonl").write_text(json.dumps(plain("fine")) + "\n{not json\n")
    before = {f.id for f in client.files.list(purpose="batch")}

    bad = batch_cli(stack, "submit", "bad.jsonl", "--model", "m-chat", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert_one_clean_line(bad.stderr)
    assert "bad.jsonl:2: not valid JSON" in bad.stderr
    assert {f.id for f in client.files.list(purpose="batch")} == before

    (tmp_path / "mixed.jsonl").write_bytes(jsonl([plain("a"), chat_line("x", "b")]))
    mixed = batch_cli(stack, "submit", "mixed.jsonl", "--model", "m-chat", cwd=tmp_path)
    assert mixed.returncode == 2
    assert "mixed.jsonl:2: a batch request line in a file of plain request bodies" in (mixed.stderr)


def test_a_batch_that_fails_validation_exits_non_zero_with_its_lines_named(
    stack: Stack, tmp_path: Path
) -> None:
    lines = [chat_line("a", "x"), chat_line("b", "y"), chat_line("a", "z")]
    (tmp_path / "dup.jsonl").write_bytes(jsonl(lines))

    failed = batch_cli(
        stack, "submit", "dup.jsonl", "--wait", "--poll-interval", "0.2", cwd=tmp_path
    )
    assert failed.returncode == 1
    assert "status: failed" in failed.stdout
    assert "failed validation (1 error):" in failed.stderr
    assert re.search(
        r"dup\.jsonl:3: The custom_id 'a' is already used on line 1.*"
        r"\[duplicate_custom_id, custom_id\]",
        failed.stderr,
    )
    assert "Traceback" not in failed.stderr


def test_a_wrong_key_is_one_clear_line_and_is_never_printed(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_bytes(jsonl([plain("hi")]))
    by_flag = batch_cli(stack, "status", "batch_x", "--key", WRONG_KEY, cwd=tmp_path)
    by_env = batch_cli(
        stack,
        "submit",
        "p.jsonl",
        "--model",
        "m-chat",
        cwd=tmp_path,
        env=env_for(stack, TOKENWAY_API_KEY=WRONG_KEY),
    )
    for r in (by_flag, by_env):
        assert r.returncode == 2 and r.stdout == ""
        assert_one_clean_line(r.stderr)
        assert f"the gateway at {stack.url} refused the API key (HTTP 401" in r.stderr
        assert WRONG_KEY not in r.stderr

    no_key = batch_cli(
        stack,
        "status",
        "batch_x",
        cwd=tmp_path,
        env={k: v for k, v in env_for(stack).items() if k != "TOKENWAY_API_KEY"},
    )
    assert no_key.returncode == 2
    assert "no API key: pass --key or set TOKENWAY_API_KEY" in no_key.stderr


def test_status_as_text_and_json(stack: Stack, client: openai.OpenAI, tmp_path: Path) -> None:
    created = client.batches.create(
        input_file_id=upload(client, [chat_line("s1", "hi"), chat_line("s2", "ho")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "cli"},
    )
    wait_done(client, created.id)

    as_json = batch_cli(stack, "status", created.id, "--format", "json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["id"] == created.id and doc["object"] == "batch"
    assert doc["status"] == "completed" and doc["model"] == "m-chat"
    assert doc["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert doc["metadata"] == {"job": "cli"} and doc["output_file_id"]

    as_text = batch_cli(stack, "status", created.id, cwd=tmp_path)
    assert as_text.returncode == 0, as_text.stderr
    text = as_text.stdout
    assert re.search(rf"^id: +{created.id}$", text, re.M)
    assert re.search(r"^status: +completed$", text, re.M)
    assert re.search(r"^requests: +2 total, 2 completed, 0 failed$", text, re.M)
    assert re.search(r"^completed_at: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.M)
    assert re.search(r"^metadata: +job=cli$", text, re.M)


def test_an_unreachable_gateway_and_an_unknown_batch_are_one_line_each(
    stack: Stack, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = batch_cli(stack, "status", "batch_x", "--url", f"127.0.0.1:{port}/v1", cwd=tmp_path)
    assert down.returncode == 2
    assert_one_clean_line(down.stderr)
    assert f"cannot reach the gateway at http://127.0.0.1:{port}" in down.stderr

    missing = batch_cli(stack, "status", "batch_nope", cwd=tmp_path)
    assert missing.returncode == 2
    assert_one_clean_line(missing.stderr)
    assert "No batch found with id 'batch_nope'. (HTTP 404)" in missing.stderr
    gone = batch_cli(stack, "results", "batch_nope", cwd=tmp_path)
    assert gone.returncode == 2 and "(HTTP 404)" in gone.stderr


def test_cancel_ends_a_waiting_submit_with_a_non_zero_exit(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "slow.jsonl").write_bytes(jsonl([plain(f"slow {i}") for i in range(40)]))
    waiting = subprocess.Popen(
        [
            *(sys.executable, "-m", "tokenway", "batch", "submit", "slow.jsonl"),
            *("--model", "m-slow", "--wait", "--poll-interval", "0.2"),
        ],
        cwd=tmp_path,
        env={**env_for(stack), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        batch_id = waiting.stdout.readline().strip()
        assert batch_id.startswith("batch_")
        cancel = batch_cli(stack, "cancel", batch_id, cwd=tmp_path)
        assert cancel.returncode == 0, cancel.stderr
        assert re.match(rf"{batch_id}: cancell(ing|ed) \(", cancel.stdout)
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 1
    assert "status: cancelled" in out
    assert f"{batch_id} was cancelled" in err

    partial = batch_cli(stack, "results", batch_id, cwd=tmp_path)
    assert partial.returncode in (0, 1)  # 1: cancelled before any line was answered


# --- the pieces, in process -----------------------------------------------------------------


def test_prepare_wraps_bodies_keeping_line_numbers_and_bytes() -> None:
    raw = b'\xef\xbb\xbf{"model": "own", "temperature": 1.0}\r\n\n{"messages": []}\n\n'
    prep = prepare(raw, source="f", model="m", endpoint=None)
    assert prep.requests == 2 and prep.wrapped and prep.endpoint == "/v1/chat/completions"
    lines = prep.data.split(b"\n")
    assert lines[1] == b"" and len(lines) == 4 and lines[3] == b""  # trailing blanks dropped
    first = json.loads(lines[0])
    assert first["custom_id"] == "line-1" and first["method"] == "POST"
    assert first["url"] == "/v1/chat/completions"
    # the user's body goes through byte for byte, and --model does not override it
    assert lines[0].endswith(b'"body":{"model": "own", "temperature": 1.0}}')
    assert json.loads(lines[2]) == {
        "custom_id": "line-3",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": []},
    }


def test_prepare_keeps_batch_lines_and_takes_their_endpoint() -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e"}}
    raw = jsonl([line])
    prep = prepare(raw, source="f", model=None, endpoint=None)
    assert prep == (raw, "/v1/embeddings", 1, False)
    filled = prepare(
        jsonl([{**line, "body": {"input": "x"}}]), source="f", model="e", endpoint=None
    )
    assert json.loads(filled.data)["body"] == {"model": "e", "input": "x"}


@pytest.mark.parametrize(
    ("content", "model", "message"),
    [
        (b"", "m", "f: no requests in the file"),
        (b"\n  \n", "m", "f: no requests in the file"),
        (b'{"messages": []}\n[1]\n', "m", "f:2: expected a JSON object, got list"),
        (b'{"messages": []}\n', None, "f:1: the request body has no 'model'; pass --model"),
        (
            b'{"custom_id": "a", "body": {}}\n{"messages": []}\n',
            "m",
            "f:2: a plain request body in a file of batch request lines (as on line 1)",
        ),
    ],
)
def test_prepare_names_what_is_wrong(content: bytes, model: str | None, message: str) -> None:
    with pytest.raises(CliError) as caught:
        prepare(content, source="f", model=model, endpoint=None)
    assert str(caught.value) == message


def test_the_target_comes_from_flags_config_env_then_default(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    # the rest of the config may name secrets this machine does not have
    config.write_text(
        "listen: 0.0.0.0:5151\nproviders:\n  - {name: a, kind: openai, api_key: ${NOPE_KEY}}\n"
    )
    env = {"TOKENWAY_URL": "http://gw.internal:9000/v1/", "OPENAI_API_KEY": "sk-o"}
    assert resolve_target("https://x.example/", "sk-k", str(config), env) == (
        "https://x.example",
        "sk-k",
    )
    assert resolve_target(None, None, str(config), env) == ("http://127.0.0.1:5151", "sk-o")
    assert resolve_target(None, None, None, {**env, "TOKENWAY_API_KEY": "sk-t"}) == (
        "http://gw.internal:9000",
        "sk-t",
    )
    assert resolve_target(None, "k", None, {}).url == "http://127.0.0.1:4141"
    with pytest.raises(CliError, match="no API key"):
        resolve_target(None, None, None, {})
    with pytest.raises(CliError, match="cannot read"):
        resolve_target(None, "k", str(tmp_path / "absent.yaml"), {})
    with pytest.raises(CliError, match="expected http"):
        resolve_target("ftp://host", "k", None, {})
