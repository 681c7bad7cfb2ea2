"""Dynamic batching against a real server: rows, delay, shapes, splitting, priorities.

A server of its own (module scope) serves models configured for each property, so
the statistics each test reads move only because of that test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import helper

from .clientutil import (
    Fired,
    batch_sizes,
    fire_all,
    make_inputs,
    metric,
    model_stats,
    sleep_request,
)
from .extra_models import dynamic_width_graph, sleep_graph
from .onnx_models import OPSET, identity_graph, mlp_graph, write_model
from .process import ServerProcess

FEATURES = 32


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("batching_models")
    write_model(
        repo, "mlp", mlp_graph(FEATURES), {"max_batch_size": 16, "max_queue_delay_us": 20_000}
    )
    write_model(
        repo, "marker", identity_graph("INT64", width=2),
        {"max_batch_size": 32, "max_queue_delay_us": 20_000},
    )
    write_model(
        repo, "mlp_delay", mlp_graph(FEATURES),
        {"max_batch_size": 8, "max_queue_delay_us": 1_000_000},
    )
    write_model(
        repo, "dynamic", dynamic_width_graph(), {"max_batch_size": 8, "max_queue_delay_us": 300_000}
    )
    write_model(
        repo, "split", mlp_graph(FEATURES),
        {"max_batch_size": 8, "max_queue_delay_us": 1000, "max_request_rows": 100},
    )
    write_model(
        repo, "sleep", sleep_graph(),
        {"max_batch_size": 1, "max_queue_delay_us": 0, "max_queue_size": 16,
         "priority_levels": 2, "default_priority_level": 2},
    )
    proc = ServerProcess(repo, tmp_path_factory.mktemp("batching_home"))
    yield proc
    assert proc.stop() == 0, proc.stderr


@pytest.fixture()
def client(batching_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(batching_server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def mlp_session() -> ort.InferenceSession:
    """The same MLP in process: the unbatched reference."""
    model = helper.make_model(mlp_graph(FEATURES), opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _mlp_requests(count: int, seed: int, max_rows: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_rows + 1, size=count)
    return [{"INPUT": rng.standard_normal((int(n), FEATURES)).astype(np.float32)} for n in sizes]


def test_concurrent_requests_share_executions_and_match_unbatched_inference(
    client: grpcclient.InferenceServerClient, mlp_session: ort.InferenceSession
) -> None:
    requests = _mlp_requests(32, seed=1)
    rows = sum(r["INPUT"].shape[0] for r in requests)
    before = model_stats(client, "mlp")
    outcomes = fire_all(client, "mlp", requests)
    after = model_stats(client, "mlp")

    for request, outcome in zip(requests, outcomes, strict=True):
        expected = mlp_session.run(None, request)[0]  # this request alone
        got = outcome.output("PROBABILITY")
        assert got.shape == (request["INPUT"].shape[0], 1)
        assert np.array_equal(got, expected), f"request {outcome.index} differs from unbatched"
    executions = after.execution_count - before.execution_count
    assert executions < len(requests), "concurrent requests were never batched"
    assert after.inference_count - before.inference_count == rows  # rows, not requests
    assert after.inference_stats.success.count - before.inference_stats.success.count == 32
    grown = {
        size: count - batch_sizes(before).get(size, 0)
        for size, count in batch_sizes(after).items()
    }
    assert sum(size * n for size, n in grown.items()) == rows
    assert max(size for size, n in grown.items() if n) > 3  # some batch held several requests


def test_rows_keep_their_request_and_order(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(2)
    requests = []
    for index in range(40):
        n = int(rng.integers(1, 6))
        marker = np.stack([np.full(n, 1000 + index), np.arange(n)], axis=1).astype(np.int64)
        requests.append({"INPUT": marker})
    before = model_stats(client, "marker")
    outcomes = fire_all(client, "marker", requests)
    after = model_stats(client, "marker")
    for request, outcome in zip(requests, outcomes, strict=True):
        np.testing.assert_array_equal(outcome.output("OUTPUT"), request["INPUT"])
    assert after.execution_count - before.execution_count < len(requests)


def test_full_batch_is_not_delayed(client: grpcclient.InferenceServerClient) -> None:
    """max_queue_delay_us is 1 s, but a request of max_batch_size rows runs at once."""
    x = np.random.default_rng(3).standard_normal((8, FEATURES)).astype(np.float32)
    client.infer("mlp_delay", make_inputs({"INPUT": x}))  # connection and first-call costs
    before = model_stats(client, "mlp_delay")
    start = time.monotonic()
    client.infer("mlp_delay", make_inputs({"INPUT": x}))
    elapsed = time.monotonic() - start
    assert elapsed < 0.5, f"a full batch waited {elapsed:.3f}s"
    after = model_stats(client, "mlp_delay")
    assert after.execution_count - before.execution_count == 1


def test_short_batch_waits_for_the_delay(client: grpcclient.InferenceServerClient) -> None:
    x = np.ones((1, FEATURES), np.float32)
    start = time.monotonic()
    client.infer("mlp_delay", make_inputs({"INPUT": x}))
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 5, f"a lone 1-row request waited {elapsed:.3f}s, not ~1s"


def test_batch_leaves_as_soon_as_it_is_full(client: grpcclient.InferenceServerClient) -> None:
    """1 row, then 7 more 0.2 s later: the batch is full at 8 and runs, long before 1 s."""
    before = model_stats(client, "mlp_delay")
    fired = Fired()
    start = time.monotonic()
    fired.send(client, "mlp_delay", {"INPUT": np.ones((1, FEATURES), np.float32)})
    time.sleep(0.2)
    fired.send(client, "mlp_delay", {"INPUT": np.ones((7, FEATURES), np.float32)})
    outcomes = fired.wait()
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    latest = max(o.done_at for o in outcomes) - start
    assert latest < 0.8, f"the full batch waited until {latest:.3f}s"
    after = model_stats(client, "mlp_delay")
    assert after.execution_count - before.execution_count == 1
    assert batch_sizes(after).get(8, 0) - batch_sizes(before).get(8, 0) == 1


def test_requests_with_different_non_batch_dims_never_share_a_batch(
    client: grpcclient.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(4)
    narrow = [{"INPUT": rng.standard_normal((1, 3)).astype(np.float32)} for _ in range(4)]
    wide = [{"INPUT": rng.standard_normal((1, 5)).astype(np.float32)} for _ in range(4)]
    before = model_stats(client, "dynamic")
    outcomes = fire_all(client, "dynamic", narrow + wide)
    after = model_stats(client, "dynamic")
    for request, outcome in zip(narrow + wide, outcomes, strict=True):
        x = request["INPUT"]
        np.testing.assert_array_equal(outcome.output("DOUBLE"), x + x)
        np.testing.assert_allclose(outcome.output("SUM"), x.sum(axis=1, keepdims=True), rtol=1e-6)
    assert after.inference_count - before.inference_count == 8
    # Each width batched with its own kind only: two executions of four rows.
    grown = {s: n - batch_sizes(before).get(s, 0) for s, n in batch_sizes(after).items()}
    assert {s: n for s, n in grown.items() if n} == {4: 2}
    assert after.execution_count - before.execution_count == 2

    # Interleaved widths: still never mixed (a mixed batch could not even be packed).
    interleaved = [r for pair in zip(narrow, wide, strict=True) for r in pair]
    outcomes = fire_all(client, "dynamic", interleaved)
    for request, outcome in zip(interleaved, outcomes, strict=True):
        np.testing.assert_array_equal(outcome.output("DOUBLE"), request["INPUT"] * 2)


def test_oversize_request_is_split_and_reassembled(
    client: grpcclient.InferenceServerClient, mlp_session: ort.InferenceSession
) -> None:
    x = np.random.default_rng(5).standard_normal((37, FEATURES)).astype(np.float32)
    before = model_stats(client, "split")
    result = client.infer("split", make_inputs({"INPUT": x}))
    after = model_stats(client, "split")
    got = result.as_numpy("PROBABILITY")
    assert got.shape == (37, 1)
    assert np.array_equal(got, mlp_session.run(None, {"INPUT": x})[0])
    assert after.execution_count - before.execution_count == math.ceil(37 / 8)
    assert after.inference_count - before.inference_count == 37
    grown = {s: n - batch_sizes(before).get(s, 0) for s, n in batch_sizes(after).items()}
    assert {s: n for s, n in grown.items() if n} == {8: 4, 5: 1}
    # Request counts count the request once, as Triton does, not once per chunk.
    for part in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        now, then = getattr(after.inference_stats, part), getattr(before.inference_stats, part)
        assert now.count - then.count == 1, part
        assert now.ns > then.ns, part


def test_split_request_alongside_small_ones(
    client: grpcclient.InferenceServerClient, mlp_session: ort.InferenceSession
) -> None:
    rng = np.random.default_rng(6)
    requests = [
        {"INPUT": rng.standard_normal((n, FEATURES)).astype(np.float32)} for n in (3, 21, 2, 17, 1)
    ]
    outcomes = fire_all(client, "split", requests)
    for request, outcome in zip(requests, outcomes, strict=True):
        assert np.array_equal(outcome.output("PROBABILITY"), mlp_session.run(None, request)[0])


def test_higher_priority_runs_first(
    batching_server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    """With the model busy, a priority-1 request queued after priority-2 ones runs next."""
    client.infer("sleep", make_inputs(sleep_request(0.0)))  # warm the connection
    fired = Fired()
    blocker = fired.send(client, "sleep", sleep_request(0.6, marker=-1))
    time.sleep(0.15)  # the blocker is executing now (no queue delay, one instance)
    low = [
        fired.send(client, "sleep", sleep_request(0.05, marker=i), priority=2) for i in range(3)
    ]
    default = fired.send(client, "sleep", sleep_request(0.05, marker=10))  # default level 2
    time.sleep(0.05)
    assert metric(batching_server.metrics_port, "nv_inference_pending_request_count",
                  model="sleep", version="1") == 4
    high = fired.send(client, "sleep", sleep_request(0.05, marker=20), priority=1)
    outcomes = fired.wait()
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    order = [o.index for o in outcomes]
    assert order == [blocker, high, *low, default], order
    for o in outcomes:  # each answer is its own request's
        marker = {blocker: -1, high: 20, default: 10, **{i: n for n, i in enumerate(low)}}
        assert o.output("OUTPUT")[0, 0] == marker[o.index]


def test_short_batch_does_not_wait_past_a_request_timeout(
    client: grpcclient.InferenceServerClient,
) -> None:
    """The `timeout` parameter bounds the queue wait: a 1 s batching delay yields to it."""
    before = model_stats(client, "mlp_delay")
    start = time.monotonic()
    result = client.infer(
        "mlp_delay", make_inputs({"INPUT": np.ones((1, FEATURES), np.float32)}), timeout=200_000
    )
    elapsed = time.monotonic() - start
    assert result.as_numpy("PROBABILITY").shape == (1, 1)
    assert elapsed < 0.6, f"a request with a 0.2 s timeout waited {elapsed:.3f}s for its batch"
    after = model_stats(client, "mlp_delay")
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
