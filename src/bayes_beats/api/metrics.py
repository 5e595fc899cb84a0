"""The API's request metrics, by route: the series BentoML's own metrics middleware writes
(`bentoml_service_request_{total,duration_seconds,in_progress}`), which the API turns off because it
would label requests by raw path, before the guard has refused a path a client invented. The guard
counts each request it lets through under its route template; /metrics collects every worker's."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any


class _Metrics:
    def __init__(self) -> None:
        # imported here: under `bentoml serve` prometheus_client must see PROMETHEUS_MULTIPROC_DIR (set for
        # the workers); registry=None: written to the multiprocess files, which /metrics collects
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["endpoint", "service_name", "service_version", "http_response_code", "runner_name"]
        ns = "bentoml_service"
        self.total = Counter("request_total", "Requests by route", labels, namespace=ns, registry=None)
        self.duration = Histogram(
            "request_duration_seconds", "Request duration by route", labels, namespace=ns, registry=None
        )
        self.in_progress = Gauge(
            "request_in_progress",
            "Requests in progress by route",
            [n for n in labels if n != "http_response_code"],
            namespace=ns,
            registry=None,
            multiprocess_mode="livesum",
        )


@cache
def _metrics() -> _Metrics:
    return _Metrics()


@cache
def _service_labels(service_name: str) -> dict[str, str]:
    from bentoml import server_context

    return {
        "service_name": server_context.bento_name or service_name,
        "service_version": server_context.bento_version or "not available",
        "runner_name": service_name,
    }


async def counted(route: str, service_name: str, send: Any, handle: Callable[[Any], Awaitable[None]]) -> None:
    """`handle(send)`, counted under `route`: in progress while it runs, then its status and duration."""
    metrics, labels = _metrics(), {"endpoint": route, **_service_labels(service_name)}
    status = 500
    in_progress = metrics.in_progress.labels(**labels)
    in_progress.inc()
    started = time.perf_counter()

    async def counted_send(message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await handle(counted_send)
    finally:
        in_progress.dec()
        done = {**labels, "http_response_code": str(status)}
        metrics.total.labels(**done).inc()
        metrics.duration.labels(**done).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """Every worker's metrics (the API's by route, the renderer's from BentoML), Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
