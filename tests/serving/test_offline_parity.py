"""The offline path (middleware on a plain transformers model by hooks) edits the residual stream
exactly as the same middleware does inside vLLM's compiled graph.

Both sides run the steering middleware and then StreamNormHook at the same layer; the hook's
per-token norms of the *steered* stream must agree position by position.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
import torch

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import SafetyMiddleware
from middleware.embedded import embedded_model_dir
from middleware.offline import attach
from tests.conftest import D_MODEL, HOOK_LAYER, MODEL
from tests.serving.hooks import StreamNormHook

PROMPT = "The old lighthouse keeper climbed the stairs and"
STEERING = {"interventions": [{"feature": 5, "mode": "add", "strength": 40.0}]}


@pytest.fixture(scope="module")
def hf_model() -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32).eval()


def _offline_norms(model: Any, ids: list[int], prompt_len: int, steering: Any) -> list[float]:
    mws = [
        SafetyMiddleware(layer=HOOK_LAYER, d_model=D_MODEL, features_path=str(EMBEDDED_FEATURES)),
        StreamNormHook(layer=HOOK_LAYER, d_model=D_MODEL),
    ]
    args = [{"steering": steering}] if steering else [{}]
    with attach(model, mws, args, prompt_lens=[prompt_len]) as session, torch.no_grad():
        model(torch.tensor([ids]))
    return session.side_outputs(0, "stream_norm")


def test_offline_edit_equals_vllm_edit(client: openai.OpenAI, hf_model: Any) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True, "steering": STEERING, "return_token_ids": True})
    choice = r.choices[0].model_extra
    prompt_ids, generated = choice["prompt_token_ids"], choice["token_ids"]
    vllm_norms = torch.tensor(r.model_extra["safety"]["test_hook"]["norms"])
    # The model saw the prompt and every generated token but the last.
    ids = prompt_ids + generated[:-1]
    assert len(vllm_norms) == len(ids)

    steered = torch.tensor(_offline_norms(hf_model, ids, len(prompt_ids), STEERING))
    plain = torch.tensor(_offline_norms(hf_model, ids, len(prompt_ids), None))
    torch.testing.assert_close(steered, vllm_norms, rtol=1e-3, atol=1e-3)
    # The comparison has teeth: the steered generated positions differ from unsteered ones.
    gen = slice(len(prompt_ids), None)
    assert (steered[gen] - plain[gen]).abs().min() > 0.1
    torch.testing.assert_close(steered[: len(prompt_ids)], plain[: len(prompt_ids)])  # prompt not steered
