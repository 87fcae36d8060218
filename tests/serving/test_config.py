"""The serving config is strict: typos are errors with a field path, defaults are what `make serve` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from middleware.embedded import EMBEDDED_MODEL_NAME
from serving.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]


def test_default_serves_the_embedded_model() -> None:
    cfg = GatewayConfig()
    assert [m.name for m in cfg.models] == [EMBEDDED_MODEL_NAME]
    assert cfg.models[0].path is None and cfg.ingress.num_cpus == 0


def test_shipped_yaml_equals_defaults() -> None:
    assert GatewayConfig.from_file(ROOT / "deploy" / "gateway.yaml") == GatewayConfig()


def test_unknown_field_is_an_error_with_its_path() -> None:
    with pytest.raises(ValidationError) as e:
        GatewayConfig.model_validate({"models": [{"name": "m", "engine": {"enforce_eagre": True}}]})
    assert e.value.errors()[0]["loc"] == ("models", 0, "engine", "enforce_eagre")


def test_duplicate_model_names_rejected() -> None:
    with pytest.raises(ValidationError, match="unique"):
        GatewayConfig.model_validate({"models": [{"name": "a"}, {"name": "a"}]})


def test_middleware_needs_import_path_and_layer() -> None:
    with pytest.raises(ValidationError) as e:
        GatewayConfig.model_validate({"models": [{"name": "a", "middleware": [{"cls": "x:Y", "layer": -1}]}]})
    assert e.value.errors()[0]["loc"][-1] == "layer"
