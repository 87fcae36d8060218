"""What the vLLM adapter hands the engine process, checked without starting an engine."""

from __future__ import annotations

from middleware.embedded import embedded_model_dir
from serving.config import MiddlewareConfig
from serving.engine.vllm_engine import _special_token_ids, engine_middleware


def test_steering_skips_special_tokens_by_default() -> None:
    steering = MiddlewareConfig(cls="middleware.steering:SAESteeringMiddleware", layer=3, args={"sae_path": "x"})
    explicit = MiddlewareConfig(cls="middleware.steering:SAESteeringMiddleware", layer=3,
                                args={"sae_path": "x", "skip_token_ids": []})
    other = MiddlewareConfig(cls="tests.serving.hooks:StreamNormHook", layer=3)
    specs = engine_middleware([steering, explicit, other], special_ids=[0, 1, 2])
    assert specs[0]["args"]["skip_token_ids"] == [0, 1, 2]
    assert specs[1]["args"]["skip_token_ids"] == []  # the config's own choice wins
    assert "skip_token_ids" not in specs[2]["args"]


def test_special_ids_of_the_embedded_model_cover_the_chat_template() -> None:
    from transformers import AutoTokenizer

    path = str(embedded_model_dir())
    tok = AutoTokenizer.from_pretrained(path)
    ids = _special_token_ids(path)
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert tok.convert_tokens_to_ids(marker) in ids
