"""The deployment files in deploy/, checked offline: the KubeRay RayService and the Serve config against
Ray Serve's own config schema, the app they import and the gateway config they name, the shapes
KubeRay requires (rayStartParams are strings), and the alert rules against the metrics that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import ray
import yaml
from prometheus_client import CollectorRegistry
from ray.serve.schema import ServeDeploySchema

from middleware.metrics import Cohort, GatewayMetrics
from serving.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
APP_ROOT_IN_IMAGE = "/app"  # workingDir of the containers: the repository's root in the image


def _rayservice() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay.yaml").read_text())


def _check_serve_config(serve: dict) -> None:
    schema = ServeDeploySchema.model_validate(serve)  # Ray Serve's own schema for `serve deploy`
    (app,) = schema.applications
    module, _, attr = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module), attr)
    assert callable(builder)
    config = str(app.args["config"])
    local = ROOT / config.removeprefix(APP_ROOT_IN_IMAGE + "/") if config.startswith("/") else DEPLOY.parent / config
    GatewayConfig.from_file(local)  # the gateway config it names exists and validates


def test_rayservice_is_a_valid_kuberay_rayservice() -> None:
    doc = _rayservice()
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService") and doc["metadata"]["name"]
    spec = doc["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    _check_serve_config(yaml.safe_load(spec["serveConfigV2"]))
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"].split(".")[:2] == ray.__version__.split(".")[:2]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        # KubeRay's CRD types rayStartParams as map[string]string: a bare number fails to apply.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["name"] and container["image"] and container["workingDir"] == APP_ROOT_IN_IMAGE
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    head_ports = {p["containerPort"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert 8000 in head_ports  # Serve's HTTP port, where the gateway answers
    for worker in cluster["workerGroupSpecs"]:
        assert worker["groupName"] and worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]


def test_serve_config_is_valid_for_serve_run_and_deploy() -> None:
    _check_serve_config(yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()))


def test_alert_rules_use_metrics_that_exist() -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry, ["m"], [Cohort("p", "e", "a")])
    # Every series name each family can have, initialised or not (flagged_total has no series until a flag).
    suffixes = ("", "_total", "_sum", "_count", "_bucket")
    names = {m.name + suffix for m in registry.collect() for suffix in suffixes}
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())["groups"]
    recorded = {r["record"] for g in rules for r in g["rules"] if "record" in r}
    alerts = [r for g in rules for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    for rule in alerts:
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in ("critical", "warning")
    for rule in [r for g in rules for r in g["rules"]]:
        # Metric names the gateway exports, or series a recording rule here makes (`level:metric:ops`).
        used = set(re.findall(r"(?<![:\w])steergate_[a-z_]+", rule["expr"]))
        used_recorded = set(re.findall(r"\w+:steergate_\w+:\w+", rule["expr"]))
        assert used <= names, (rule.get("alert") or rule.get("record"), used - names)
        assert used_recorded <= recorded, (rule.get("alert") or rule.get("record"), used_recorded - recorded)
