"""middleware/offline.py: the steering middleware hooked into a tiny random transformers Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.hooks import RemovableHandle
from transformers import LlamaConfig, LlamaForCausalLM

from middleware.offline import attach, decoder_layers
from middleware.steering import STEERED, SAESteeringMiddleware, default_tiers
from tests.middleware.builders import build_sae

HIDDEN, LAYER, VOCAB = 64, 0, 96
FEATURES = [1, 2, 3]
# Sequence 0 is left-padded by two and steered; sequence 1 is not steered.
INPUT_IDS = torch.tensor([[0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]])
ATTENTION_MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
REQUEST_ARGS: list[dict[str, Any]] = [{"steering": {"tier": "strong"}}, {}]


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def middleware(tmp_path: Path) -> SAESteeringMiddleware:
    sae = build_sae("standard", d_in=HIDDEN, d_sae=32, hook_name=f"blocks.{LAYER}.hook_resid_post")
    sae.save(tmp_path / "sae")
    return SAESteeringMiddleware(
        layer=LAYER,
        d_model=HIDDEN,
        sae_path=str(tmp_path / "sae"),
        tiers=default_tiers(FEATURES),
        steer_positions="both",
        skip_token_ids=[13],
    )


def _keep_output(model: LlamaForCausalLM, layer: int, seen: dict[str, torch.Tensor]) -> RemovableHandle:
    """Hook that stores what decoder layer `layer` outputs in seen["out"]."""

    def hook(_: Any, __: Any, output: Any) -> None:
        seen["out"] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    return decoder_layers(model)[layer].register_forward_hook(hook)


@torch.no_grad()
def test_attach_matches_calling_the_middleware_directly(
    model: LlamaForCausalLM, middleware: SAESteeringMiddleware
) -> None:
    plain: dict[str, torch.Tensor] = {}
    handle = _keep_output(model, LAYER, plain)
    model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK)
    handle.remove()
    # What the next layer receives is the edited stream.
    edited: dict[str, torch.Tensor] = {}
    handle = decoder_layers(model)[LAYER + 1].register_forward_pre_hook(
        lambda _, args: edited.__setitem__("in", args[0].detach().clone())
    )
    try:
        with attach(model, middleware, REQUEST_ARGS) as session:
            model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK)
    finally:
        handle.remove()

    layout = session.layout
    assert layout is not None
    real = ATTENTION_MASK.reshape(-1).bool()  # (B * S,)
    assert layout.token_request.tolist() == [0] * 4 + [1] * 6
    assert layout.positions.tolist() == [0, 1, 2, 3] + [0, 1, 2, 3, 4, 5]
    assert layout.prompt_lens == [4, 6]
    direct = middleware(plain["out"].reshape(-1, HIDDEN)[real], layout)
    assert direct.stream is not None
    got = edited["in"].reshape(-1, HIDDEN)
    assert torch.equal(got[real], direct.stream)
    assert torch.equal(got[~real], plain["out"].reshape(-1, HIDDEN)[~real]), "padding is left alone"
    # Token 13 (skipped) is the only unsteered token of sequence 0; sequence 1 is not steered.
    assert session.side_outputs(0, STEERED) == [1.0, 1.0, 0.0, 1.0]
    assert session.side_outputs(1, STEERED) == [0.0] * 6


@torch.no_grad()
def test_logits_change_only_for_the_steered_sequence(
    model: LlamaForCausalLM, middleware: SAESteeringMiddleware
) -> None:
    before = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).logits  # (B, S, V)
    with attach(model, middleware, REQUEST_ARGS):
        after = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).logits
    assert torch.equal(after[1], before[1]), "the unsteered sequence must be bit-identical"
    assert not torch.allclose(after[0, 2:], before[0, 2:])
    # Hooks are gone after the context.
    assert torch.equal(model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK).logits, before)


@torch.no_grad()
def test_hidden_states_report_the_edited_stream(
    model: LlamaForCausalLM, middleware: SAESteeringMiddleware
) -> None:
    plain = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, output_hidden_states=True).hidden_states
    with attach(model, middleware, REQUEST_ARGS):
        out = model(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, output_hidden_states=True)
    # hidden_states[LAYER + 1] is decoder layer LAYER's output: the stream the middleware edits.
    assert not torch.equal(out.hidden_states[LAYER + 1][0], plain[LAYER + 1][0])
    assert torch.equal(out.hidden_states[LAYER][0], plain[LAYER][0])
    assert torch.equal(out.hidden_states[LAYER + 1][1], plain[LAYER + 1][1])


@torch.no_grad()
def test_generate_steers_generated_tokens_only(model: LlamaForCausalLM, tmp_path: Path) -> None:
    sae = build_sae("standard", d_in=HIDDEN, d_sae=32, hook_name=f"blocks.{LAYER}.hook_resid_post")
    sae.save(tmp_path / "sae")
    mw = SAESteeringMiddleware(
        layer=LAYER,
        d_model=HIDDEN,
        sae_path=str(tmp_path / "sae"),
        tiers=default_tiers(FEATURES, strong_add=-40.0),
    )
    new = 3
    kw: dict[str, Any] = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "pad_token_id": 0}
    plain = model.generate(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, **kw)
    with attach(model, mw, REQUEST_ARGS) as session:
        steered = model.generate(input_ids=INPUT_IDS, attention_mask=ATTENTION_MASK, **kw)
    assert torch.equal(steered[1], plain[1])
    tokens = session.tokens(0)
    # The last generated token is sampled, never fed back: prompt 4 + new - 1 positions.
    assert [t["position"] for t in tokens] == list(range(4 + new - 1))
    assert [t[STEERED] for t in tokens] == [0.0] * 4 + [1.0] * (new - 1)
    safety: dict[str, Any] = {}
    SAESteeringMiddleware.annotate({}, {}, tokens, safety)
    assert safety["completion"]["steered_tokens"] == new - 1
    assert safety["prompt"]["steered_tokens"] == 0
    assert all(t[STEERED] == 0.0 for t in session.tokens(1))
