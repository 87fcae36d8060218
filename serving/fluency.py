"""Live fluency scoring: the perplexity of sampled completions under the unsteered model.

What it costs live traffic is kept small and bounded, in three ways:
- Off the request path: the ingress samples a response (policy `fluency.sample_rate`) when it
  starts, the model server hands back the response's token ids as its last item (after everything
  the client gets), and the ingress queues them here. The client never waits for a score.
- Low priority: each score is one prefill of prompt + completion with `prompt_logprobs` on the same
  engine, steering off, at a priority below live requests (serving/engine/vllm_engine.py), so a
  scoring request waits while live ones wait, and is the first preempted when memory runs short.
- Bounded: a fixed-size queue per ingress replica and a few workers; a sample that finds the queue
  full is dropped and counted (`steergate_fluency_dropped_total{reason="queue_full"}`), so under
  load the scorer sheds work instead of growing a backlog.
The score is recorded in the ingress' own registry, under the request's policy, experiment and arm.
Measured cost (tokens/s and TTFT at sample rates 0, 0.1, 1): bench/fluency.py, README.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from middleware.metrics import Cohort, GatewayMetrics
from serving.config import FluencyConfig
from serving.engine.base import FluencySample

__all__ = ["FluencyScorer"]

logger = logging.getLogger(__name__)

_Job = tuple[str, Cohort, list[int], list[int]]  # model, cohort, prompt ids, completion ids


class FluencyScorer:
    """A bounded queue of sampled completions and the workers that score them through model-server handles."""

    def __init__(self, config: FluencyConfig, handles: dict[str, Any], metrics: GatewayMetrics) -> None:
        self.config = config
        self.handles = handles
        self.metrics = metrics
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task[None]] = []

    def submit(self, model: str, cohort: Cohort, sample: FluencySample) -> None:
        """Queue every completion of a sampled response; never blocks, drops (and counts) when full."""
        queue = self._started()
        for prompt_ids, completion_ids in sample.sequences:
            if not completion_ids:
                continue  # nothing generated: no perplexity to take
            try:
                queue.put_nowait((model, cohort, prompt_ids, completion_ids))
            except asyncio.QueueFull:
                self.metrics.fluency_dropped.labels(model, "queue_full").inc()
        self.metrics.fluency_queue.set(queue.qsize())

    def _started(self) -> asyncio.Queue[_Job]:
        # Created on first use, inside the replica's event loop (the constructor may run outside it).
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.config.queue_size)
            self._workers = [asyncio.get_running_loop().create_task(self._work(self._queue))
                             for _ in range(self.config.workers)]
        return self._queue

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            model, cohort, prompt_ids, completion_ids = await queue.get()
            self.metrics.fluency_queue.set(queue.qsize())
            try:
                perplexity = await self.handles[model].score_fluency.remote(prompt_ids, completion_ids)
            except Exception:  # a failed score must not stop the worker
                logger.exception("fluency scoring failed (model %s)", model)
                self.metrics.fluency_dropped.labels(model, "error").inc()
                continue
            if math.isfinite(perplexity):
                self.metrics.observe_fluency(model, cohort, perplexity)
