"""Prometheus metrics of the service, in a registry of its own (one per app)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from autoq.runtime import AdaptivePipeline, ProcessPipeline

__all__ = ["ServiceMetrics"]


class _RuntimeCollector(Collector):
    """Reads the runtime's own counters at scrape time."""

    def __init__(
        self, pipe: AdaptivePipeline | ProcessPipeline, queue_depth: Callable[[], int]
    ) -> None:
        self.pipe = pipe
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        snap = self.pipe.metrics.snapshot()
        current = GaugeMetricFamily(
            "autoq_current_tier", "1 for the tier new requests are served by", labels=["tier"]
        )
        for tier in self.pipe.tiers:
            current.add_metric([tier.name], 1.0 if tier.name == self.pipe.tier.name else 0.0)
        yield current
        served = CounterMetricFamily(
            "autoq_generations",
            "Generations finished, by tier and the steps they ran",
            labels=["tier", "steps"],
        )
        for tier, by_steps in snap["served"].items():
            for steps, count in sorted(by_steps.items()):
                served.add_metric([tier, str(steps)], count)
        yield served
        yield GaugeMetricFamily(
            "autoq_ready", "1 once the serving tier has generated", value=float(self.pipe.ready)
        )
        batches = CounterMetricFamily(
            "autoq_batches",
            "Pipeline calls by batch size (requests run as one call; --max-batch)",
            labels=["size"],
        )
        for size, count in sorted(snap["batches"].items()):
            batches.add_metric([str(size)], count)
        yield batches
        yield GaugeMetricFamily(
            "autoq_tier_switches", "Tier switches so far", value=snap["switches"]
        )
        yield GaugeMetricFamily(
            "autoq_oom_retries",
            "Requests retried on a lower tier after OOM",
            value=snap["oom_retries"],
        )
        yield GaugeMetricFamily(
            "autoq_queue_depth", "Requests waiting or generating", value=float(self.queue_depth())
        )
        if snap["available_memory_bytes"] is not None:
            yield GaugeMetricFamily(
                "autoq_available_memory_bytes",
                "Memory available to the runtime",
                value=snap["available_memory_bytes"],
            )


class ServiceMetrics:
    """Requests by tier and status, latency per tier, rejections, plus runtime gauges."""

    def __init__(
        self, pipe: AdaptivePipeline | ProcessPipeline, queue_depth: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "autoq_requests",
            "Generate requests by tier and HTTP status",
            ["tier", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "autoq_request_latency_seconds",
            "End-to-end generation latency per tier",
            ["tier"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.rejections = Counter(
            "autoq_rejections",
            "Requests answered 503 by admission: queue_full, slo (load) or cost (alone)",
            ["reason"],
            registry=self.registry,
        )
        self.images = Counter(
            "autoq_images",
            "Images served, by tier (a request may ask for several: num_images)",
            ["tier"],
            registry=self.registry,
        )
        self.queue_delay = Histogram(
            "autoq_queue_delay_seconds",
            "Seconds an admitted request waited before its generation started",
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.abandoned = Counter(
            "autoq_abandoned",
            "Queued requests dropped before they started because the client disconnected",
            registry=self.registry,
        )
        self.registry.register(_RuntimeCollector(pipe, queue_depth))
