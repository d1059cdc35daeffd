"""The `tokenway batch` command: OpenAI's Batch API on a tokenway gateway, from a terminal.

    tokenway batch submit FILE [--model M] [--endpoint E] [--window 24h] [--wait]
    tokenway batch status ID [--format text|json]
    tokenway batch results ID [--errors] [-o FILE]
    tokenway batch cancel ID

It talks to the gateway over HTTP with the official `openai` SDK, as an application would, so
it works against any replica. Exit codes: 0 the work was done (for `submit --wait`, the batch
completed), 1 the batch ended `failed`, `cancelled` or `expired`, 2 the command could not do
its work (gateway unreachable, key refused, unknown id, unusable input file), 130 interrupted.
Every message goes to stderr as one line; the API key is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    import openai

__all__ = [
    "DEFAULT_URL",
    "TERMINAL",
    "CliError",
    "Prepared",
    "Target",
    "format_status",
    "listen_url",
    "prepare",
    "resolve_target",
    "run",
]

DEFAULT_URL = "http://127.0.0.1:4141"
DEFAULT_ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "cancelled", "expired")
"""The statuses a batch ends in."""

# How long `submit --wait` keeps polling a gateway it cannot reach (a replica restarting
# mid-batch loses nothing, so waiting through it is worth a minute).
_UNREACHABLE_GRACE_S = 60.0
_TIMES = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "cancelling_at",
    "cancelled_at",
    "expired_at",
    "expires_at",
)
_PROG = "tokenway batch"
_MARKS = {"completed": "✓"}


class CliError(Exception):
    """A reason the command cannot do its work: printed as one line, exit status 2."""


class Target(NamedTuple):
    """Where the command talks to: the gateway's base URL (without `/v1`) and the API key."""

    url: str
    key: str

    @property
    def shown(self) -> str:
        """The URL without any credentials in it, for messages."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


class Prepared(NamedTuple):
    """An input file ready to upload: its batch JSONL, the endpoint its lines target, the
    number of requests, and whether the CLI wrapped plain request bodies."""

    data: bytes
    endpoint: str
    requests: int
    wrapped: bool


# --- where to talk to -------------------------------------------------------------------------


def normalise_url(raw: str) -> str:
    """`raw` as a base URL: scheme added when missing, no trailing `/` or `/v1`."""
    text = raw.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--url: expected http://HOST:PORT, got {raw!r}")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


# `${VAR}` is not YAML-safe inside flow mappings, so references are parked while YAML parses.
_REF = re.compile(r"\$\{[^}]*\}")
_PARKED = re.compile(r"__tokenway_batch_ref_(\d+)__")


def listen_url(path: str) -> str:
    """The URL a gateway serving config file `path` listens on (its `listen:`).

    Only `listen` is read and expanded: a client machine need not have the providers' secrets
    that the rest of the config refers to.
    """
    import yaml

    from tokenway.config.load import ConfigError, expand_env

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None
    refs: list[str] = []

    def park(m: re.Match[str]) -> str:
        refs.append(m.group(0))
        return f"__tokenway_batch_ref_{len(refs) - 1}__"

    try:
        doc = yaml.safe_load(_REF.sub(park, text))
    except yaml.YAMLError:
        raise CliError(f"{path}: not valid YAML") from None
    listen = doc.get("listen", "127.0.0.1:4141") if isinstance(doc, dict) else "127.0.0.1:4141"
    if not isinstance(listen, str):
        raise CliError(f"{path}: listen: expected HOST:PORT, got {listen!r}")
    listen = _PARKED.sub(lambda m: refs[int(m.group(1))], listen)
    try:
        listen = str(expand_env(listen, os.environ, "listen"))
    except ConfigError as exc:
        raise CliError(f"{path}: {exc}") from None
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]*):(\d{1,5})", listen.strip())
    if m is None:
        raise CliError(f"{path}: listen: expected HOST:PORT, got {listen!r}")
    host, port = m.group(1), m.group(2)
    # A wildcard bind address is reached on loopback from the same machine.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    return f"http://{host}:{port}"


def resolve_target(
    url: str | None, key: str | None, config: str | None, env: Mapping[str, str]
) -> Target:
    """The gateway and key to use: `--url`, else the `--config` file's `listen:`, else
    `TOKENWAY_URL`, else the default; `--key`, else `TOKENWAY_API_KEY`, else `OPENAI_API_KEY`."""
    if url:
        base = url
    elif config:
        base = listen_url(config)
    else:
        base = env.get("TOKENWAY_URL") or DEFAULT_URL
    secret = key or env.get("TOKENWAY_API_KEY") or env.get("OPENAI_API_KEY")
    if not secret:
        raise CliError("no API key: pass --key or set TOKENWAY_API_KEY")
    return Target(normalise_url(base), secret)


# --- the input file ---------------------------------------------------------------------------


def _is_batch_line(doc: dict[str, Any]) -> bool:
    # A request body never has these fields; a batch line always has them.
    return "custom_id" in doc or "body" in doc


def prepare(content: bytes, *, source: str, model: str | None, endpoint: str | None) -> Prepared:
    """Batch JSONL from `content`, which is either batch JSONL already (lines with
    `custom_id`, `method`, `url` and `body`) or one request body per line.

    Bodies are wrapped as `line-N` requests (N the 1-based line number) to `endpoint`, with
    `model` put in each body that has none. Batch lines are uploaded as they are, except that
    `model` fills bodies that lack one; the gateway validates them. Blank lines are kept so
    that the gateway's line numbers are the file's. Raises `CliError` naming the first line
    that cannot be used.
    """
    content = content.removeprefix(b"\xef\xbb\xbf")  # a BOM some editors write
    out: list[bytes] = []
    batch_mode: bool | None = None
    first = 0
    count = 0
    for number, raw in enumerate(content.split(b"\n"), start=1):
        text = raw.strip()
        if not text:
            out.append(b"")
            continue
        where = f"{source}:{number}"
        try:
            doc: Any = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise CliError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise CliError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        is_batch = _is_batch_line(doc)
        if batch_mode is None:
            batch_mode, first = is_batch, number
            if endpoint is None:
                url = doc.get("url") if is_batch else None
                endpoint = url if isinstance(url, str) and url else DEFAULT_ENDPOINT
        elif is_batch != batch_mode:
            what = "a batch request line" if is_batch else "a plain request body"
            kind = "batch request lines" if batch_mode else "plain request bodies"
            raise CliError(f"{where}: {what} in a file of {kind} (as on line {first})")
        count += 1
        if is_batch:
            body = doc.get("body")
            if model is not None and isinstance(body, dict) and "model" not in body:
                doc["body"] = {"model": model, **body}
                out.append(msgspec.json.encode(doc))
            else:
                out.append(raw.rstrip(b"\r"))
            continue
        if "model" in doc:
            # kept byte for byte: numbers and key order as the user wrote them
            body_json: Any = msgspec.Raw(text)
        elif model is not None:
            body_json = {"model": model, **doc}
        else:
            raise CliError(f"{where}: the request body has no 'model'; pass --model")
        assert endpoint is not None
        line = {"custom_id": f"line-{number}", "method": "POST", "url": endpoint}
        out.append(msgspec.json.encode({**line, "body": body_json}))
    if count == 0:
        raise CliError(f"{source}: no requests in the file")
    while out and not out[-1]:
        out.pop()
    assert endpoint is not None
    return Prepared(b"\n".join(out) + b"\n", endpoint, count, not batch_mode)


# --- showing a batch --------------------------------------------------------------------------


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(doc: Mapping[str, Any]) -> tuple[int, int, int]:
    c = doc.get("request_counts") or {}
    return int(c.get("completed") or 0), int(c.get("failed") or 0), int(c.get("total") or 0)


def _errors(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    errors = doc.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else None
    return [e for e in data or [] if isinstance(e, dict)]


def _error_line(error: Mapping[str, Any], source: str | None) -> str:
    line = error.get("line")
    where = f"{source or 'line'}{':' if source else ' '}{line}: " if line is not None else ""
    extra = [str(x) for x in (error.get("code"), error.get("param")) if x]
    return f"{where}{error.get('message') or 'invalid'}" + (
        f" [{', '.join(extra)}]" if extra else ""
    )


def format_status(doc: Mapping[str, Any]) -> str:
    """A Batch object as aligned `name: value` lines, times as RFC 3339 UTC."""
    done, failed, total = _counts(doc)
    rows: list[tuple[str, str]] = [
        ("id", str(doc.get("id"))),
        ("status", str(doc.get("status"))),
        ("endpoint", str(doc.get("endpoint"))),
    ]
    if doc.get("model"):
        rows.append(("model", str(doc["model"])))
    rows.append(("requests", f"{total} total, {done} completed, {failed} failed"))
    for name in ("input_file_id", "output_file_id", "error_file_id"):
        rows.append((name, str(doc.get(name) or "-")))
    rows.append(("completion_window", str(doc.get("completion_window"))))
    rows += [(name, _when(doc[name])) for name in _TIMES if doc.get(name) is not None]
    usage = doc.get("usage")
    if isinstance(usage, dict):
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        rows.append(
            (
                "usage",
                f"{usage.get('input_tokens', 0)} input ({cached} cached), "
                f"{usage.get('output_tokens', 0)} output tokens",
            )
        )
    metadata = doc.get("metadata")
    if isinstance(metadata, dict) and metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in metadata.items())))
    width = max(len(name) for name, _ in rows) + 1
    lines = [f"{name + ':':<{width}} {value}" for name, value in rows]
    errors = _errors(doc)
    if errors:
        lines.append("errors:")
        lines += [f"  {_error_line(e, None)}" for e in errors]
    return "\n".join(lines)


# --- talking to the gateway -------------------------------------------------------------------


def _message(exc: openai.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    text = exc.response.text.strip()
    return text[:200] if text else exc.response.reason_phrase


def _describe(exc: openai.OpenAIError, target: Target) -> str:
    """One line for an SDK error."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"the gateway at {target.shown} did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        why = f": {cause}" if cause is not None and str(cause) else ""
        return f"cannot reach the gateway at {target.shown}{why}"
    if isinstance(exc, openai.AuthenticationError):
        return (
            f"the gateway at {target.shown} refused the API key (HTTP 401: {_message(exc)}); "
            "pass --key or set TOKENWAY_API_KEY"
        )
    if isinstance(exc, openai.APIStatusError):
        return f"{_message(exc)} (HTTP {exc.status_code})"
    return f"unexpected answer from the gateway at {target.shown}: {exc}"


def _open(target: Target) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=target.url + "/v1", api_key=target.key, timeout=120.0)


def _dict(obj: Any) -> dict[str, Any]:
    # The SDK's models keep every field the gateway sent, extras (like `model`) included.
    return cast(dict[str, Any], obj.to_dict(mode="json"))


class _Out:
    """The command's two streams; messages on stderr never carry the key."""

    def __init__(self, out: IO[str], err: IO[str], secret: str) -> None:
        self.out, self.err, self._secret = out, err, secret

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        print(text, file=self.err, flush=True)


# --- the verbs --------------------------------------------------------------------------------


def _read_input(path: str) -> tuple[bytes, str, str]:
    """The bytes of FILE (`-`: stdin), its name in messages, and the upload's filename."""
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>", "stdin.jsonl"
    try:
        return Path(path).read_bytes(), path, os.path.basename(path) or "input.jsonl"
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}") from None


def _submit(client: openai.OpenAI, args: argparse.Namespace, io: _Out) -> int:
    import openai

    content, source, filename = _read_input(args.file)
    prep = prepare(content, source=source, model=args.model, endpoint=args.endpoint)
    if prep.wrapped and not filename.endswith(".jsonl"):
        filename += ".jsonl"
    uploaded = client.files.create(file=(filename, prep.data), purpose="batch")
    try:
        # The SDK types both as the literals OpenAI accepts today; the gateway has its own list.
        created = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=cast(Any, prep.endpoint),
            completion_window=cast(Any, args.window),
        )
    except openai.APIStatusError:
        # A batch that was never created leaves no input file behind.
        with contextlib.suppress(openai.OpenAIError):
            client.files.delete(uploaded.id)
        raise
    io.print(created.id)
    if not args.wait:
        io.note(
            f"{created.status}: {prep.requests} requests from {source} (input file "
            f"{uploaded.id}); follow it with `tokenway batch status {created.id}`"
        )
        return 0
    try:
        doc = _follow(client, _dict(created), args.poll_interval, io)
    except KeyboardInterrupt:
        io.note(
            f"{_PROG}: stopped waiting; {created.id} goes on (`tokenway batch status {created.id}`)"
        )
        return 130
    return _report_end(doc, source, io)


def _follow(
    client: openai.OpenAI,
    doc: dict[str, Any],
    interval: float,
    io: _Out,
) -> dict[str, Any]:
    """Poll the batch until it ends, with a progress bar on stderr; the final Batch object."""
    import openai
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class Spinner(SpinnerColumn):
        # an ended batch shows how it ended instead of a spinner frame
        def render(self, task: Any) -> Any:
            mark = task.fields.get("mark")
            return Text(mark) if mark else super().render(task)

    progress = Progress(
        Spinner(),
        TextColumn("{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[completed_n]} completed, {task.fields[failed_n]} failed"),
        TimeElapsedColumn(),
        console=Console(file=io.err),
    )

    def show(task: Any, doc: dict[str, Any], status: str | None = None) -> None:
        done, failed, total = _counts(doc)
        progress.update(
            task,
            description=status or str(doc.get("status")),
            # the total is unknown (0) until validation has counted the lines
            total=total or None,
            completed=done + failed,
            completed_n=done,
            failed_n=failed,
            mark=None if doc.get("status") not in TERMINAL else _MARKS.get(doc["status"], "✗"),
        )

    batch_id = str(doc["id"])
    interval = max(interval, 0.1)
    delay = min(0.25, interval)
    unreachable_since: float | None = None
    with progress:
        task = progress.add_task("", total=None, completed_n=0, failed_n=0, mark=None)
        show(task, doc)
        while doc.get("status") not in TERMINAL:
            time.sleep(delay)
            delay = min(delay * 1.5, interval)
            try:
                doc = _dict(client.batches.retrieve(batch_id))
            except openai.APIConnectionError:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > _UNREACHABLE_GRACE_S:
                    raise
                show(task, doc, "unreachable")
                continue
            unreachable_since = None
            show(task, doc)
    return doc


def _report_end(doc: dict[str, Any], source: str | None, io: _Out) -> int:
    """Print how a batch ended; the exit status (0 only for `completed`)."""
    done, failed, total = _counts(doc)
    status = str(doc.get("status"))
    batch_id = doc.get("id")
    io.print(f"status: {status}")
    io.print(f"requests: {total} total, {done} completed, {failed} failed")
    io.print(f"output_file_id: {doc.get('output_file_id') or '-'}")
    io.print(f"error_file_id: {doc.get('error_file_id') or '-'}")
    if status == "completed":
        if failed:
            io.note(
                f"{_PROG}: {failed} of {total} requests failed; their errors: "
                f"`tokenway batch results {batch_id} --errors`"
            )
        return 0
    if status == "failed":
        errors = _errors(doc)
        plural = "" if len(errors) == 1 else "s"
        io.note(f"{_PROG}: {batch_id} failed validation ({len(errors)} error{plural}):")
        for e in errors:
            io.note(f"  {_error_line(e, source)}")
    elif status == "expired":
        io.note(
            f"{_PROG}: {batch_id} expired before all its requests ran; those that did not "
            "are in the error file as batch_expired"
        )
    else:
        io.note(f"{_PROG}: {batch_id} was {status}")
    return 1


def _status(client: openai.OpenAI, args: argparse.Namespace, io: _Out) -> int:
    doc = _dict(client.batches.retrieve(args.id))
    if args.format == "json":
        io.print(msgspec.json.encode(doc).decode())
    else:
        io.print(format_status(doc))
    return 0


@contextlib.contextmanager
def _sink(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or FILE written whole or not at all (a temporary file renamed into place)."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    tmp = f"{path}.part"
    try:
        with open(tmp, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CliError(f"{path}: cannot write: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _results(client: openai.OpenAI, args: argparse.Namespace, io: _Out) -> int:
    doc = _dict(client.batches.retrieve(args.id))
    kind = "error" if args.errors else "output"
    file_id = doc.get(f"{kind}_file_id")
    status = str(doc.get("status"))
    if not file_id:
        if status not in TERMINAL:
            raise CliError(f"{args.id} is still {status}; its {kind} file comes when it ends")
        if status == "failed":
            why = f"it failed validation: `tokenway batch status {args.id}`"
        elif kind == "error":
            why = "no request failed"
        else:
            why = "no request succeeded"
        io.note(f"{_PROG}: {args.id} is {status} with no {kind} file ({why})")
        with _sink(args.output):
            pass
        return 0 if status == "completed" else 1
    with (
        _sink(args.output) as sink,
        client.files.with_streaming_response.content(str(file_id)) as response,
    ):
        for chunk in response.iter_bytes():
            sink.write(chunk)
    return 0


def _cancel(client: openai.OpenAI, args: argparse.Namespace, io: _Out) -> int:
    doc = _dict(client.batches.cancel(args.id))
    done, failed, total = _counts(doc)
    io.print(f"{doc.get('id')}: {doc.get('status')} ({done} completed, {failed} failed of {total})")
    return 0


_VERBS: dict[str, Callable[[openai.OpenAI, argparse.Namespace, _Out], int]] = {
    "submit": _submit,
    "status": _status,
    "results": _results,
    "cancel": _cancel,
}


def run(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run `tokenway batch VERB` for parsed `args` (`args.verb`, `--url`, `--key`, `--config`
    and the verb's own); the exit status."""
    import openai

    io = _Out(out or sys.stdout, err or sys.stderr, "")
    try:
        target = resolve_target(args.url, args.key, args.config, os.environ if env is None else env)
    except CliError as exc:
        io.note(f"{_PROG}: {exc}")
        return 2
    io = _Out(io.out, io.err, target.key)
    try:
        with _open(target) as client:
            return _VERBS[args.verb](client, args, io)
    except CliError as exc:
        io.note(f"{_PROG}: {exc}")
    except openai.OpenAIError as exc:
        io.note(f"{_PROG}: {_describe(exc, target)}")
    except BrokenPipeError:
        # the reader (`| head`) went away: stop quietly, as other filters do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
    return 2
