"""Model versions with a feature spec, against a real server (tritonclient only).

A version folder holding ``feature_spec.json`` and ``reference_profile.json`` beside
``model.onnx`` takes the spec's raw columns (FP32 / BYTES, shape [-1, 1]); the server
runs the compiled transform (counting the drift sketch) before ONNX Runtime. The
expected answers come from the NumPy twin (``native.transform_py``) and an
in-process ONNX Runtime session on the same rows. The spec avoids log1p so the
Cython kernel and the twin agree bit for bit.
"""

from __future__ import annotations

import asyncio
import queue
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import generate_latest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from native import transform_py
from native.feature_spec import (
    Bucketize,
    CategoricalColumn,
    Clip,
    FeatureSpec,
    HashBuckets,
    Impute,
    NumericColumn,
    Standardize,
    Vocabulary,
)
from native.reference_profile import ReferenceProfile
from native.transform_plan import TransformPlan, compile_plan

from .clientutil import expect_error, metric, metrics_text, model_stats, status_of
from .onnx_models import features_graph, offset_graph, write_model
from .process import ServerProcess

MODEL = "card_spec"
NUMERIC = ("amount", "age", "balance")
CATEGORICAL = ("merchant", "device")
COLUMNS = (*NUMERIC, *CATEGORICAL)
MAX_BATCH = 8
CONFIG = {"max_batch_size": MAX_BATCH, "max_queue_delay_us": 50_000, "max_request_rows": 1000}
DRIFT_METRIC = "osprey_drift_rows_sketched_total"

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Fitted:
    spec: FeatureSpec
    profile: ReferenceProfile
    plan: TransformPlan

    @property
    def width(self) -> int:
        return self.plan.n_features


def _training_frame(n: int = 2000) -> dict[str, Any]:
    rng = np.random.default_rng(20240611)
    amount = rng.lognormal(3.0, 1.0, n)
    amount[rng.random(n) < 0.05] = np.nan
    merchants = ["grocery", "fuel", "travel", "online", "pharmacy", "café", "rare"]
    return {
        "amount": amount,
        "age": rng.integers(18, 90, n).astype(np.float64),
        "balance": rng.normal(1000.0, 300.0, n),
        "merchant": rng.choice(merchants, n, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.099, 0.001]),
        "device": rng.choice([f"device-{i}" for i in range(40)], n),
    }


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    template = FeatureSpec((
        NumericColumn("amount", impute=Impute("median"), clip=Clip(lo=0.0, hi=5000.0),
                      standardize=Standardize()),
        NumericColumn("age", impute=Impute("mean"), bucketize=Bucketize(quantiles=4)),
        NumericColumn("balance", impute=Impute("constant", 0.0), standardize=Standardize()),
        CategoricalColumn("merchant", Vocabulary(max_size=6, min_count=5), max_bytes=32),
        CategoricalColumn("device", HashBuckets(buckets=8, seed=3, output="index"),
                          max_bytes=32),
    ))
    frame = _training_frame()
    spec = template.fit(frame)
    profile = spec.reference_profile(frame)
    return Fitted(spec, profile, compile_plan(spec, profile))


def write_spec_model(
    repo: Path, name: str, fitted: Fitted, *, width: int | None = None,
    spec: bool = True, profile: bool = True, config: dict[str, Any] | None = None,
) -> Path:
    path = write_model(repo, name, features_graph(width or fitted.width), config or CONFIG)
    if spec:
        (path.parent / "feature_spec.json").write_text(fitted.spec.to_json())
    if profile:
        (path.parent / "reference_profile.json").write_text(fitted.profile.to_json())
    return path


@dataclass
class Served:
    proc: ServerProcess
    repo: Path
    client: grpcclient.InferenceServerClient
    session: Any  # in-process ONNX Runtime on the same model


@pytest.fixture(scope="module")
def served(
    fitted: Fitted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    repo = tmp_path_factory.mktemp("spec_models")
    path = write_spec_model(repo, MODEL, fitted)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    proc = ServerProcess(repo, tmp_path_factory.mktemp("spec_home"))
    client = grpcclient.InferenceServerClient(proc.url)
    try:
        yield Served(proc, repo, client, session)
    finally:
        client.close()
        proc.stop()


# -- requests and their expected answers ----------------------------------------------


def encode_bytes(values: np.ndarray) -> bytes:
    """KServe BYTES: u32 little-endian length + bytes per element."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values.reshape(-1))


def make_rows(n: int, seed: int = 0) -> Columns:
    """``n`` raw rows with the awkward values a client sends: NaN, ±inf, huge and
    negative numbers, empty strings, unseen and non-UTF-8 categories."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.2, n).astype(np.float32)
    age = rng.integers(10, 100, n).astype(np.float32)
    balance = rng.normal(1000.0, 400.0, n).astype(np.float32)
    specials = [np.nan, -5.0, 1e30, np.inf, -np.inf, 0.0]
    for i, value in enumerate(specials[: n]):
        amount[i] = value
        age[(i + 1) % n] = np.nan
        balance[(i + 2) % n] = value
    merchant_pool = [b"grocery", b"fuel", b"travel", "café".encode(), b"", b"unseen",
                     b"\xff\xfe", b"online"]
    device_pool = [b"device-1", b"device-7", b"", b"new-device", b"\x00\x01binary"]
    merchant = np.empty(n, dtype=object)
    device = np.empty(n, dtype=object)
    merchant[:] = [merchant_pool[int(k)] for k in rng.integers(0, len(merchant_pool), n)]
    device[:] = [device_pool[int(k)] for k in rng.integers(0, len(device_pool), n)]
    return {
        "amount": amount.reshape(n, 1),
        "age": age.reshape(n, 1),
        "balance": balance.reshape(n, 1),
        "merchant": merchant.reshape(n, 1),
        "device": device.reshape(n, 1),
    }


def twin_columns(rows: Columns) -> dict[str, Any]:
    return {
        name: encode_bytes(a) if name in CATEGORICAL else a for name, a in rows.items()
    }


def expected(fitted: Fitted, session: Any, rows: Columns) -> tuple[np.ndarray, np.ndarray]:
    """(FEATURES, SCORE) from the NumPy twin and in-process ONNX Runtime."""
    n = rows["amount"].shape[0]
    matrix, _ = transform_py.transform(fitted.plan, twin_columns(rows), n)
    (score,) = session.run(["SCORE"], {"INPUT": matrix})
    return matrix, score


def infer_inputs(rows: Columns) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in rows.items():
        datatype = "BYTES" if array.dtype == object else (
            "FP32" if array.dtype == np.float32 else "FP64"
        )
        infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        np.array_equal(a.view(np.uint32), b.view(np.uint32))
    )


def drift_rows(served: Served, model: str = MODEL) -> float:
    return metric(served.proc.metrics_port, DRIFT_METRIC, model=model, version="1")


# -- signature ------------------------------------------------------------------------


def test_metadata_shows_the_raw_columns(served: Served, fitted: Fitted) -> None:
    meta = served.client.get_model_metadata(MODEL)
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("amount", "FP32", [-1, 1]),
        ("age", "FP32", [-1, 1]),
        ("balance", "FP32", [-1, 1]),
        ("merchant", "BYTES", [-1, 1]),
        ("device", "BYTES", [-1, 1]),
    ]
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("FEATURES", "FP32", [-1, fitted.width]),
        ("SCORE", "FP32", [-1, 1]),
    ]


def test_config_shows_the_raw_columns(served: Served, fitted: Fitted) -> None:
    config = served.client.get_model_config(MODEL).config
    assert config.max_batch_size == MAX_BATCH
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("amount", 11, [1]),  # TYPE_FP32
        ("age", 11, [1]),
        ("balance", 11, [1]),
        ("merchant", 13, [1]),  # TYPE_STRING
        ("device", 13, [1]),
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("FEATURES", [fitted.width]), ("SCORE", [1]),
    ]
    assert config.parameters["feature_count"].string_value == str(fitted.width)
    assert config.parameters["model_input"].string_value == "INPUT"


# -- inference ------------------------------------------------------------------------


def test_inference_equals_twin_and_onnxruntime(served: Served, fitted: Fitted) -> None:
    rows = make_rows(7, seed=1)
    result = served.client.infer(MODEL, infer_inputs(rows))
    features, score = expected(fitted, served.session, rows)
    assert same_bits(result.as_numpy("FEATURES"), features)
    assert same_bits(result.as_numpy("SCORE"), score)


def test_typed_contents_equal_raw(served: Served, fitted: Fitted) -> None:
    """fp32_contents and bytes_contents (re-encoded into a KServe buffer) work too."""
    rows = make_rows(5, seed=2)
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, array in rows.items():
        tensor = request.inputs.add(
            name=name, datatype="BYTES" if name in CATEGORICAL else "FP32", shape=[5, 1]
        )
        if name in CATEGORICAL:
            tensor.contents.bytes_contents.extend(array.reshape(-1).tolist())
        else:
            tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
    with grpc.insecure_channel(served.proc.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=30
        )
    names = [o.name for o in response.outputs]
    got = np.frombuffer(response.raw_output_contents[names.index("FEATURES")], np.float32)
    features, _ = expected(fitted, served.session, rows)
    assert same_bits(got.reshape(features.shape), features)


def test_oversize_request_is_split_and_reassembled(served: Served, fitted: Fitted) -> None:
    rows = make_rows(3 * MAX_BATCH + 3, seed=3)
    before = model_stats(served.client, MODEL).execution_count
    result = served.client.infer(MODEL, infer_inputs(rows))
    after = model_stats(served.client, MODEL).execution_count
    features, score = expected(fitted, served.session, rows)
    assert same_bits(result.as_numpy("FEATURES"), features)
    np.testing.assert_allclose(result.as_numpy("SCORE"), score, rtol=1e-6, atol=1e-7)
    assert after - before == 4  # 8 + 8 + 8 + 3 rows


def test_concurrent_requests_share_batches(served: Served, fitted: Fitted) -> None:
    requests = [make_rows(1 + i % 3, seed=100 + i) for i in range(12)]
    requests.insert(5, make_rows(MAX_BATCH + 3, seed=99))  # split: 8 + 3 rows
    before = model_stats(served.client, MODEL)
    rows_before = drift_rows(served)
    fired = _fire(served, requests)
    after = model_stats(served.client, MODEL)
    for rows, outcome in zip(requests, fired, strict=True):
        features, score = expected(fitted, served.session, rows)
        assert outcome.error is None, outcome.error
        assert same_bits(outcome.result.as_numpy("FEATURES"), features)
        np.testing.assert_allclose(outcome.result.as_numpy("SCORE"), score, rtol=1e-6, atol=1e-7)
    total = sum(r["amount"].shape[0] for r in requests)
    assert after.inference_count - before.inference_count == total
    assert after.execution_count - before.execution_count < len(requests)  # batched
    assert drift_rows(served) - rows_before == total


@dataclass
class _Outcome:
    result: Any
    error: Any


def _fire(served: Served, requests: list[Columns]) -> list[_Outcome]:
    """Send every request at once (async_infer), outcomes in request order."""
    done: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for index, rows in enumerate(requests):
        served.client.async_infer(
            MODEL, infer_inputs(rows),
            lambda result, error, index=index: done.put((index, result, error)),
        )
    outcomes: dict[int, _Outcome] = {}
    while len(outcomes) < len(requests):
        index, result, error = done.get(timeout=60)
        outcomes[index] = _Outcome(result, error)
    return [outcomes[i] for i in range(len(requests))]


# -- bad columns ----------------------------------------------------------------------


def _with(rows: Columns, **changes: Any) -> Columns:
    out = dict(rows)
    for name, value in changes.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def _bad_cases() -> list[tuple[str, str, Columns]]:
    rows = make_rows(2, seed=4)
    long_device = rows["device"].copy()
    long_device[1, 0] = b"x" * 33
    return [
        ("missing", "balance", _with(rows, balance=None)),
        ("unknown", "colour", _with(rows, colour=rows["amount"])),
        ("numeric as FP64", "amount", _with(rows, amount=rows["amount"].astype(np.float64))),
        ("categorical as FP32", "merchant", _with(rows, merchant=rows["amount"])),
        ("row count", "age", _with(rows, age=np.zeros((3, 1), np.float32))),
        ("shape [n]", "balance", _with(rows, balance=rows["balance"].reshape(2))),
        ("shape [1, n]", "device", _with(rows, device=rows["device"].reshape(1, 2))),
        ("longer than max_bytes", "device", _with(rows, device=long_device)),
    ]


@pytest.mark.parametrize(
    ("column", "rows"),
    [(column, rows) for _, column, rows in _bad_cases()],
    ids=[case for case, _, _ in _bad_cases()],
)
def test_bad_column_is_invalid_argument_naming_it(
    served: Served, column: str, rows: Columns
) -> None:
    error = expect_error(lambda: served.client.infer(MODEL, infer_inputs(rows)))
    assert status_of(error) == "INVALID_ARGUMENT", error
    assert f"'{column}'" in error.message(), error.message()


def _raw_request(rows: Columns, **raw_bytes: tuple[list[int], bytes]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name, array in rows.items():
        if name in raw_bytes:
            shape, raw = raw_bytes[name]
        else:
            shape = list(array.shape)
            raw = encode_bytes(array) if name in CATEGORICAL else array.tobytes()
        request.inputs.add(
            name=name, datatype="BYTES" if name in CATEGORICAL else "FP32", shape=shape
        )
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("case", "shape", "raw"),
    [
        ("more elements than rows", [2, 1], encode_bytes(np.array([b"a", b"b", b"c"], object))),
        ("fewer elements than rows", [2, 1], encode_bytes(np.array([b"a"], object))),
        ("truncated length prefix", [2, 1], encode_bytes(np.array([b"a"], object)) + b"\x01"),
        ("length past the end", [2, 1], encode_bytes(np.array([b"a"], object))
         + struct.pack("<I", 50) + b"abc"),
    ],
)
def test_malformed_bytes_column(served: Served, case: str, shape: list[int], raw: bytes) -> None:
    request = _raw_request(make_rows(2, seed=5), merchant=(shape, raw))
    with grpc.insecure_channel(served.proc.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert "'merchant'" in info.value.details(), info.value.details()


def test_bad_request_in_a_batch_fails_alone(served: Served, fitted: Fitted) -> None:
    """A value the transform refuses fails its own request only; the others in its
    batch are answered, and only their rows are counted for drift."""
    requests = [make_rows(2, seed=200 + i) for i in range(8)]
    requests[3]["device"] = requests[3]["device"].copy()
    requests[3]["device"][0, 0] = b"y" * 40
    rows_before = drift_rows(served)
    outcomes = _fire(served, requests)
    for i, (rows, outcome) in enumerate(zip(requests, outcomes, strict=True)):
        if i == 3:
            assert outcome.error is not None
            assert status_of(outcome.error) == "INVALID_ARGUMENT"
            assert "'device'" in outcome.error.message()
            assert "element 0" in outcome.error.message()
            continue
        assert outcome.error is None, outcome.error
        features, _ = expected(fitted, served.session, rows)
        assert same_bits(outcome.result.as_numpy("FEATURES"), features)
    assert drift_rows(served) - rows_before == 2 * 7


# -- loading --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "present", "missing"),
    [
        ("no_profile", "feature_spec.json", "reference_profile.json"),
        ("no_spec", "reference_profile.json", "feature_spec.json"),
    ],
)
def test_one_file_without_the_other_is_a_load_error(
    served: Served, fitted: Fitted, name: str, present: str, missing: str
) -> None:
    write_spec_model(
        served.repo, name, fitted,
        spec=present == "feature_spec.json", profile=present == "reference_profile.json",
    )
    error = expect_error(
        lambda: served.client.load_model(name, headers=served.proc.admin_headers)
    )
    assert missing in error.message() and name in error.message(), error.message()
    assert served.client.is_model_ready(name) is False
    rows = [m for m in served.client.get_model_repository_index().models if m.name == name]
    assert rows and rows[0].state == "UNAVAILABLE" and missing in rows[0].reason


def test_width_mismatch_is_a_load_error(served: Served, fitted: Fitted) -> None:
    wrong = fitted.width + 3
    write_spec_model(served.repo, "wrong_width", fitted, width=wrong)
    error = expect_error(
        lambda: served.client.load_model("wrong_width", headers=served.proc.admin_headers)
    )
    message = error.message()
    assert f"{fitted.width} features" in message and f"width {wrong}" in message, message
    assert served.client.is_model_ready("wrong_width") is False


def test_invalid_spec_is_a_load_error(served: Served, fitted: Fitted) -> None:
    path = write_spec_model(served.repo, "bad_spec", fitted)
    (path.parent / "feature_spec.json").write_text('{"schema": "osprey.feature_spec/1"}')
    error = expect_error(
        lambda: served.client.load_model("bad_spec", headers=served.proc.admin_headers)
    )
    assert "feature_spec.json" in error.message() and "columns" in error.message()


def test_plain_versions_are_unchanged(served: Served) -> None:
    """A plain model next to a spec model keeps its ONNX inputs (and no drift series)."""
    write_model(served.repo, "plain", offset_graph(1.0), {"max_batch_size": 4})
    served.client.load_model("plain", headers=served.proc.admin_headers)
    meta = served.client.get_model_metadata("plain")
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("INPUT", "FP32", [-1, 1])
    ]
    x = np.array([[2.0]], np.float32)
    inputs = [grpcclient.InferInput("INPUT", [1, 1], "FP32")]
    inputs[0].set_data_from_numpy(x)
    assert served.client.infer("plain", inputs).as_numpy("OUTPUT")[0, 0] == 3.0
    lines = metrics_text(served.proc.metrics_port).splitlines()
    assert any(line.startswith(DRIFT_METRIC) and f'model="{MODEL}"' in line for line in lines)
    assert not any(line.startswith(DRIFT_METRIC) and 'model="plain"' in line for line in lines)


# -- drift counts ---------------------------------------------------------------------


def test_drift_metric_moves_by_the_rows_sent(served: Served) -> None:
    before = drift_rows(served)
    served.client.infer(MODEL, infer_inputs(make_rows(5, seed=6)))
    served.client.infer(MODEL, infer_inputs(make_rows(1, seed=7)))
    assert drift_rows(served) - before == 6
    # refused requests are not counted
    expect_error(lambda: served.client.infer(MODEL, infer_inputs(_bad_cases()[0][2])))
    assert drift_rows(served) - before == 6


def test_drift_counts_method_equals_the_twin(tmp_path: Path, fitted: Fitted) -> None:
    """``ServedVersion.drift_counts()`` adds up exactly what the twin counts, over
    concurrent batches on two instances."""
    from server.loaded_models import LoadedModels
    from server.metrics import ServerMetrics
    from server.model_source import RepositoryFolder

    write_spec_model(tmp_path, MODEL, fitted, config={**CONFIG, "instance_count": 2})
    requests = [make_rows(1 + i % 4, seed=300 + i) for i in range(10)]

    async def serve() -> Any:
        models = LoadedModels(RepositoryFolder(tmp_path), ServerMetrics())
        await models.load(MODEL)
        version = models.get(MODEL)
        empty = version.drift_counts()
        assert empty is not None and empty.rows == 0 and not empty.counts.any()
        await asyncio.gather(*(
            version.batcher.infer(twin_columns(r), r["amount"].shape[0], 0, None)
            for r in requests
        ))
        counts = version.drift_counts()
        await models.close()
        return counts

    drift = asyncio.run(serve())
    expected_counts = fitted.plan.new_counts()
    for rows in requests:
        transform_py.count(fitted.plan, twin_columns(rows), rows["amount"].shape[0],
                           expected_counts)
    assert drift.rows == sum(r["amount"].shape[0] for r in requests)
    assert np.array_equal(drift.counts, expected_counts)
    assert drift.profile == fitted.profile
    per_feature = drift.per_feature()
    assert list(per_feature) == list(COLUMNS)
    assert all(int(c.sum()) == drift.rows for c in per_feature.values())


def test_drift_sketch_false_transforms_without_counting(tmp_path: Path, fitted: Fitted) -> None:
    """``"drift_sketch": false``: the same answers, no counts, no drift metric series."""
    from server.loaded_models import LoadedModels
    from server.metrics import ServerMetrics
    from server.model_source import RepositoryFolder

    write_spec_model(tmp_path, MODEL, fitted, config={**CONFIG, "drift_sketch": False})
    rows = make_rows(7, seed=41)
    session = ort.InferenceSession(str(tmp_path / MODEL / "1" / "model.onnx"))

    async def serve() -> Any:
        metrics = ServerMetrics()
        models = LoadedModels(RepositoryFolder(tmp_path), metrics)
        await models.load(MODEL)
        version = models.get(MODEL)
        try:
            assert version.features is not None and not version.features.sketching
            assert version.drift_counts() is None
            outputs = await version.batcher.infer(twin_columns(rows), 7, 0, None)
            assert version.drift_counts() is None
            return outputs, generate_latest(metrics.registry).decode()
        finally:
            await models.close()

    outputs, text = asyncio.run(serve())
    want_features, want_score = expected(fitted, session, rows)
    assert same_bits(outputs["FEATURES"], want_features)
    assert same_bits(outputs["SCORE"], want_score)
    assert "osprey_request_duration_seconds" in text  # the registry is the server's
    assert not any(line.startswith(DRIFT_METRIC + "{") for line in text.splitlines())
