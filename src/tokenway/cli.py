"""The `tokenway` command.

tokenway serve [--config FILE] [--host H] [--port P] [--workers N]
tokenway sim [--config FILE]
tokenway usage export [--config FILE] --format jsonl|csv [--since T]
tokenway keys create NAME|list|rotate NAME|revoke NAME [--config FILE]
tokenway config check FILE | tokenway config demo
tokenway batch submit FILE [--model M] [--wait] | status ID | results ID | cancel ID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from tokenway.config.load import Config, ConfigError, load_config


def _load(path: str | None) -> Config:
    if path:
        return load_config(path)
    from tokenway.config.demo import demo_config

    return demo_config()


def _install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - Windows
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    workers = args.workers
    if workers < 1:
        print("tokenway: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return _serve(config, args, host, port, workers=1, index=0)
    if not config.raw.storage.state.startswith(("redis://", "rediss://", "unix://")):
        print(
            "tokenway: --workers > 1 needs shared state (storage.state: redis://...), or each "
            "worker would enforce limits and budgets on its own; this config has "
            f"storage.state: {config.raw.storage.state}",
            file=sys.stderr,
        )
        return 2
    if config.raw.sim:
        print(
            "tokenway: --workers > 1 cannot start simulated providers in every worker; "
            "run them with `tokenway sim --config FILE` and point providers at them",
            file=sys.stderr,
        )
        return 2
    from tokenway.workers import supervise

    return supervise(workers, lambda i: _serve(config, args, host, port, workers=workers, index=i))


def _serve(
    config: Config, args: argparse.Namespace, host: str, port: int, *, workers: int, index: int
) -> int:
    import uvicorn

    from tokenway.gateway.app import Gateway
    from tokenway.runtime import Runtime
    from tokenway.telemetry.log import setup_logging

    setup_logging(config.raw.server.log_level)
    rt = Runtime(config, workers=workers)
    app = Gateway(rt)
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
        # Per-request work tokenway does not need: it trusts no forwarding headers and
        # names itself in its own headers.
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(server_config)

    @contextlib.contextmanager
    def graceful_signals() -> Iterator[None]:
        # uvicorn re-raises the signal after its shutdown, so the process would die by it;
        # tokenway drains (streams finish, ledger flushes) and then exits 0.
        loop = asyncio.get_running_loop()

        def drain(sig: int) -> None:
            rt.draining = True  # /readyz answers 503 while streams finish
            server.handle_exit(sig, None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, drain, sig)
        yield

    server.capture_signals = graceful_signals  # type: ignore[method-assign]

    sockets = None
    if workers > 1:
        from tokenway.workers import reuseport_socket

        sockets = [reuseport_socket(host, port)]

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=sockets))
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.02)
        if server.started and index == 0:
            _banner(config, host, port, demo=args.config is None, workers=workers)
        await task

    _install_uvloop()
    asyncio.run(run())
    return 0


def _banner(config: Config, host: str, port: int, *, demo: bool, workers: int = 1) -> None:
    url = f"http://{host}:{port}"
    lines = [f"tokenway listening on {url}" + (f" ({workers} workers)" if workers > 1 else "")]
    if demo:
        from tokenway.config.demo import DEMO_KEY

        lines += [
            "demo mode: simulated providers on loopback, ledger in ./tokenway-data/ledger.db",
            f"demo key: {DEMO_KEY}",
            f"models: {', '.join(config.models)}",
            "try:",
            f"  curl {url}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' "
            "-H 'content-type: application/json' "
            '-d \'{"model":"demo-chat","messages":[{"role":"user","content":"hi"}]}\'',
            f"  OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={DEMO_KEY} python your_app.py",
        ]
    print("\n".join(lines), flush=True)


def cmd_sim(args: argparse.Namespace) -> int:
    from tokenway.config.demo import demo_config
    from tokenway.sim import serve_forever

    config = load_config(args.config) if args.config else demo_config()
    if not config.raw.sim:
        print("tokenway sim: the config has no 'sim' section", file=sys.stderr)
        return 2
    _install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(config.raw.sim))
    return 0


def cmd_usage_export(args: argparse.Namespace) -> int:
    from tokenway.accounting.export import export, parse_since

    config = _load(args.config)
    since = parse_since(args.since) if args.since else None
    export(config.raw.storage.ledger, args.format, since, sys.stdout)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import msgspec

    from tokenway.accounting.export import parse_since
    from tokenway.accounting.ledger import read_attempts, read_requests
    from tokenway.reports.spend import render_table, spend_report

    config = _load(args.config)
    since = parse_since(args.since) if args.since else None
    until = parse_since(args.until) if args.until else None
    try:
        rows = read_requests(config.raw.storage.ledger, since)
        if until is not None:  # every report covers [since, until)
            cutoff = until.timestamp()
            rows = (r for r in rows if float(r["ts"]) < cutoff)
        if args.context:
            from tokenway.reports.context import context_use, render_context

            windows = {m.name: m.context_window for m in config.models.values()}
            uses = context_use(rows, windows)
            if args.format == "json":
                sys.stdout.write(msgspec.json.encode(uses).decode() + "\n")
            else:
                print(render_context(uses))
            return 0
        if args.html:
            from tokenway.accounting.prices import PriceBook
            from tokenway.reports.cache_margin import margin_curves
            from tokenway.reports.context import context_use
            from tokenway.reports.html import render_html
            from tokenway.reports.savings import savings_report

            kept = list(rows)
            groups, total = spend_report(kept, "model")
            prices = PriceBook(config.raw.prices, fx=config.raw.fx)
            curves = margin_curves(kept, prices)
            windows = {m.name: m.context_window for m in config.models.values()}
            saved = savings_report(
                kept, read_attempts(config.raw.storage.ledger, since=since), prices
            )
            page = render_html(groups, total, curves, context_use(kept, windows), savings=saved)
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(page)
            print(f"wrote {args.html} ({total.requests} requests)")
            return 0
        if args.savings:
            from tokenway.accounting.prices import PriceBook
            from tokenway.reports.savings import render_savings, savings_report

            saved = savings_report(
                rows,
                read_attempts(config.raw.storage.ledger, since=since),
                PriceBook(config.raw.prices, fx=config.raw.fx),
                by=args.by,
                until=until,
            )
            if args.format == "json":
                sys.stdout.write(msgspec.json.encode(saved.to_dict()).decode() + "\n")
            else:
                print(render_savings(saved))
            return 0
        if args.cache_margin:
            from tokenway.accounting.prices import PriceBook
            from tokenway.reports.cache_margin import margin_curves, render_curves

            curves = margin_curves(rows, PriceBook(config.raw.prices, fx=config.raw.fx))
            if args.format == "json":
                sys.stdout.write(msgspec.json.encode(curves).decode() + "\n")
            else:
                print(render_curves(curves))
            return 0
        groups, total = spend_report(rows, args.by, until)
    except FileNotFoundError as exc:
        print(f"tokenway report: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tokenway report: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        doc = {"by": args.by, "groups": [g.to_dict() for g in groups], "total": total.to_dict()}
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        print(render_table(groups, total, args.by))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Runtime keys in the store next to the ledger: create, list, rotate, revoke."""
    import getpass
    import json
    import time

    from tokenway.auth.store import KeyExists, KeySpec, NoSuchKey, open_key_store
    from tokenway.store import StoreUnavailable

    config = _load(args.config)
    store = open_key_store(config.raw.storage.ledger)
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.verb == "list":
            for k in store.load():
                print(json.dumps(k.public()))
            return 0
        if args.verb == "create":
            if args.name in {k.name for k in config.keys}:
                print(f"tokenway keys: {args.name!r} is a config-file key", file=sys.stderr)
                return 2
            unknown = [m for m in args.models or [] if m not in config.models]
            if unknown:
                print(f"tokenway keys: unknown model {unknown[0]!r}", file=sys.stderr)
                return 2
            spec = KeySpec(
                team=args.team,
                models=args.models,
                rpm=args.rpm,
                tpm=args.tpm,
                budget_usd=args.budget_usd,
                budget_period=args.budget_period,
                priority=args.priority,
            )
            expires = time.time() + _duration_s(args.expires_in) if args.expires_in else None
            key, secret = store.create(args.name, spec, actor, expires)
            print(json.dumps({"key": key.public(), "secret": secret}))
            print("the secret is shown once: store it now", file=sys.stderr)
            return 0
        if args.verb == "rotate":
            print(json.dumps({"name": args.name, "secret": store.rotate(args.name, actor)}))
            return 0
        store.revoke(args.name, actor)
        print(json.dumps({"name": args.name, "revoked": True}))
        return 0
    except KeyExists as exc:
        print(f"tokenway keys: {exc}", file=sys.stderr)
    except NoSuchKey:
        print(f"tokenway keys: no stored key named {args.name!r}", file=sys.stderr)
    except StoreUnavailable as exc:
        from tokenway.telemetry.log import redact

        print(f"tokenway keys: the key store is unavailable: {redact(str(exc))}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 2


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise SystemExit(
            f"tokenway keys: expected a duration like 30d or 12h, got {text!r}"
        ) from None


def cmd_batch(args: argparse.Namespace) -> int:
    """`tokenway batch ...`: the Batch API client, in `tokenway.batch.client`."""
    from tokenway.batch.client import run

    return run(args)


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(
        f"{args.file}: ok ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.keys)} keys)"
    )
    return 0


def cmd_config_demo(args: argparse.Namespace) -> int:
    import yaml

    from tokenway.config.demo import demo_document

    sys.stdout.write(yaml.safe_dump(demo_document(), sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenway", description="An LLM gateway.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the gateway (the embedded demo without --config)")
    s.add_argument("--config", help="YAML config file")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("sim", help="run the simulated providers of a config (or the demo's)")
    s.add_argument("--config")
    s.set_defaults(fn=cmd_sim)

    u = sub.add_parser("usage", help="usage ledger").add_subparsers(dest="verb", required=True)
    s = u.add_parser("export", help="print one row per request")
    s.add_argument("--config")
    s.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    s.add_argument("--since", help="RFC 3339 time, date, or relative like 24h / 7d")
    s.set_defaults(fn=cmd_usage_export)

    s = sub.add_parser("report", help="spend, revenue, margin and cache hit rate by a dimension")
    s.add_argument("--config")
    s.add_argument("--since", help="RFC 3339 time, date, or relative like 24h / 7d")
    s.add_argument("--until", help="RFC 3339 time, date, or relative like 1h")
    s.add_argument(
        "--by",
        default="model,mode",
        help="key, team, model, provider, provider_model, mode, api, status, end_user, task, "
        "or tag:NAME; several separated by commas split each figure (default: model,mode)",
    )
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument(
        "--context", action="store_true", help="context-window use per model instead of spend"
    )
    s.add_argument(
        "--cache-margin",
        action="store_true",
        help="per model, gross margin re-costed at 0-100%% prompt-cache hit rates",
    )
    s.add_argument(
        "--savings",
        action="store_true",
        help="per mode (realtime, batch, async), spend against the same attempts at realtime "
        "prices and the saving; --by splits each mode further (--by mode: modes only)",
    )
    s.add_argument("--html", metavar="OUT", help="write a self-contained HTML report with charts")
    s.set_defaults(fn=cmd_report)

    k = sub.add_parser("keys", help="runtime keys: create, list, rotate, revoke")
    kv = k.add_subparsers(dest="verb", required=True)
    kl = kv.add_parser("list")
    kl.add_argument("--config")
    kc = kv.add_parser("create")
    kc.add_argument("name")
    kc.add_argument("--config")
    kc.add_argument("--team")
    kc.add_argument("--models", type=lambda v: [m for m in v.split(",") if m])
    kc.add_argument("--rpm", type=int)
    kc.add_argument("--tpm", type=int)
    kc.add_argument("--budget-usd", type=float)
    kc.add_argument("--budget-period", choices=["total", "day", "month"], default="total")
    kc.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    kc.add_argument("--expires-in", help="a duration: 30d, 12h, 90m")
    for verb in ("rotate", "revoke"):
        kr = kv.add_parser(verb)
        kr.add_argument("name")
        kr.add_argument("--config")
    k.set_defaults(fn=cmd_keys)

    _add_batch(sub)

    c = sub.add_parser("config", help="config tools").add_subparsers(dest="verb", required=True)
    s = c.add_parser("check", help="validate a config file")
    s.add_argument("file")
    s.set_defaults(fn=cmd_config_check)
    s = c.add_parser("demo", help="print the embedded demo config")
    s.set_defaults(fn=cmd_config_demo)
    return p


def _add_batch(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the gateway (default: $TOKENWAY_URL, else http://127.0.0.1:4141)"
    )
    common.add_argument(
        "--key", help="API key (default: $TOKENWAY_API_KEY, else $OPENAI_API_KEY; prefer those)"
    )
    common.add_argument(
        "--config", metavar="FILE", help="talk to the gateway at this config file's listen:"
    )
    b = sub.add_parser("batch", help="submit and follow Batch API jobs on a running gateway")
    bv = b.add_subparsers(dest="verb", required=True)
    s = bv.add_parser(
        "submit",
        parents=[common],
        help="upload a JSONL file and start a batch; prints its id",
        description="FILE is batch JSONL (custom_id, method, url, body per line) or one "
        "request body per line, which is wrapped as requests line-N.",
    )
    s.add_argument("file", metavar="FILE", help="JSONL input; - reads stdin")
    s.add_argument("--model", help="model for each request body that names none")
    s.add_argument(
        "--endpoint",
        help="default: the url of a batch file's lines, else /v1/chat/completions",
    )
    s.add_argument("--window", default="24h", help="completion window (default: 24h)")
    s.add_argument(
        "--wait", action="store_true", help="show progress until it ends; exit 0 if completed"
    )
    s.add_argument("--poll-interval", type=float, default=2.0, help=argparse.SUPPRESS)
    s = bv.add_parser("status", parents=[common], help="a batch's status, counts and times")
    s.add_argument("id", metavar="ID")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s = bv.add_parser("results", parents=[common], help="write a batch's output file's JSONL")
    s.add_argument("id", metavar="ID")
    s.add_argument("--errors", action="store_true", help="the error file instead")
    s.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    s = bv.add_parser("cancel", parents=[common], help="cancel a batch")
    s.add_argument("id", metavar="ID")
    b.set_defaults(fn=cmd_batch)


def main(argv: list[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except ConfigError as exc:
        print(f"tokenway: config error: {exc}", file=sys.stderr)
        return 2
    except NotImplementedError as exc:  # a backend or verb this build does not have
        print(f"tokenway: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
