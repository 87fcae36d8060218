"""The GPU path (skipped without a CUDA device, see tests/conftest.py): steering on the GPU never waits
for the device (no host sync), is captured in a CUDA graph, and gives the CPU's result; the shipped
middleware's whole step does not wait either.

Run on a GPU machine: `make install ENGINE=gpu && .venv/bin/python -m pytest -m gpu`. The throughput
of steered vs unsteered requests there: `.venv/bin/python bench/steering_overhead.py` (README).
"""

from __future__ import annotations

import pytest
import torch

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet, SafetyMiddleware
from middleware.hooks import BatchLayout
from middleware.interventions import GateSpec, InterventionSpec, PlanBatch, SteeringPlan, apply_steering
from middleware.sae import load_sae_config
from tests.middleware.builders import build_inputs, build_sae

pytestmark = pytest.mark.gpu


def test_steering_on_cuda_has_no_host_sync_and_matches_the_cpu() -> None:
    sae = build_sae("topk")
    h = build_inputs(n_tokens=64)
    plan = SteeringPlan.compile([InterventionSpec(feature=1, mode="ablate"),
                                 InterventionSpec(feature=2, mode="clamp", strength=-1.0)], sae,
                                GateSpec(features=[1, 2], threshold=0.0))
    rows = torch.arange(64) % 3 - 1
    mask = torch.arange(64) % 4 != 0
    cpu_out, cpu_changed = apply_steering(h, sae, PlanBatch.from_plans([plan, None], rows, sae), mask)
    sae.to("cuda")
    batch = PlanBatch.from_plans([plan, None], rows, sae)
    h_cuda, mask_cuda = h.cuda(), mask.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device->host wait raises
    try:
        out, changed = apply_steering(h_cuda, sae, batch, mask_cuda)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out.cpu(), cpu_out, rtol=1e-4, atol=1e-4)
    assert torch.equal(changed.cpu(), cpu_changed)


def test_steering_is_captured_in_a_cuda_graph() -> None:
    sae = build_sae("standard").to("cuda")
    h = build_inputs(n_tokens=16).cuda()
    plan = SteeringPlan.compile([InterventionSpec(feature=3, mode="add", strength=2.0)], sae)
    batch = PlanBatch.from_plans([plan], torch.zeros(16, dtype=torch.long), sae)
    expected, _ = apply_steering(h, sae, batch)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        apply_steering(h, sae, batch)  # warm-up on the side stream, as CUDA graph capture requires
        with torch.cuda.graph(graph):
            captured, _ = apply_steering(h, sae, batch)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, expected)


def test_the_safety_step_on_cuda_never_waits_for_the_device_and_matches_the_cpu() -> None:
    """The shipped middleware's whole step (detection, tier plans, token masks, a batch whose
    requests change so the steering tables are rebuilt) queues work without one device->host wait;
    only shipping the side outputs to the host afterwards waits (HookRuntime, once per output)."""
    layer = load_sae_config(FeatureSet.load(EMBEDDED_FEATURES).sae_path).hook_layer
    on_cpu = SafetyMiddleware(layer=layer, d_model=576, features_path=str(EMBEDDED_FEATURES))
    on_cuda = SafetyMiddleware(layer=layer, d_model=576, features_path=str(EMBEDDED_FEATURES))
    steps, tiers = [], ("light", "strong")
    for requests in (16, 15, 16):
        layout = BatchLayout.from_spans(
            [f"r{i}" for i in range(requests)], [(i, i + 1) for i in range(requests)], [20] * requests,
            [8] * requests, request_args=[{"steering": {"tier": tiers[i % 2]}} for i in range(requests)],
            token_ids=torch.randint(100, 1000, (requests,)))
        steps.append((layout, torch.randn(requests, 576) * 3))  # (R, d): one decode token per request
    on_cuda(steps[0][1].cuda(), steps[0][0].to(torch.device("cuda")))  # warm-up: the SAE moves once
    streams = [stream.cuda() for _, stream in steps]
    torch.cuda.synchronize()
    results = []
    torch.cuda.set_sync_debug_mode("error")  # any device->host wait raises
    try:
        for (layout, _), stream in zip(steps, streams, strict=True):
            results.append(on_cuda(stream, layout.to(torch.device("cuda"))))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for (layout, stream), got in zip(steps, results, strict=True):
        want = on_cpu(stream, layout)
        assert want.stream is not None and got.stream is not None  # strong steers every generated token
        torch.testing.assert_close(got.stream.cpu(), want.stream, rtol=1e-3, atol=1e-3)
        for name, values in want.side_outputs.items():
            torch.testing.assert_close(got.side_outputs[name].cpu(), values, rtol=1e-3, atol=1e-3,
                                       equal_nan=True)
