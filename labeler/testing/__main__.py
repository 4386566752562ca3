"""`python -m labeler.testing serve`: the teacher server as its own process.

Benchmarks need the server off the client's process so the two do not share a GIL. The
first stdout line is the URL (flushed at once), so a parent can start it with `--port 0`
and read where it landed. Every `ServerConfig` field is a flag (`latency_s` is
`--latency`, `error_rate` is `--error-rate`); the API key may come from the environment
(`LABELER_TEACHER_API_KEY`) so that it stays out of process listings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from labeler import aio
from labeler.testing.config import ServerConfig, patched
from labeler.testing.server import serve

_SCALARS = {
    "int": int,
    "float": float,
    "str": str,
    "int | None": int,
    "float | None": float,
    "str | None": str,
    "list[str] | None": str,  # comma-separated
}
_SPECIAL = {"labels", "shared_prefix_labels", "status_for", "responder", "log_requests", "echo_key"}


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def _status_rule(text: str) -> tuple[str, int]:
    needle, sep, status = text.rpartition("=")
    if not sep or not status.isdigit():
        raise argparse.ArgumentTypeError(f"expected SUBSTRING=STATUS, got {text!r}")
    return needle, int(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labeler.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the teacher server until interrupted")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=0, help="0 picks a free port")
    run.add_argument("--labels", help="comma-separated labels to answer with")
    run.add_argument(
        "--shared-prefix-labels",
        help="comma-separated multi-token labels sharing first words, answered from a "
        "known token-level distribution (completion prompts ending in 'Answer:')",
    )
    run.add_argument(
        "--status-for",
        action="append",
        type=_status_rule,
        default=[],
        metavar="SUBSTR=STATUS",
        help="prompts containing SUBSTR always get STATUS (repeatable)",
    )
    run.add_argument(
        "--log-requests",
        action="store_true",
        help="keep a record per request (off by default to bound memory)",
    )
    run.add_argument(
        "--echo-key",
        action="store_true",
        help="401 answers quote the credential sent, as some gateways do",
    )
    for f in fields(ServerConfig):
        if f.name in _SPECIAL:
            continue
        default = None if f.default is MISSING else f.default
        if str(f.type) == "bool":  # a switch: given, it is on
            run.add_argument(
                _flag(f.name),
                dest=f.name,
                action="store_const",
                const=True,
                default=None,
                help=f.metadata.get("help", f.name),
            )
            continue
        kind = _SCALARS[str(f.type)]
        run.add_argument(
            _flag(f.name),
            dest=f.name,
            type=kind,
            default=None,
            help=f"{f.metadata.get('help', f.name)} (default: {default})",
        )
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    changes: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in fields(ServerConfig)
        if f.name not in _SPECIAL and getattr(args, f.name) is not None
    }
    if args.labels:
        changes["labels"] = [x.strip() for x in args.labels.split(",") if x.strip()]
    if args.shared_prefix_labels:
        changes["shared_prefix_labels"] = [
            x.strip() for x in args.shared_prefix_labels.split(",") if x.strip()
        ]
    if args.status_for:
        changes["status_for"] = args.status_for
    if "api_key" not in changes and os.environ.get("LABELER_TEACHER_API_KEY"):
        changes["api_key"] = os.environ["LABELER_TEACHER_API_KEY"]
    changes["log_requests"] = args.log_requests
    changes["echo_key"] = args.echo_key
    return patched(ServerConfig(), changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def announce(url: str) -> None:
        print(url, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        aio.run(serve(config, args.host, args.port, on_ready=announce))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
