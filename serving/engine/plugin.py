"""vLLM general plugin (entry point `vllm.general_plugins`): wires steergate's hook runtime in.

vLLM calls `register()` in every process it starts. We wrap two model-runner methods:
- `load_model`: after the weights are in and before the first (compiling) forward, build the
  configured middleware and swap the hooked decoder layers' classes (see hook_runtime).
- `_model_forward`: tell the runtime the batch layout before each forward, flush side outputs after.
Configuration arrives in `vllm_config.additional_config["steergate"]`; without it nothing changes.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

__all__ = ["register", "ADDITIONAL_CONFIG_KEY"]

logger = logging.getLogger(__name__)

ADDITIONAL_CONFIG_KEY = "steergate"
_PATCHED = False


def register() -> None:
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    runners: list[type] = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        runners.append(CPUModelRunner)
    except ImportError:  # a GPU build without the CPU runner
        pass
    for runner in runners:
        if "load_model" in vars(runner):
            runner.load_model = _wrap_load_model(runner.load_model)
    GPUModelRunner._model_forward = _wrap_model_forward(GPUModelRunner._model_forward)


def _wrap_load_model(load_model: Any) -> Any:
    @functools.wraps(load_model)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = load_model(self, *args, **kwargs)
        cfg = (self.vllm_config.additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
        if cfg and cfg.get("middleware"):
            from serving.engine.hook_runtime import HookRuntime, install_layer_hooks, set_runtime

            runtime = HookRuntime.from_config(cfg, d_model=self.model_config.get_hidden_size())
            install_layer_hooks(self.model, runtime.layers)
            set_runtime(runtime)
        return out

    return wrapper


def _wrap_model_forward(model_forward: Any) -> Any:
    @functools.wraps(model_forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        from serving.engine.hook_runtime import get_runtime

        runtime = get_runtime()
        if runtime is None:
            return model_forward(self, *args, **kwargs)
        # vLLM 0.32: _model_forward(input_ids=None, positions=None, ...), called with keywords.
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        runtime.begin_step(self, input_ids)
        try:
            return model_forward(self, *args, **kwargs)
        finally:
            runtime.end_step()

    return wrapper
