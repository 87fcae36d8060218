"""Load and backpressure: concurrent streaming clients against a gateway on this machine, in phases.

    .venv/bin/python -m bench.load --start                     # steady 64 x 180 s, overload 256 x 60 s, recovery
    .venv/bin/python -m bench.load --url http://127.0.0.1:8000 --steady-seconds 30   # shorter, a running gateway

Phases, one after another: `steady` (64 clients, at least 3 minutes), `overload` (256 clients: more
than the engine's batch and the ingress' admission bound) and `recovery` (back to 16 clients). Each
client streams a completion of `--tokens` tokens (ignore_eos), then starts the next; a refused
request (429/503) must carry Retry-After, which the client honours (as the openai client does).
Every second the runner reads /metrics: the ingress' in-flight (admitted) requests, how many of them
have no first token yet (`steergate_requests_queued`: the gateway's queue, Ray's handle queue and the
engine's together) and the engine's running requests. Loopback only; every phase ends by itself
(clients stop starting new requests at the phase's end, and a request may not outlive it by more
than the gateway's own request timeout). Prints one line per phase, writes JSON and a PNG (queue
depth and TTFT over time).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.common import percentile
from bench.gateway import start_local_gateway

__all__ = ["Phase", "RequestRecord", "run_phase", "summarize"]

MODEL = "smollm2-135m-instruct"
TOPICS = ["the ocean", "a lighthouse", "bread", "volcanoes", "a chess game", "winter", "trains", "bees"]
SAMPLE_INTERVAL_S = 1.0
# A client never waits longer than this on Retry-After (the gateway says 2 s by default).
MAX_BACKOFF_S = 10.0


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float


@dataclass
class RequestRecord:
    phase: str
    started: float  # seconds since the run began
    status: int | None  # None: no answer (connection error)
    seconds: float = 0.0  # until the last byte (or the refusal)
    ttft_s: float | None = None
    tokens: int = 0
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Sample:
    t: float
    in_flight: float | None
    queued: float | None  # admitted, no first chunk yet: the gateway's queue (Ray's and the engine's)
    running: float | None  # the engine's own count, as last probed (stale under overload: see docs)


@dataclass
class Run:
    records: list[RequestRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)  # name, start, end (run seconds)


async def _one(client: httpx.AsyncClient, phase: str, origin: float, prompt: str, tokens: int) -> RequestRecord:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    start = time.monotonic()
    rec = RequestRecord(phase, start - origin, None)
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            rec.status = r.status_code
            if r.status_code != 200:
                await r.aread()
                rec.retry_after = r.headers.get("retry-after")
                rec.error = r.text[:200]
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        rec.error = json.dumps(chunk["error"])[:200]
                    if rec.ttft_s is None and any(c.get("text") for c in chunk.get("choices") or []):
                        rec.ttft_s = time.monotonic() - start
                    if chunk.get("usage"):
                        rec.tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        rec.error = f"{type(e).__name__}: {e}"
    rec.seconds = time.monotonic() - start
    return rec


async def run_phase(url: str, phase: Phase, run: Run, origin: float, tokens: int) -> None:
    """`phase.clients` clients loop until the phase ends; the phase returns once all have stopped."""
    end = time.monotonic() + phase.seconds
    limits = httpx.Limits(max_connections=phase.clients, max_keepalive_connections=phase.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(900.0)) as client:
        async def loop(i: int) -> None:
            n = 0
            while time.monotonic() < end:
                prompt = f"Here is a short story about {TOPICS[(i + n) % len(TOPICS)]} (client {i}, request {n}):"
                rec = await _one(client, phase.name, origin, prompt, tokens)
                run.records.append(rec)
                n += 1
                if rec.status in (429, 503):
                    await asyncio.sleep(min(MAX_BACKOFF_S, float(rec.retry_after or 1), max(0.0, end - time.monotonic())))
                elif rec.status is None:
                    await asyncio.sleep(1.0)

        started = time.monotonic() - origin
        await asyncio.gather(*(loop(i) for i in range(phase.clients)))
        run.phases.append((phase.name, started, time.monotonic() - origin))


def _metric(text: str, name: str, label: str | None = None) -> float | None:
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and (label is None or label in line):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


async def _sample(url: str, run: Run, origin: float, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        while not stop.is_set():
            try:
                text = (await client.get("/metrics")).text
                run.samples.append(Sample(time.monotonic() - origin, _metric(text, "steergate_requests_in_flight"),
                                          _metric(text, "steergate_requests_queued"),
                                          _metric(text, "steergate_engine_requests", 'state="running"')))
            except httpx.HTTPError:
                pass
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)
            except TimeoutError:
                pass


def summarize(run: Run) -> list[dict[str, object]]:
    rows = []
    for name, start, end in run.phases:
        recs = [r for r in run.records if r.phase == name]
        ok = [r for r in recs if r.status == 200 and r.error is None]
        refused = [r for r in recs if r.status in (429, 503)]
        ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
        samples = [s for s in run.samples if start <= s.t <= end]
        rows.append({
            "phase": name, "seconds": round(end - start, 1), "requests": len(recs), "ok": len(ok),
            "refused_429_503": len(refused), "refused_without_retry_after": sum(1 for r in refused if not r.retry_after),
            "refusal_p99_s": round(percentile([r.seconds for r in refused], 0.99), 3) if refused else None,
            "errors": len(recs) - len(ok) - len(refused),
            "ttft_p50_s": round(percentile(ttft, 0.5), 3), "ttft_p95_s": round(percentile(ttft, 0.95), 3),
            "ttft_p99_s": round(percentile(ttft, 0.99), 3), "tokens_per_s": round(sum(r.tokens for r in ok) / (end - start), 1),
            "max_in_flight": max((s.in_flight or 0 for s in samples), default=None),
            "max_queued": max((s.queued or 0 for s in samples), default=None),
            "mean_queued": round(statistics.fmean([s.queued or 0 for s in samples]), 1) if samples else None,
            "max_running": max((s.running or 0 for s in samples), default=None),
        })
    return rows


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    t = [s.t for s in run.samples]
    ax1.plot(t, [s.in_flight for s in run.samples], label="ingress in flight (admitted)")
    ax1.plot(t, [s.queued for s in run.samples], label="queued (admitted, no first token yet)")
    ax1.plot(t, [s.running for s in run.samples], label="engine running (last probe)")
    ax1.set_ylabel("requests")
    ax1.legend(loc="upper left")
    ok = [r for r in run.records if r.ttft_s is not None and r.status == 200]
    ax2.scatter([r.started for r in ok], [r.ttft_s for r in ok], s=4, label="TTFT of served requests")
    refused = [r for r in run.records if r.status in (429, 503)]
    ax2.scatter([r.started for r in refused], [r.seconds for r in refused], s=4, c="red", label="time to a 429/503")
    ax2.set_ylabel("seconds")
    ax2.set_xlabel("seconds since start")
    ax2.legend(loc="upper left")
    for ax in (ax1, ax2):
        for name, start, end in run.phases:
            ax.axvspan(start, end, alpha=0.06 if name != "overload" else 0.15, color="grey")
    ax1.set_title("bench/load.py: " + ", ".join(f"{n} {e - s:.0f} s" for n, s, e in run.phases))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"bench/load.py only loads a gateway on this machine (loopback), not {host!r}")


async def _run(url: str, phases: list[Phase], tokens: int) -> Run:
    run, origin, stop = Run(), time.monotonic(), asyncio.Event()
    sampler = asyncio.create_task(_sample(url, run, origin, stop))
    try:
        for phase in phases:
            print(f"phase {phase.name}: {phase.clients} clients for {phase.seconds:.0f} s", file=sys.stderr)
            await run_phase(url, phase, run, origin, tokens)
    finally:
        stop.set()
        await sampler
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a gateway on this machine")
    parser.add_argument("--start", action="store_true", help="start a gateway (embedded default) for the run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--steady-seconds", type=float, default=180.0)
    parser.add_argument("--overload-clients", type=int, default=256)
    parser.add_argument("--overload-seconds", type=float, default=60.0)
    parser.add_argument("--recovery-clients", type=int, default=16)
    parser.add_argument("--recovery-seconds", type=float, default=30.0)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--out", type=Path, default=Path("bench/results/load"), help="writes OUT.json and OUT.png")
    args = parser.parse_args(argv)
    if not args.url and not args.start:
        parser.error("give --url or --start")
    phases = [Phase("steady", args.clients, args.steady_seconds)]
    if args.overload_seconds > 0:
        phases.append(Phase("overload", args.overload_clients, args.overload_seconds))
    if args.recovery_seconds > 0:
        phases.append(Phase("recovery", args.recovery_clients, args.recovery_seconds))
    stop = None
    url = args.url
    if args.start:
        url, stop = start_local_gateway()
    _loopback(url)
    try:
        run = asyncio.run(_run(url, phases, args.tokens))
    finally:
        if stop is not None:
            stop()
    rows = summarize(run)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"phases": rows, "samples": [asdict(s) for s in run.samples], "requests": [asdict(r) for r in run.records]}))
    plot(run, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
