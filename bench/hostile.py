"""A hostile request corpus, generated from a seed, and a runner that checks every answer.

Each request is raw bytes on a socket (so broken framing, invalid UTF-8 and header abuse reach the
gateway exactly as written), drawn from one of the categories in `CATEGORIES`: broken and
truncated JSON, wrong types, huge strings, deep nesting, invalid UTF-8 and lone surrogates,
NaN/Infinity/1e308 numbers, unknown fields, oversized n/max_tokens/messages, malformed steering
specs, header abuse, wrong content types, absurd Authorization values, odd methods and paths.
Bodies that happen to be valid ask for at most a few tokens, so the corpus costs little engine time.

What counts as a pass: every request gets an HTTP answer below 500; every 4xx body is an
OpenAI-shaped error `{"error": {"message", "type", "param", "code"}}`; every 2xx is a well-formed
body or SSE stream (error events shaped likewise, ending in `[DONE]`); afterwards /health is 200
and a normal request is answered.

    .venv/bin/python -m bench.hostile --start [--n 1200] [--seed 0]    # its own gateway, then stops it
    .venv/bin/python -m bench.hostile --url http://127.0.0.1:8000      # a running gateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.hostile_cases import CATEGORIES, HostileRequest, corpus

__all__ = ["CATEGORIES", "HostileRequest", "Outcome", "corpus", "run_corpus", "check_answer"]

REQUEST_TIMEOUT_S = 180.0
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    request: HostileRequest
    status: int | None  # None: no HTTP answer (connection closed, or timed out)
    verdict: str  # "ok", or what was wrong
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    healthy_after: bool = False
    answers_after: bool = False

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict != "ok"]

    def summary(self) -> str:
        statuses = Counter(o.status for o in self.outcomes)
        kinds = Counter(o.request.category for o in self.outcomes)
        verdicts = Counter(o.verdict for o in self.outcomes)
        lines = [f"requests: {len(self.outcomes)}   by category: {dict(sorted(kinds.items()))}",
                 f"statuses: {dict(sorted(statuses.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))}",
                 f"verdicts: {dict(verdicts)}",
                 f"5xx: {sum(1 for o in self.outcomes if o.status and o.status >= 500)}   "
                 f"no answer: {statuses.get(None, 0)}   slowest: {max((o.seconds for o in self.outcomes), default=0):.1f} s",
                 f"afterwards: /health 200: {self.healthy_after}   a normal request answered: {self.answers_after}"]
        for o in self.failures[:20]:
            lines.append(f"  FAIL [{o.request.category}] {o.request.label}: {o.verdict} {o.status} {o.detail[:200]}")
        return "\n".join(lines)


# ---- the checks ----------------------------------------------------------------------------------

def _openai_error(body: bytes) -> str | None:
    """None if `body` is an OpenAI-shaped error, else what is wrong with it."""
    try:
        obj = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:120]!r}"
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or set(err) != {"message", "type", "param", "code"}:
        return f"not OpenAI-shaped: {body[:160]!r}"
    if not isinstance(err["message"], str) or not isinstance(err["type"], str):
        return "message/type not strings"
    if err["param"] is not None and not isinstance(err["param"], str):
        return "param not a string"
    if err["code"] is not None and not isinstance(err["code"], str | int):
        return "code not a string or int"
    return None


def _check_sse(body: bytes) -> str | None:
    events = [e for e in body.decode("utf-8", "replace").split("\n\n") if e.strip()]
    if not events or events[-1].strip() != "data: [DONE]":
        return f"stream does not end in [DONE]: {body[-160:]!r}"
    for event in events[:-1]:
        payload = event.strip().removeprefix("data: ")
        try:
            obj = json.loads(payload)
        except ValueError:
            return f"SSE event not JSON: {payload[:120]!r}"
        if "error" in obj and (problem := _openai_error(payload.encode())):
            return f"SSE error event {problem}"
    return None


def check_answer(request: HostileRequest, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """None if the answer is acceptable, else what is wrong."""
    if status >= 500:
        return f"server error {status}: {body[:200]!r}"
    if request.method == "HEAD":
        return None  # no body by definition
    if request.invalid_http and status == 400:
        # Not HTTP/1.1 at all: HAProxy's parser refuses it with its fixed page before any request exists
        # (HAProxy 2.8 applies error files only to requests it parsed; docs/operations.md, Fuzzing).
        return None
    if status >= 400:
        return _openai_error(body)
    if status >= 300:
        return f"unexpected redirect {status}"
    if headers.get("content-type", "").startswith("text/event-stream"):
        return _check_sse(body)
    if request.path.split("?")[0].rstrip("/").endswith(("completions",)):
        try:
            obj = json.loads(body)
        except ValueError:
            return f"2xx body not JSON: {body[:120]!r}"
        return None if isinstance(obj, dict) and "choices" in obj else f"2xx body without choices: {body[:120]!r}"
    return None


# ---- raw HTTP -------------------------------------------------------------------------------------

async def _read_answer(reader: asyncio.StreamReader,
                       head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names), body (de-chunked). The body is read by
    its framing, not to EOF: a server may keep the connection open (e.g. after answering a request
    whose announced body never arrived). The answer to a HEAD has no body, whatever its
    Content-Length says (RFC 9110 9.3.2)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError(f"no HTTP answer ({head[:80]!r})")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_request:
        return int(parts[1]), headers, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return int(parts[1]), headers, bytes(body)
    if "content-length" in headers:
        return int(parts[1]), headers, await reader.readexactly(int(headers["content-length"]))
    return int(parts[1]), headers, await reader.read(-1)


async def send_raw(host: str, port: int, raw: bytes, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Write `raw`, read one answer. Raises on no answer (connection closed first, or `timeout_s`)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=2**24), timeout_s)
    try:
        writer.write(raw)
        # No half-close after the request: HAProxy (option abortonclose) takes it for an abort.
        await writer.drain()
        return await asyncio.wait_for(_read_answer(reader, head_request=raw.startswith(b"HEAD ")), timeout_s)
    except asyncio.IncompleteReadError as e:
        raise ConnectionError(f"connection closed before a whole answer ({len(e.partial)} bytes)") from None
    finally:
        writer.close()


async def _one(request: HostileRequest, host: str, port: int, timeout_s: float) -> Outcome:
    started = time.monotonic()
    try:
        status, headers, body = await send_raw(host, port, request.raw(f"{host}:{port}"), timeout_s)
    except (OSError, ConnectionError, asyncio.TimeoutError) as e:
        return Outcome(request, None, "no answer", f"{type(e).__name__}: {e}", time.monotonic() - started)
    problem = check_answer(request, status, headers, body)
    return Outcome(request, status, "ok" if problem is None else "bad answer", problem or "",
                   time.monotonic() - started)


async def _normal_request(host: str, port: int, key: str | None) -> bool:
    body = json.dumps({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"{auth}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    try:
        status, _, data = await send_raw(host, port, raw, REQUEST_TIMEOUT_S)
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return False
    return status == 200 and "choices" in json.loads(data)


async def _healthy(host: str, port: int) -> bool:
    raw = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        return (await send_raw(host, port, raw, 30))[0] == 200
    except (OSError, ConnectionError, asyncio.TimeoutError):
        return False


async def run_corpus(url: str, requests: list[HostileRequest], *, concurrency: int = 8, key: str | None = None,
                     progress: Callable[[int], None] | None = None) -> Report:
    """Send every request (at most `concurrency` at once), then check the gateway still serves."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sem = asyncio.Semaphore(concurrency)
    report = Report()

    async def guarded(request: HostileRequest) -> Outcome:
        async with sem:
            outcome = await _one(request, host, port, REQUEST_TIMEOUT_S)
        if progress:
            progress(1)
        return outcome

    report.outcomes = list(await asyncio.gather(*(guarded(r) for r in requests)))
    report.healthy_after = await _healthy(host, port)
    report.answers_after = await _normal_request(host, port, key)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running gateway (default: start one with --start)")
    parser.add_argument("--start", action="store_true", help="start a gateway (embedded default, "
                        "tests/policies.yaml) on a free port for the run, and stop it after")
    parser.add_argument("--n", type=int, default=1200, help="requests in the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--key", default=None, help="API key for the final normal request")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args(argv)
    if not args.url and not args.start:
        parser.error("give --url or --start")
    from tqdm import tqdm

    requests = corpus(args.seed, args.n)
    stop = None
    url = args.url
    if args.start:
        from bench.gateway import start_local_gateway

        url, stop = start_local_gateway(policies=ROOT / "tests" / "policies.yaml")
    try:
        with tqdm(total=len(requests), desc="hostile requests") as bar:
            report = asyncio.run(run_corpus(url, requests, concurrency=args.concurrency, key=args.key,
                                            progress=bar.update))
    finally:
        if stop is not None:
            stop()
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps([{"category": o.request.category, "label": o.request.label,
                                          "status": o.status, "verdict": o.verdict, "detail": o.detail,
                                          "seconds": round(o.seconds, 3)} for o in report.outcomes], indent=1))
    ok = not report.failures and report.healthy_after and report.answers_after
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
