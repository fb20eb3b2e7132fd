"""Prometheus scrape config and alert rules, checked by promtool."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.support import CI, ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is not installed (Debian package prometheus; make system-deps)"
    if CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError


def test_alert_rules_pass_promtool():
    result = subprocess.run([promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool():
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_rule(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(\n")
    result = subprocess.run([promtool(), "check", "rules", str(broken)], capture_output=True,
                            check=False)
    assert result.returncode != 0


def rules() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


@pytest.mark.parametrize(("alert", "metric"), [
    ("TempoFailedLoginSpike", "tempo_auth_login_failures_total"),
    ("TempoLockouts", "tempo_auth_lockouts_total"),
    ("TempoRateLimitedRequests", "gateway_rate_limited_total"),
    ("TempoServerErrors", "gateway_requests_total"),
    ("TempoUpstreamDown", "up"),
    ("TempoMediaVolumeNearlyFull", "node_filesystem_avail_bytes"),
])
def test_the_required_alerts_exist(alert, metric):
    assert re.search(rf"\b{metric}\b", rules()[alert])


def test_every_tempo_metric_an_alert_uses_is_one_the_services_define():
    defined = set()
    for path in (ROOT / "services").rglob("metrics.py"):
        defined |= set(re.findall(r"\(\s*\"([a-z_]+)\"", path.read_text()))
    for path in (ROOT / "services").rglob("*.py"):
        defined |= set(re.findall(r"(?:Counter|Gauge|Histogram)\(\s*\"([a-z_]+)\"",
                                  path.read_text()))
    used = set()
    for expr in rules().values():
        used |= set(re.findall(r"\b((?:tempo|gateway)_[a-z_]+?)(?:_total|_bucket)?\b", expr))
    counters = {name.removesuffix("_total") for name in defined}
    missing = {name for name in used if name not in defined and name not in counters}
    assert not missing, f"alerts use metrics no service defines: {sorted(missing)}"
