"""The account page shows the security activity, failed sign-ins highlighted, in a real
browser under the production CSP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.test_ui import (  # noqa: F401 - fixtures shared with the other UI scenarios
    browser,
    ensure_owner,
    go,
    owner,
    sign_in,
    ui,
    ui_stack,
)


def failed_sign_in(stack, username: str) -> None:
    request = urllib.request.Request(
        f"{stack.url}/api/auth/login", method="POST",
        data=json.dumps({"username": username, "password": "not the password at all"}).encode(),
        headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30).close()
    refused.value.close()
    assert refused.value.code == 401


# The fixtures come from the other UI scenarios' module (imported above).
def test_account_page_lists_security_activity_with_failed_sign_ins_highlighted(
        ui, ui_stack, owner):  # noqa: F811
    ensure_owner(ui_stack, owner)
    # Two from one client in one window: one record, shown with its count.
    failed_sign_in(ui_stack, owner.username)
    failed_sign_in(ui_stack, owner.username)
    page, watch = ui.open("audit")
    sign_in(page, watch, owner)
    go(page, "Account")
    trail = page.locator("#audit-list")
    trail.locator("li[data-action='login'][data-outcome='success']").first.wait_for()

    alert = trail.locator("li.audit-alert")
    assert alert.count() >= 1
    assert "Sign-in" in alert.first.inner_text()
    assert "failed sign-in" in alert.first.inner_text()
    repeated = trail.locator("li.audit-alert[data-action='login']").first
    count = int(repeated.get_attribute("data-count"))
    assert count >= 2
    assert f"× {count}" in repeated.inner_text()
    assert f"{count} times, the last" in repeated.inner_text()
    plain = trail.locator("li[data-outcome='success']").first
    style = "(node) => getComputedStyle(node).backgroundColor"
    assert alert.first.evaluate(style) != plain.evaluate(style)
    # Newest first: the sign-in that opened this page leads the list.
    first = trail.locator("li").first
    assert first.get_attribute("data-action") == "login"
    assert first.get_attribute("data-outcome") == "success"
    assert page.locator("#audit-error").is_hidden()
