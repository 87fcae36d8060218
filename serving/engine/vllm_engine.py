"""The vLLM engine behind a model server: AsyncLLM + vLLM's own OpenAI serving classes.

vLLM does the OpenAI work (chat templates, sampling params, validation, streaming chunks,
usage, logprobs); we add the steergate hook runtime (configured through
`additional_config`, see plugin.py) and the side channel that brings per-token middleware
outputs back to this process.

Live fluency scoring (serving/fluency.py) runs here too: the token ids of a sampled response are
recorded on their way out of the engine (recording.py) and handed to the ingress as the response's
last item; the ingress later asks `continuation_perplexity` to score them with steering off, as a
prompt-logprobs request at a priority below live traffic (vLLM's `scheduling_policy: priority`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from argparse import Namespace
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from middleware.embedded import embedded_model_dir
from middleware.fluency import continuation_perplexity
from middleware.hooks import load_middleware
from middleware.settings import trace_timings_file
from serving.config import MiddlewareConfig, ModelConfig
from serving.engine.base import Engine, EngineError, EngineItem, FluencySample, SSEChunk
from serving.engine.plugin import ADDITIONAL_CONFIG_KEY
from serving.engine.side_channel import SideChannelReceiver, SideOutputStore
from serving.errors import error_event
from serving.postprocess import ResponsePostprocessor
from serving.protocol import ChatCompletionRequest, CompletionRequest
from serving.safety_gate import SafetyPlan
from serving.timing_trace import stamp

__all__ = ["FLUENCY_PRIORITY", "VLLMEngine", "cpu_env"]

logger = logging.getLogger(__name__)

# vLLM schedules lower values first; live requests run at 0. A waiting scoring request is admitted
# only after every waiting live one, and is the first preempted when the KV cache runs out.
FLUENCY_PRIORITY = 100


def cpu_env(config: ModelConfig) -> dict[str, str]:
    """The environment vLLM's CPU backend reads at engine start (the engine's child processes inherit
    it); also what bench/peer.py gives vLLM's own server, so both engines run alike."""
    cores = os.cpu_count() or 1
    bind = config.engine.cpu_threads_bind
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.engine.cpu_kv_cache_gib),
        # By default vLLM keeps a core for the frontend; with 2 cores that halves the model's speed.
        "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}" if bind == "auto" else bind,
    }


def _set_cpu_env(config: ModelConfig) -> None:
    os.environ.update(cpu_env(config))


def engine_unavailable() -> EngineError:
    """The answer while this replica's engine is dead: Ray Serve replaces the replica (its health check
    fails), so the client should retry rather than see a 500."""
    return EngineError("the model's engine stopped; its replica is being replaced: retry shortly",
                       type="server_error", code="model_unavailable", status=503)


def _engine_error(error: Any) -> EngineError:
    """vLLM's ErrorResponse, or an exception vLLM raised, as our OpenAI-shaped error."""
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(error, EngineDeadError):
        return engine_unavailable()
    if not isinstance(error, ErrorResponse):
        if not isinstance(error, Exception):
            raise TypeError(error)
        logger.info("request failed in vLLM: %r", error)
        error = create_error_response(error)  # maps vLLM's exception classes to HTTP statuses
    return EngineError.from_body(error.error.model_dump(), default_status=500)


def _special_token_ids(model_path: str) -> list[int]:
    from transformers import AutoTokenizer

    return sorted(set(AutoTokenizer.from_pretrained(model_path).all_special_ids))


class _SchedulerLoad:
    """The engine's latest scheduler counts, recorded by a vLLM stat logger on every engine step."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0

    def logger_factory(self) -> type:
        from vllm.v1.metrics.loggers import StatLoggerBase

        load = self

        class _LoadLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                if scheduler_stats is not None:
                    load.running = scheduler_stats.num_running_reqs
                    load.waiting = scheduler_stats.num_waiting_reqs

            def log_engine_initialized(self) -> None:
                pass

        return _LoadLogger


def engine_middleware(middleware: list[MiddlewareConfig], special_ids: list[int]) -> list[dict[str, Any]]:
    """The middleware specs the engine process builds, as plain dicts.

    Steering middleware leave the chat template's special tokens alone unless the config says
    otherwise: only the server knows the tokenizer, so it fills in `skip_token_ids`.
    """
    specs = []
    for m in middleware:
        spec = m.model_dump()
        if load_middleware(m.cls).handles_steering:
            spec["args"].setdefault("skip_token_ids", special_ids)
        specs.append(spec)
    return specs


class VLLMEngine(Engine):
    def __init__(self, engine: Any, serving_chat: Any, serving_completion: Any,
                 store: SideOutputStore, receiver: SideChannelReceiver | None,
                 postprocess: ResponsePostprocessor, config: ModelConfig,
                 scheduler_load: _SchedulerLoad | None = None) -> None:
        self.engine = engine
        self.config = config
        self._scheduler_load = scheduler_load or _SchedulerLoad()
        self.postprocess = postprocess
        self._chat = serving_chat
        self._completion = serving_completion
        self.side_outputs = store
        self._receiver = receiver
        self._traced = trace_timings_file() is not None

    @classmethod
    async def start(cls, config: ModelConfig) -> VLLMEngine:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import FrontendArgs
        from vllm.platforms import current_platform

        from serving.engine.recording import RecordingAsyncLLM

        if current_platform.is_cpu():
            _set_cpu_env(config)
        model_path = config.path or str(embedded_model_dir())
        store = SideOutputStore()
        receiver = None
        steergate_cfg: dict[str, Any] = {}
        if config.middleware:
            receiver = SideChannelReceiver(store)
            receiver.start()
            steergate_cfg = {
                "middleware": engine_middleware(config.middleware, _special_token_ids(model_path)),
                "side_channel": receiver.address,
            }
        ecfg = config.engine
        engine_kwargs: dict[str, Any] = dict(
            model=model_path,
            served_model_name=[config.name],
            dtype=ecfg.dtype,
            enforce_eager=ecfg.enforce_eager,
            max_model_len=ecfg.max_model_len,
            max_num_seqs=ecfg.max_num_seqs,
            seed=ecfg.seed,
            stream_interval=ecfg.stream_interval,
            scheduling_policy=ecfg.scheduling_policy,
            # Cached prompt prefixes skip the forward pass, so the middleware would never see them.
            enable_prefix_caching=not config.middleware,
            additional_config={ADDITIONAL_CONFIG_KEY: steergate_cfg} if steergate_cfg else {},
        )
        engine_kwargs.update(ecfg.extra_engine_args)  # the escape hatch wins over our defaults
        engine_args = AsyncEngineArgs(**engine_kwargs)
        scheduler_load = _SchedulerLoad()
        engine = RecordingAsyncLLM.from_engine_args(engine_args, stat_loggers=[scheduler_load.logger_factory()])
        frontend = FrontendArgs()
        # vLLM's serving classes read their options from the CLI namespace `vllm serve` would build.
        args = Namespace(
            **{f.name: getattr(frontend, f.name) for f in dataclasses.fields(frontend)}
            | {f.name: getattr(engine_args, f.name) for f in dataclasses.fields(engine_args)}
        )
        state = State()
        await init_app_state(engine, state, args, supported_tasks=await engine.get_supported_tasks())
        logger.info("vLLM engine for %s ready (%s)", config.name, model_path)
        return cls(engine, state.openai_serving_chat, state.openai_serving_completion, store, receiver,
                   ResponsePostprocessor(config.middleware), config, scheduler_load)

    def chat(self, request: ChatCompletionRequest) -> AsyncIterator[EngineItem]:
        return self._run(request, self._chat.create_chat_completion)

    def completions(self, request: CompletionRequest) -> AsyncIterator[EngineItem]:
        return self._run(request, self._completion.create_completion)

    async def _run(self, request: ChatCompletionRequest | CompletionRequest, create: Any) -> AsyncIterator[EngineItem]:
        from vllm.entrypoints.generate.base.protocol import StreamOptions
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.utils import random_uuid

        if self.engine.errored:  # the engine core died: nothing to run it on
            yield engine_unavailable()
            return
        stamps = {"model_server_entry": time.time()} if self._traced else None
        rid = random_uuid()
        request.request_id = rid
        engine_args = {"rid": rid, **request.middleware_args()}
        request.set_engine_args(engine_args)
        client_opts = request.stream_options
        # A policy that blocks prompts or stops output acts while tokens are generated, which needs
        # the stream: a client that did not ask for one gets the gated stream assembled into a body.
        assemble = SafetyPlan.from_args(engine_args).gates_output and not request.stream
        if assemble:
            request.stream = True
        if request.stream:
            # Always get per-chunk usage from vLLM; the postprocessor strips what the client did not ask for.
            request.stream_options = StreamOptions(include_usage=True, continuous_usage_stats=True)
        buf = self.side_outputs.open(rid)
        # The ingress sampled this response for fluency scoring: keep its token ids.
        sampled = bool((engine_args.get("policy") or {}).get("fluency"))
        if sampled:
            self.engine.open_record(rid)
        sequences: list[tuple[list[int], list[int]]] = []
        result = None
        try:
            try:
                result = await create(request, raw_request=None)
                stamp(stamps, "vllm_prompt_ready")
            except Exception as e:  # vLLM raises some request errors instead of returning them
                yield _engine_error(e)
                return
            if isinstance(result, ErrorResponse):
                yield _engine_error(result)
            elif isinstance(result, AsyncGenerator):
                items = self.postprocess.stream(
                    result,
                    buf,
                    engine_args,
                    client_usage=assemble or bool(client_opts and client_opts.include_usage),
                    client_continuous_usage=bool(client_opts and client_opts.continuous_usage_stats),
                    num_choices=request.n or 1,
                )
                if assemble:
                    yield await self.postprocess.collect(items)
                else:
                    async for item in items:
                        if isinstance(item, SSEChunk) and item.is_error and self.engine.errored:
                            # vLLM ends the stream with a generic 500 event when its engine core dies;
                            # the client should retry on the replacement replica, as before a stream starts.
                            item = SSEChunk(error_event(engine_unavailable()))
                        if stamps is not None and isinstance(item, SSEChunk):
                            stamps = self._stamp_chunk(stamps, item)
                        yield item
            else:
                yield await self.postprocess.finish_body(result.model_dump(), buf, engine_args)
        finally:
            if isinstance(result, AsyncGenerator):
                await result.aclose()  # a stopped or abandoned stream: vLLM aborts the request
            self.side_outputs.close(rid)
            if sampled:
                sequences = self.engine.close_record(rid)
        # Only a response that ended normally gets here (an error returned, a disconnect closed us).
        if sequences:
            yield FluencySample(sequences)

    @staticmethod
    def _stamp_chunk(stamps: dict[str, float], chunk: SSEChunk) -> dict[str, float] | None:
        """A traced request's first chunks: stamp them; hand the stamps to the first one with content
        (the ingress writes them), then stop tracing (None)."""
        stamps.setdefault("model_server_first_chunk", time.time())
        if not chunk.has_content:
            return stamps
        stamp(stamps, "model_server_first_content")
        chunk.timings = stamps
        return None

    async def continuation_perplexity(self, token_ids: list[int], start: int) -> float:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.utils import random_uuid

        # The scoring request needs one free position for its single (discarded) sampled token.
        token_ids = token_ids[: self.config.engine.max_model_len - 1]
        # No extra_args: the in-engine middleware neither steers it nor reports on it.
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        priority = FLUENCY_PRIORITY if self.config.engine.scheduling_policy == "priority" else 0
        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=token_ids), params,
                                              f"fluency-{random_uuid()}", priority=priority):
            final = out
        if final is None or final.prompt_logprobs is None:
            raise RuntimeError("the engine returned no prompt log-probabilities")
        return continuation_perplexity(final.prompt_logprobs, token_ids, start)

    async def check_health(self) -> None:
        await self.engine.check_health()

    def num_unfinished_requests(self) -> int:
        return int(self.engine.get_num_unfinished_requests())

    def load(self) -> dict[str, int]:
        # The scheduler's counts are those of the last engine step: once nothing is left unfinished
        # there is no further step to report zero, so the frontend's own count decides.
        unfinished = self.num_unfinished_requests()
        running = min(self._scheduler_load.running, unfinished)
        return {"running": running, "waiting": min(self._scheduler_load.waiting, unfinished - running)}

    def shutdown(self) -> None:
        self.engine.shutdown()
        if self._receiver is not None:
            self._receiver.close()
