"""Prometheus counters of the auth service, read by the alert rules."""

from __future__ import annotations

from prometheus_client import Counter

LOGIN_FAILURES = Counter(
    "tempo_auth_login_failures_total",
    "Logins refused: wrong credentials, or a username that is locked out.",
    ["reason"],
)
LOCKOUTS = Counter(
    "tempo_auth_lockouts_total",
    "Usernames locked out after repeated failed logins.",
)
LOGINS = Counter(
    "tempo_auth_logins_total",
    "Successful logins.",
)
HASH_REJECTIONS = Counter(
    "tempo_auth_hash_queue_rejections_total",
    "Requests answered 503 because too many password hashes were waiting.",
)

# Every label exists from the start, so a rate over them is 0 rather than missing.
for _reason in ("invalid_credentials", "locked_out"):
    LOGIN_FAILURES.labels(reason=_reason)
