"""The gateway's Prometheus metrics, served on the internal metrics listener."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("gateway_requests_total", "Requests answered, by route and status.",
                   ("route", "method", "status"))
LATENCY = Histogram("gateway_request_duration_seconds", "Time to answer, by route.",
                    ("route",),
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0, 30.0, 120.0))
UNAUTHORIZED = Counter("gateway_unauthorized_total", "Requests refused 401, by reason.",
                       ("reason",))
FORBIDDEN = Counter("gateway_forbidden_total", "Requests refused 403, by reason.", ("reason",))
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused 429, by policy.",
                       ("policy",))
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total",
                          "Upstream calls that failed, by upstream and kind.",
                          ("upstream", "kind"))
BODY_TOO_LARGE = Counter("gateway_body_too_large_total",
                         "Requests refused 413, by how the size was found.", ("when",))
SLOW_BODIES = Counter("gateway_slow_bodies_total",
                      "Request bodies answered 408 for arriving too slowly, by rule.", ("rule",))
CLIENT_LIMITED = Counter("gateway_client_limited_total",
                         "Requests refused 429 because their client already held its share, "
                         "by resource.", ("resource",))
REVOKED_TOKENS = Gauge("gateway_revoked_tokens", "Revoked, unexpired tokens held in memory.")
REVOCATION_CONNECTED = Gauge("gateway_revocation_listener_connected",
                             "1 while the revocation listener is connected and loaded.")
REDIS_FALLBACK = Gauge("gateway_ratelimit_redis_fallback",
                       "1 while rate limits are kept in memory because Redis is unreachable.")
REDIS_FALLBACKS = Counter("gateway_ratelimit_redis_fallbacks_total",
                          "Times the rate limiter fell back from Redis to memory.")

# ``labels()`` takes a lock and builds a key on every call; the label sets a request can
# produce are bounded (routes, eight method labels, status codes), so each child is looked up
# once and kept.
_request_counters: dict[tuple[str, str, str], Counter] = {}
_latency_histograms: dict[str, Histogram] = {}


def observe_request(route: str, method: str, status: str, seconds: float) -> None:
    key = (route, method, status)
    counter = _request_counters.get(key)
    if counter is None:
        counter = _request_counters[key] = REQUESTS.labels(route, method, status)
    counter.inc()
    latency = _latency_histograms.get(route)
    if latency is None:
        latency = _latency_histograms[route] = LATENCY.labels(route)
    latency.observe(seconds)
