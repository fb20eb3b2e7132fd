"""The request metrics: kept children must count in the registered series."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.gateway import metrics


def _sample(name: str, labels: dict[str, str]) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_observe_request_counts_in_the_exported_series_every_time() -> None:
    labels = {"route": "/api/test-metrics", "method": "GET", "status": "200"}
    count = _sample("gateway_requests_total", labels)
    observed = _sample("gateway_request_duration_seconds_count", {"route": labels["route"]})
    metrics.observe_request(labels["route"], "GET", "200", 0.002)
    metrics.observe_request(labels["route"], "GET", "200", 0.003)
    metrics.observe_request(labels["route"], "GET", "404", 0.001)
    assert _sample("gateway_requests_total", labels) == count + 2
    assert _sample("gateway_requests_total", {**labels, "status": "404"}) >= 1
    assert _sample("gateway_request_duration_seconds_count",
                   {"route": labels["route"]}) == observed + 3
