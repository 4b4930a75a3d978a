"""Command line: ``python -m airflow_provider_smartflows.emulator`` / ``smartflows-emulator``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from typing import Any

from airflow_provider_smartflows.emulator.app import build_app
from airflow_provider_smartflows.emulator.description import route_names
from airflow_provider_smartflows.emulator.scenario import Scenario, ScenarioError
from airflow_provider_smartflows.emulator.server import resolve_settings, start_site
from airflow_provider_smartflows.emulator.state import EmulatorState
from airflow_provider_smartflows.emulator.surface import DESCRIPTIONS, ApiSurface


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smartflows-emulator", description="Local Smart Flows server for tests and demos."
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8099, help="port (default 8099; 0 picks a free one)")
    p.add_argument("--scenario", help="scenario file (JSON): flows, API keys, faults")
    p.add_argument(
        "--speedup", type=float, default=None, help="time factor for flow steps (default: scenario or 1)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the fault RNG (default: scenario or 0)")
    p.add_argument("--quiet", action="store_true", help="do not print one line per request")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM); needs --tls-key")
    p.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    p.add_argument(
        "--api-docs",
        choices=DESCRIPTIONS,
        default="v3",
        help="serve the API description as OpenAPI 3 (/v3/api-docs), Swagger 2.0 (/v2/api-docs) or not at all",
    )
    p.add_argument(
        "--drop-route",
        action="append",
        default=[],
        metavar="'METHOD /path'",
        help="act as a server without this route, e.g. 'DELETE /api/v1/flows/executions/{exec_id}' (repeatable)",
    )
    p.add_argument("--page-cap", type=int, default=None, help="hold at most this many items per list page")
    return p


def _print_error(entry: dict[str, Any]) -> None:
    """An emulator bug, on stderr as it happens (also kept for ``GET /_emulator/errors``)."""
    print(
        f"smartflows-emulator: internal error (answered 500) on {entry['method']} {entry['path']}:\n"
        f"{entry['traceback'].rstrip()}",
        file=sys.stderr,
        flush=True,
    )


async def _serve(
    scenario: Scenario,
    speedup: float,
    seed: int,
    host: str,
    port: int,
    quiet: bool,
    ssl_context: ssl.SSLContext | None = None,
    api: ApiSurface | None = None,
) -> None:
    access_log = None
    if not quiet:
        # aiohttp's access log: method, path and status; the API key is a header, never printed.
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        access_log = logging.getLogger("aiohttp.access")
    state = EmulatorState(scenario, speedup, seed, api)
    state.error_listener = _print_error
    runner, url = await start_site(state, host, port, access_log, ssl_context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: whoever reads the URL line may signal us right away.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin = next(k.key for k in scenario.api_keys if k.role == "admin" and not k.revoked)
    print(f"Smart Flows emulator listening on {url}", flush=True)
    print(f"API key (admin): {admin}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    if not quiet:
        print("Smart Flows emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario, speedup, seed = resolve_settings(args.scenario, args.speedup, args.seed)
        api = ApiSurface.parse(
            {"description": args.api_docs, "drop_routes": args.drop_route, "page_cap": args.page_cap},
            route_names(build_app(EmulatorState(scenario, speedup, seed))),
        )
    except (ScenarioError, ValueError) as exc:
        print(f"smartflows-emulator: error: {exc}", file=sys.stderr)
        return 2
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("smartflows-emulator: error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"smartflows-emulator: error: cannot load the TLS certificate: {exc}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_serve(scenario, speedup, seed, args.host, args.port, args.quiet, ssl_context, api))
    except OSError as exc:
        print(f"smartflows-emulator: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
