"""`steergate` command line. `steergate serve` is what `make serve` runs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from middleware.settings import HEALTH_TIMEOUT_S
from serving.config import GatewayConfig

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from serving.launcher import start_gateway, stop_gateway
    from serving.processes import PortBusy

    config = GatewayConfig.from_file(args.config) if args.config else GatewayConfig()
    policies = str(Path(args.policies).resolve()) if args.policies else None
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("policies", policies)) if v is not None}
    if overrides:
        config = config.model_copy(update=overrides)
    if config.policies:
        # Fail here, with every problem and its field path, rather than in a replica that never starts.
        from policies import PolicyFileError, load_policies

        try:
            load_policies(config.policies)
        except PolicyFileError as e:
            print(f"steergate: invalid policy file\n{e}", file=sys.stderr)
            return 2
    # SIGTERM behaves like Ctrl-C: it interrupts start-up or serving, and `finally` stops Ray
    # and the engine cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print(f"steergate: starting {', '.join(m.name for m in config.models)} (first start converts and "
          "compiles the model: a few minutes)", flush=True)
    code = 0
    try:
        url = start_gateway(config, health_timeout_s=HEALTH_TIMEOUT_S)
        print(f"steergate: ready on {url}  (OpenAI base_url {url}/v1; Ctrl-C stops)", flush=True)
        threading.Event().wait()
    except PortBusy as e:
        print(f"steergate: cannot start: {e}", file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print("steergate: stopping", flush=True)
    finally:
        # A second Ctrl-C (or the rest of a group signal) must not cut the stop short: it is bounded
        # (GatewayConfig.front.drain_s plus a margin) and leaves nothing running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_gateway()
    # Everything is stopped; skip the interpreter's teardown, which spends seconds garbage-collecting
    # the Ray, vLLM and torch objects this process imported (measured: ~5 s of a ~18 s stop).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _policy_check(args: argparse.Namespace) -> int:
    from policies.check import main as check_main

    return check_main([args.file, *(["--explain"] if args.explain else [])])


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steergate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the gateway (Ray Serve + vLLM) in the foreground")
    serve.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from config: 8000)")
    serve.add_argument("--config", help="serving config YAML (see deploy/gateway.yaml)")
    serve.add_argument("--policies", help="policy file (see deploy/policies.yaml); default: the shipped one")
    serve.set_defaults(func=_serve)
    policy = sub.add_parser("policy", help="policy file tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file and explain it (exit 1 on errors)")
    check.add_argument("file", help="policy file to check")
    check.add_argument("--explain", action="store_true", help="print every resolved policy in full")
    check.set_defaults(func=_policy_check)
    from discovery.cli import add_commands
    from evals.cli import add_commands as add_eval_commands
    from reports.cli import add_commands as add_report

    add_commands(sub)
    add_report(sub)
    add_eval_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
