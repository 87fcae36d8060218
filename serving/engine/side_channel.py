"""Carries per-token middleware outputs from vLLM's engine-core process back to the server.

vLLM's AsyncLLM runs the engine core (scheduler + model) in a child process, and its output
path has no room for per-token extras. The hook runtime in that process pushes one message per
forward step over a local ZeroMQ socket; the model server pulls them into a `SideOutputStore`.

Message: {steergate_request_id: {engine_request_id: {"positions": [...], "is_prompt": [...],
                                                      output_name: [...]}}}
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import tempfile
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from middleware.settings import side_channel_drop_rate

__all__ = ["SideChannelSender", "SideChannelReceiver", "SideOutputStore", "RequestSideOutputs", "new_address"]

logger = logging.getLogger(__name__)


def new_address() -> str:
    return f"ipc://{tempfile.gettempdir()}/steergate-side-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"


class SideChannelSender:
    """Engine side: non-blocking PUSH (drops nothing while the receiver is alive; HWM is large)."""

    def __init__(self, address: str, drop_rate: float | None = None) -> None:
        # Fault injection (tests only): drop this fraction of messages.
        self._drop_rate = side_channel_drop_rate() if drop_rate is None else drop_rate
        self._rng = random.Random()
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(address)

    def send(self, message: dict[str, Any]) -> None:
        if self._drop_rate and self._rng.random() < self._drop_rate:
            return
        self._sock.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class RequestSideOutputs:
    """Everything the middleware reported for one API request (all its engine sub-requests)."""

    # engine_request_id -> position -> {"is_prompt": bool, output_name: value}
    by_engine_request: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    updated: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, engine_request_id: str, rec: dict[str, list[Any]]) -> None:
        tokens = self.by_engine_request[engine_request_id]
        names = [k for k in rec if k not in ("positions", "is_prompt")]
        for i, pos in enumerate(rec["positions"]):
            # Keyed by position: a token recomputed after preemption overwrites, never doubles.
            entry = tokens.setdefault(pos, {"is_prompt": rec["is_prompt"][i]})
            for name in names:
                entry[name] = rec[name][i]
        self.updated.set()

    def tokens(self) -> list[dict[str, Any]]:
        """All token records of all sub-requests, each with its position and sub-request id."""
        return [
            {"position": pos, "request": rid, **entry}
            for rid, tokens in self.by_engine_request.items()
            for pos, entry in sorted(tokens.items())
        ]

    def count(self, name: str | None = None) -> int:
        return sum(
            1 for tokens in self.by_engine_request.values() for e in tokens.values() if name is None or name in e
        )


class SideOutputStore:
    """Per-request buffers, filled by the receiver and read by the serving layer."""

    def __init__(self) -> None:
        self._requests: dict[str, RequestSideOutputs] = {}

    def open(self, request_id: str) -> RequestSideOutputs:
        return self._requests.setdefault(request_id, RequestSideOutputs())

    def close(self, request_id: str) -> RequestSideOutputs | None:
        return self._requests.pop(request_id, None)

    def deliver(self, message: dict[str, dict[str, dict[str, list[Any]]]]) -> None:
        for request_id, sub in message.items():
            buf = self._requests.get(request_id)
            if buf is None:  # request already finished or not ours
                continue
            for engine_request_id, rec in sub.items():
                buf.add(engine_request_id, rec)


class SideChannelReceiver:
    """Server side: binds the PULL socket and feeds a SideOutputStore from an asyncio task."""

    def __init__(self, store: SideOutputStore, address: str | None = None) -> None:
        self.address = address or new_address()
        self.store = store
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(self.address)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                raw = await self._sock.recv()
                self.store.deliver(pickle.loads(raw))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad message must not kill the channel
                logger.exception("steergate side channel: dropped a message")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sock.close()
        path = self.address.removeprefix("ipc://")
        if os.path.exists(path):
            os.unlink(path)
