"""Nothing secret reaches the log."""

from __future__ import annotations

import json

import pytest
import structlog

from shared.log import configure_logging, redact_text

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    "text",
    [
        f"Cookie: authToken={JWT}; theme=dark",
        f"Authorization: Bearer {JWT}",
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "postgresql://tempo:Sup3rS3cretPassw0rd@db:5432/tempo",
        f"token was {JWT}",
    ],
)
def test_secrets_in_free_text_are_redacted(text: str) -> None:
    redacted = redact_text(text)
    assert JWT not in redacted
    assert "Sup3rS3cretPassw0rd" not in redacted
    assert "dXNlcjpwYXNzd29yZA==" not in redacted


@pytest.mark.parametrize("name", ["__Host-authToken", "authToken"])
def test_the_sign_in_cookie_is_redacted_by_either_name(name: str) -> None:
    # Not a JWT shape, so only the cookie rule can catch it.
    assert "opaque-value" not in redact_text(f"Cookie: theme=dark; {name}=opaque-value")


def test_log_lines_are_json_with_secret_fields_redacted(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    configure_logging("test", "info")
    structlog.contextvars.bind_contextvars(request_id="req-12345678")
    structlog.get_logger("t").info("login", password="hunter2hunter2", headers={
        "Cookie": f"authToken={JWT}", "Accept": "text/html"}, note=f"bearer {JWT}")
    structlog.contextvars.clear_contextvars()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "login"
    assert record["request_id"] == "req-12345678"
    assert record["service"] == "test"
    assert "hunter2" not in line
    assert JWT not in line
    assert record["headers"]["Accept"] == "text/html"
