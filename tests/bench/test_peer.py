"""The pure parts of bench/peer.py: the vLLM server's command line, the gateways' configs, trace lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from bench.gateway import vllm_server_args
from bench.peer import _concurrencies, _gateway_config, _read_traces
from serving.config import EngineConfig, GatewayConfig, ModelConfig


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vllm_server_gets_the_gateways_engine_settings() -> None:
    model = ModelConfig(name="smol", engine=EngineConfig(), middleware=[])
    args = vllm_server_args(model, "/models/smol", 1234)
    assert args[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    e = model.engine
    assert (_flag(args, "--served-model-name"), _flag(args, "--model"), _flag(args, "--port")) == (
        "smol", "/models/smol", "1234")
    assert _flag(args, "--dtype") == e.dtype
    assert _flag(args, "--max-num-seqs") == str(e.max_num_seqs)
    assert _flag(args, "--stream-interval") == str(e.stream_interval)
    assert "--enforce-eager" not in args
    eager = ModelConfig(name="smol", engine=EngineConfig(enforce_eager=True), middleware=[])
    assert "--enforce-eager" in vllm_server_args(eager, "/m", 1)


def test_vllm_server_refuses_engine_args_it_cannot_mirror() -> None:
    model = ModelConfig(name="smol", engine=EngineConfig(extra_engine_args={"block_size": 32}), middleware=[])
    with pytest.raises(ValueError, match="extra_engine_args"):
        vllm_server_args(model, "/m", 1)


def test_gateway_configs_load_and_differ_only_in_middleware(tmp_path: Path) -> None:
    model = ModelConfig(name="smollm2-135m-instruct", engine=EngineConfig(enforce_eager=True), middleware=[])
    off = GatewayConfig.from_file(_gateway_config(model, True, tmp_path)).models[0]
    default = GatewayConfig.from_file(_gateway_config(model, False, tmp_path)).models[0]
    assert off.middleware == []
    assert default.middleware and default.middleware[0].cls == "middleware.detection:SafetyMiddleware"
    assert off.engine == default.engine == model.engine
    assert yaml.safe_load((tmp_path / "gateway-off.yaml").read_text())["models"][0]["middleware"] == []


def test_trace_lines_become_seconds_since_arrival_and_are_read_once(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps({"arrived": 100.0, "policy_validated": 100.002}) + "\n")
    traces, offset = _read_traces(path, 0)
    assert traces == [{"policy_validated": pytest.approx(0.002)}]
    with path.open("a") as f:
        f.write(json.dumps({"arrived": 5.0, "ingress_first_content": 5.5}) + "\n")
    traces, _ = _read_traces(path, offset)
    assert traces == [{"ingress_first_content": pytest.approx(0.5)}]
    assert _read_traces(None, 0) == ([], 0)


def test_concurrency_lists() -> None:
    assert _concurrencies("1,4, 16") == [1, 4, 16]
    with pytest.raises(argparse.ArgumentTypeError):
        _concurrencies("0,4")

