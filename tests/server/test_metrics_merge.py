"""Summing workers' Prometheus expositions (what the supervisor serves on :8002)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.metrics_merge import merge_exposition


def _worker(requests: int, pending: int, latencies: list[float]) -> str:
    registry = CollectorRegistry()
    c = Counter("osprey_requests", "requests", ["model"], registry=registry)
    g = Gauge("nv_inference_pending_request_count", "pending", ["model"], registry=registry)
    h = Histogram("osprey_latency_seconds", "latency", ["model"], buckets=(0.1, 1.0),
                  registry=registry)
    c.labels("m").inc(requests)
    g.labels("m").set(pending)
    for x in latencies:
        h.labels("m").observe(x)
    return generate_latest(registry).decode()


def test_counters_gauges_and_histograms_add_up() -> None:
    merged = merge_exposition([_worker(3, 1, [0.05, 2.0]), _worker(4, 2, [0.5])])
    registry = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return merged

    registry.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'osprey_requests_total{model="m"} 7.0' in text
    assert 'nv_inference_pending_request_count{model="m"} 3.0' in text
    assert 'osprey_latency_seconds_bucket{le="0.1",model="m"} 1.0' in text
    assert 'osprey_latency_seconds_bucket{le="1.0",model="m"} 2.0' in text
    assert 'osprey_latency_seconds_bucket{le="+Inf",model="m"} 3.0' in text
    assert 'osprey_latency_seconds_count{model="m"} 3.0' in text
    assert "_created" not in text
    buckets = [ln for ln in text.splitlines() if ln.startswith("osprey_latency_seconds_bucket")]
    assert 'le="+Inf"' in buckets[-1]  # Prometheus needs ascending buckets, +Inf last


def test_untyped_triton_names_survive() -> None:
    text = (
        "# HELP nv_inference_count Inferences\n# TYPE nv_inference_count untyped\n"
        'nv_inference_count{model="a",version="1"} 5.0\n'
    )
    (family,) = merge_exposition([text, text])
    assert family.name == "nv_inference_count"
    assert [(s.name, s.value) for s in family.samples] == [("nv_inference_count", 10.0)]


def test_no_workers_no_metrics() -> None:
    assert merge_exposition([]) == []
