"""Adding up the Prometheus metrics of several worker processes.

Every Osprey series is a counter, a histogram or a gauge of work in progress, all of
which add up across workers: the supervisor scrapes each worker's /metrics and
exposes the sums, so one scrape of :8002 describes the whole server.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("osprey.metrics")

SCRAPE_TIMEOUT_S = 2.0


@dataclass
class _Family:
    documentation: str
    type: str
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def merge_exposition(texts: Iterable[str]) -> list[Metric]:
    """Sum samples with the same name and labels over Prometheus text expositions.

    ``*_created`` samples (creation timestamps) do not add up and are dropped, and so
    are families left without samples.
    """
    families: dict[str, _Family] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            into = families.setdefault(
                family.name, _Family(family.documentation, family.type)
            )
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # creation timestamps do not add up
                key = (sample.name, tuple(sorted(sample.labels.items())))
                into.samples[key] = into.samples.get(key, 0.0) + sample.value
    merged = []
    for name in sorted(families):
        f = families[name]
        if not f.samples:
            continue
        metric = Metric(name, f.documentation, f.type)
        # First-seen order keeps histogram buckets ascending with +Inf last.
        for (sample_name, labels), value in f.samples.items():
            metric.add_sample(sample_name, dict(labels), value)
        merged.append(metric)
    return merged


def scrape(port: int) -> str:
    """One worker's exposition from 127.0.0.1:``port``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        body: bytes = response.read()
    return body.decode()


class WorkersCollector(Collector):
    """A collector that scrapes every live worker and yields the sums."""

    def __init__(self, worker_ports: Callable[[], list[int]]) -> None:
        self.worker_ports = worker_ports

    def collect(self) -> Iterator[Metric]:
        texts = []
        for port in self.worker_ports():
            try:
                texts.append(scrape(port))
            except OSError as exc:  # a worker restarting: its counts start over anyway
                log.warning("cannot scrape worker metrics on port %d: %s", port, exc)
        yield from merge_exposition(texts)
