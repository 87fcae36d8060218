"""steergate against the server a user would run instead: vLLM's own OpenAI server, side by side.

    .venv/bin/python -m bench.peer                               # 1 and 16 streams, 2 rounds
    .venv/bin/python -m bench.peer --scaling 1,4,16,32,64        # vLLM server vs default gateway, PNG

Servers (same model, the embedded SmolLM2, under the same name; same engine settings: the gateway's
EngineConfig defaults, fp32, compiled unless --eager, its KV cache size and thread binding):
  vllm-server      `python -m vllm.entrypoints.openai.api_server` (no detection, no steering)
  gateway-off      steergate with `middleware: []` (no hooks; prefix caching on, as in vLLM)
  gateway-default  steergate as shipped: detection + light steering (the shipped default policy)
  gateway-strong   the same gateway, every request asking for {"steering": {"tier": "strong"}}
Each phase: one target at one concurrency, `--requests` streamed chat completions of exactly
`--tokens` tokens (ignore_eos) with the official openai client (at least two waves: requests are
raised to twice the concurrency). Phases run one at a time, interleaved: every round runs every
target at each concurrency back to back, in reversed order on odd rounds (drift cancels). Each
server gets a warm-up first; prompts are unique per phase (vLLM's prefix cache sees only the
shared chat-template prefix, as with real traffic). Reported: medians over rounds of tokens/s,
TTFT p50/p95 and inter-token latency p50/p95 (per request: (last token - first) / (tokens - 1)),
each as a ratio to the vLLM server, and the issue-13 goals. --trace adds the gateway's per-stage
TTFT breakdown (STEERGATE_TRACE_TIMINGS). --profile DIR samples every Python process with py-spy
during each phase (bench/py_profile.py) and prints where each one's CPU went. Writes OUT.json (and
OUT.png with --scaling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import prompts
from bench.gateway import start_local_gateway, start_vllm_server
from bench.peer_stats import (
    PEER,
    PhaseRun,
    RequestTiming,
    compare,
    format_stages,
    format_table,
    stage_medians,
    summarize,
)
from bench.py_profile import Profiler, format_report
from middleware.embedded import EMBEDDED_MODEL_NAME
from serving.config import EngineConfig, ModelConfig
from serving.timing_trace import STAGES

__all__ = ["TARGETS", "Target", "main"]

# What one server needs in memory (engine, KV cache, Ray or the API server), to decide whether all
# servers can stay up for the whole run.
SERVER_GIB = 5.0
# Idle vLLM CPU engines take CPU from the one being measured (most likely their workers polling shared
# memory; not profiled). On this 2-core machine (2026-11-26) vLLM's server made 60 tok/s at 16 streams
# with three servers up and 88 alone. Below this many cores, one server at a time.
TOGETHER_MIN_CPUS = 16

@dataclass(frozen=True)
class Target:
    name: str
    server: str  # which server it runs on: "vllm", "gateway-off" or "gateway-default"
    steering: dict[str, Any] | None  # the request's `steering` field
    tier: str | None  # the tier the stream's `safety` annotation must report (None: no annotation)


TARGETS = {t.name: t for t in [
    Target(PEER, "vllm", None, None),
    Target("gateway-off", "gateway-off", None, "off"),
    Target("gateway-default", "gateway-default", None, "light"),
    Target("gateway-strong", "gateway-default", {"tier": "strong"}, "strong"),
]}


async def run_phase(url: str, model: str, target: Target, texts: list[str], tokens: int,
                    concurrency: int) -> tuple[float, list[RequestTiming]]:
    """Stream every text as a chat completion at `concurrency`; (wall seconds, per-request timings)."""
    import openai

    extra: dict[str, Any] = {"ignore_eos": True} | ({"steering": target.steering} if target.steering else {})
    sem = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600, max_retries=0) as client:
        async def one(text: str) -> RequestTiming:
            async with sem:
                start = time.monotonic()
                first = last = None
                n, tier = 0, None
                stream = await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": text}], max_tokens=tokens, temperature=0,
                    stream=True, stream_options={"include_usage": True}, extra_body=extra)
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        last = time.monotonic()
                        first = first or last
                    if chunk.usage:
                        n = chunk.usage.completion_tokens
                    safety = (chunk.model_extra or {}).get("safety")
                    tier = safety["tier"] if safety else tier
            if n != tokens or first is None or last is None:
                raise RuntimeError(f"{target.name}: a request got {n} tokens, not {tokens} (ignore_eos)")
            if tier != target.tier:  # the phase must measure what its name says
                raise RuntimeError(f"{target.name}: stream reported steering tier {tier!r}, expected {target.tier!r}")
            return RequestTiming(n, first - start, (last - first) / (n - 1) if n > 1 else None)

        started = time.monotonic()
        timings = await asyncio.gather(*(one(t) for t in texts))
        return time.monotonic() - started, list(timings)


def _gateway_config(model: ModelConfig, middleware_off: bool, directory: Path) -> Path:
    """A serving config with the model's engine settings, and no middleware for the 'off' gateway."""
    entry: dict[str, Any] = {"name": model.name, "engine": model.engine.model_dump()}
    if middleware_off:
        entry["middleware"] = []
    path = directory / f"gateway-{'off' if middleware_off else 'default'}.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    return path


class Servers:
    """Starts servers by name and stops every one it started, whatever happens."""

    def __init__(self, model: ModelConfig, stack: ExitStack, trace_file: Path | None) -> None:
        self.model = model
        self.stack = stack
        self.trace_file = trace_file
        self.configs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="steergate-peer-")))
        self.running: dict[str, tuple[str, Callable[[], None]]] = {}

    def start(self, server: str) -> str:
        if server not in self.running:
            if server == "vllm":
                url, stop = start_vllm_server(self.model)
            else:
                config = _gateway_config(self.model, server == "gateway-off", self.configs)
                env = {"STEERGATE_TRACE_TIMINGS": str(self.trace_file)} if self.trace_file else {}
                url, stop = start_local_gateway(config=config, env=env)
            self.running[server] = (url, stop)
            self.stack.callback(self.stop, server)
        return self.running[server][0]

    def stop(self, server: str) -> None:
        if server in self.running:
            print(f"stopping {server}", file=sys.stderr, flush=True)
            self.running.pop(server)[1]()


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def _read_traces(trace_file: Path | None, offset: int) -> tuple[list[dict[str, float]], int]:
    """The trace lines the gateway appended since `offset`, as stage -> seconds since arrival."""
    if trace_file is None or not trace_file.exists():
        return [], offset
    with trace_file.open() as f:
        f.seek(offset)
        lines = f.read()
        offset = f.tell()
    traces = []
    for line in lines.splitlines():
        stamps = json.loads(line)
        arrived = stamps.pop("arrived")
        traces.append({stage: t - arrived for stage, t in stamps.items()})
    return traces, offset


def _plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for target, style in ((PEER, "o-"), ("gateway-default", "s-")):
        mine = [r for r in rows if r["target"] == target]
        cs = [r["concurrency"] for r in mine]
        ax1.plot(cs, [r["tok_s"] for r in mine], style, label=target)
        ax2.plot(cs, [r["ttft_p95_ms"] for r in mine], style, label=target)
        if target != PEER:
            for r in mine:
                ax1.annotate(f"{r['x_tok_s']:.2f}x", (r["concurrency"], r["tok_s"]), textcoords="offset points",
                             xytext=(0, -14), ha="center", fontsize=8)
                ax2.annotate(f"{r['x_ttft_p95_ms']:.2f}x", (r["concurrency"], r["ttft_p95_ms"]),
                             textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    for ax, label in ((ax1, "tokens/s (median over rounds)"), (ax2, "TTFT p95, ms (median over rounds)")):
        ax.set_ylim(0, max(line.get_ydata().max() for line in ax.get_lines()) * 1.12)  # room for labels
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title + "  (labels: gateway / vLLM server)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _concurrencies(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers, e.g. 1,16")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per phase (at least 2x concurrency)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request (ignore_eos)")
    parser.add_argument("--concurrency", type=_concurrencies, default=[1, 16], help="streams, e.g. 1,16")
    parser.add_argument("--scaling", type=_concurrencies, help="instead: vLLM server vs default gateway at these "
                        "streams (e.g. 1,4,16,32,64), plotted to OUT.png")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--eager", action="store_true", help="enforce_eager everywhere (skips ~80 s compiles)")
    parser.add_argument("--servers", choices=["auto", "together", "one-at-a-time"], default="auto",
                        help="keep every server up for the whole run, or start each for its phases only "
                        f"(auto: together when {SERVER_GIB:.0f} GiB per server and "
                        f"{TOGETHER_MIN_CPUS} CPUs are there)")
    parser.add_argument("--trace", action="store_true", help="print the gateway's per-stage TTFT breakdown")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy every Python process during "
                        "each phase into DIR/TARGET-STREAMS-rROUND and print each process's top functions "
                        "(sampling costs CPU: profiled phases' timings do not compare with unprofiled ones)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/peer"), help="writes OUT.json (OUT.png)")
    args = parser.parse_args(argv)

    names = [PEER, "gateway-default"] if args.scaling else [n.strip() for n in args.targets.split(",")]
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {','.join(TARGETS)}")
    targets = [TARGETS[n] for n in names]
    concurrencies = args.scaling or args.concurrency
    # The engine settings every server gets; middleware is each gateway config's business.
    model = ModelConfig(name=EMBEDDED_MODEL_NAME, engine=EngineConfig(enforce_eager=args.eager), middleware=[])
    server_names = list(dict.fromkeys(t.server for t in targets))
    together = args.servers == "together" or (
        args.servers == "auto" and _mem_available_gib() >= SERVER_GIB * len(server_names)
        and (os.cpu_count() or 1) >= TOGETHER_MIN_CPUS)
    phases_total = args.rounds * len(concurrencies) * len(targets)
    print(f"{len(targets)} targets x streams {concurrencies} x {args.rounds} rounds = {phases_total} phases; "
          f"{max(args.requests, 2 * max(concurrencies))} requests max x {args.tokens} tokens; "
          f"{'eager' if args.eager else 'compiled'}; servers {'together' if together else 'one at a time'}; "
          f"{os.cpu_count()} CPUs", flush=True)

    # SIGTERM unwinds like Ctrl-C, so every server started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    runs: list[PhaseRun] = []
    trace_file = Path(tempfile.mkstemp(prefix="steergate-trace-", suffix=".jsonl")[1]) if args.trace else None
    trace_offset = 0
    done = 0
    profiles: list[Path] = []
    with ExitStack() as stack:
        if trace_file is not None:
            stack.callback(trace_file.unlink, missing_ok=True)
        servers = Servers(model, stack, trace_file)
        if together:
            for name in server_names:
                servers.start(name)
        warmed: set[str] = set()  # targets warmed up since their server started

        def ready(target: Target) -> str:
            url = servers.start(target.server)
            if target.name not in warmed:
                warm = [f"{p} (warm-up)" for p in prompts(max(concurrencies))]
                print(f"warming up {target.name}", file=sys.stderr, flush=True)
                asyncio.run(run_phase(url, model.name, target, warm, args.tokens, max(concurrencies)))
                warmed.add(target.name)
            return url

        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else targets[::-1]
            # One at a time: a server's phases run together (all concurrencies), then it stops.
            groups = [order] if together else [[t for t in order if t.server == s]
                                               for s in dict.fromkeys(t.server for t in order)]
            for group in groups:
                urls = {t.name: ready(t) for t in group}
                for c in concurrencies:
                    for target in group:
                        texts = [f"{p} (phase {done})" for p in prompts(max(args.requests, 2 * c))]
                        _, trace_offset = _read_traces(trace_file, trace_offset)  # not the warm-up's
                        profiler = None
                        if args.profile:
                            profiler = Profiler(args.profile / f"{target.name}-{c}-r{rnd + 1}")
                            profiler.start()
                        seconds, timings = asyncio.run(run_phase(urls[target.name], model.name, target, texts,
                                                                 args.tokens, c))
                        if profiler:
                            profiler.stop()
                            profiles.append(profiler.directory)
                        traces, trace_offset = _read_traces(trace_file, trace_offset)
                        runs.append(PhaseRun(target.name, c, rnd, seconds, timings, traces))
                        done += 1
                        s = summarize([runs[-1]])[(target.name, c)]
                        print(f"[{done}/{phases_total}] round {rnd + 1} {c:>3} streams {target.name:<16} "
                              f"{s['tok_s']:7.1f} tok/s  TTFT p50 {s['ttft_p50_ms']:5.0f} ms p95 "
                              f"{s['ttft_p95_ms']:5.0f} ms  ITL p50 {s['itl_p50_ms']:5.1f} ms  ({seconds:.1f} s)",
                              flush=True)
                if not together:
                    for server in dict.fromkeys(t.server for t in group):
                        servers.stop(server)
                    warmed -= {t.name for t in group}

    rows = compare(summarize(runs), [t.name for t in targets])
    print(f"\nmedians over {args.rounds} rounds; ratios to {PEER}; {args.tokens} tokens per request\n")
    print(format_table(rows))
    stages = stage_medians(runs)
    if stages:
        print("\nper-stage TTFT breakdown (gateway, STEERGATE_TRACE_TIMINGS):\n" + format_stages(stages, STAGES))
    if profiles:
        report = "\n\n".join(format_report(d) for d in profiles)
        (args.profile / "report.md").write_text(report + "\n")
        print(f"\nwhere each process's CPU went (py-spy, {args.profile / 'report.md'}):\n\n{report}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(), "rows": rows, "runs": [asdict(r) for r in runs],
        "stages": [{"target": t, "concurrency": c, "median_ms": m} for (t, c), m in stages.items()],
    }, indent=1))
    written = [args.out.with_suffix(".json")]
    if args.scaling:
        _plot(rows, args.out.with_suffix(".png"), f"bench/peer.py --scaling, {args.tokens} tokens per request, "
              f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
        written.append(args.out.with_suffix(".png"))
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
