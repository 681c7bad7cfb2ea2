"""Osprey's generated stubs import under the installed protobuf runtime.

The import runs in a fresh interpreter: the pytest process may already hold
tritonclient's ``inference.*`` descriptors (other tests talk to the server with
tritonclient), and loading ours next to them fails with "duplicate symbol". A fresh
process also gives a clean ``sys.modules`` to check for a stray top-level
``inference`` module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import google.protobuf
from server.protocol.inference import grpc_service_pb2, grpc_service_pb2_grpc, model_config_pb2

print(json.dumps({
    "protobuf": google.protobuf.__version__,
    "package": grpc_service_pb2.DESCRIPTOR.package,
    "model_config_package": model_config_pb2.DESCRIPTOR.package,
    "file": grpc_service_pb2.DESCRIPTOR.name,
    "dependencies": [d.name for d in grpc_service_pb2.DESCRIPTOR.dependencies],
    "services": sorted(grpc_service_pb2.DESCRIPTOR.services_by_name),
    "has_stub": hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceStub"),
    "has_servicer": hasattr(grpc_service_pb2_grpc, "GRPCInferenceServiceServicer"),
    "has_add": hasattr(grpc_service_pb2_grpc, "add_GRPCInferenceServiceServicer_to_server"),
    "top_level_inference": sorted(
        m for m in sys.modules if m == "inference" or m.startswith("inference.")
    ),
    "tritonclient_loaded": any(m.startswith("tritonclient") for m in sys.modules),
    "round_trip": model_config_pb2.ModelConfig.FromString(
        model_config_pb2.ModelConfig(name="m", max_batch_size=8).SerializeToString()
    ).max_batch_size,
}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        "importing server.protocol.inference failed (generate the stubs with "
        f"`python setup.py generate_stubs`):\n{proc.stderr.strip()}"
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_protobuf_runtime_is_6(probe: dict[str, Any]) -> None:
    major = int(probe["protobuf"].split(".")[0])
    assert major == 6, f"protobuf {probe['protobuf']} installed; the stubs need 6.x"


def test_package_is_inference(probe: dict[str, Any]) -> None:
    assert probe["package"] == "inference"
    assert probe["model_config_package"] == "inference"
    assert probe["file"] == "inference/grpc_service.proto"
    assert probe["dependencies"] == ["inference/model_config.proto"]
    assert probe["services"] == ["GRPCInferenceService"]


def test_grpc_stubs_present(probe: dict[str, Any]) -> None:
    assert probe["has_stub"]
    assert probe["has_servicer"]
    assert probe["has_add"]


def test_no_top_level_inference_module(probe: dict[str, Any]) -> None:
    assert probe["top_level_inference"] == [], (
        "stubs created top-level modules (imports not rewritten to package-relative): "
        f"{probe['top_level_inference']}"
    )
    assert not probe["tritonclient_loaded"]


def test_messages_round_trip(probe: dict[str, Any]) -> None:
    assert probe["round_trip"] == 8
