"""Members and sign-in links (docs/members.md, contract §11) in a real browser.

An admin adds a member from the dashboard's Members tab and makes a sign-in
link; a second browser (the member's) opens it on the public URL, presses
Continue, lands on /me, creates a token, uses it with the official Python MCP
SDK, and revokes it; the admin removes the member, which ends the member's
session at once. Debian's chromium through Playwright, the gateway a real
`portcullis serve` (the dashboard's fixture, tests/py/dashboard_helpers.py).

Set PORTCULLIS_SCREENSHOTS=docs/img to save a screenshot of each page.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from dashboard_helpers import (  # noqa: F401 - dash and browser are fixtures
    AXE,
    CHROMIUM,
    ROOT,
    SHOTS,
    Dash,
    browser,
    dash,
    echo,
    run_async,
    sign_in,
    storage_is_empty,
    watch_console,
)
from mcp_helpers import UNAUTHORIZED_CODE

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test-deps.sh)")


def public(dash: Dash) -> str:
    return f"http://127.0.0.1:{dash.listen_port}"


def shot(page, name: str) -> None:
    if SHOTS:
        out = ROOT / SHOTS
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"members-{name}.png"), full_page=True)


def invite_in_dashboard(page, dash: Dash, email: str, role: str = "member") -> str:
    """Adds `email` on the Members tab with a sign-in link; returns the link."""
    page.goto(f"{dash.url}/workspaces/demo/members")
    page.get_by_test_id("member-email").fill(email)
    page.get_by_test_id("member-role").select_option(role)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/members/invite")) as made:
        page.get_by_test_id("member-invite").click()
    assert made.value.status == 201
    link = page.get_by_test_id("invite-link").inner_text()
    assert link.startswith(public(dash) + "/signin/link/"), link
    return link


def test_invite_sign_in_create_use_revoke_and_removal(dash: Dash, browser) -> None:
    admin_ctx = browser.new_context()
    admin = admin_ctx.new_page()
    admin_errors = watch_console(admin)
    sign_in(admin, dash)
    link = invite_in_dashboard(admin, dash, "Pat@Example.com")
    row = admin.locator("[data-testid^='member-row-']").filter(has_text="pat@example.com")
    row.wait_for()
    member_id = row.get_attribute("data-id")
    shot(admin, "dashboard-tab")

    # The member's own browser, on the public URL.
    ctx = browser.new_context()
    page = ctx.new_page()
    errors = watch_console(page)
    page.goto(link)
    assert "pat@example.com" in page.content()
    shot(page, "signin-link")
    page.get_by_test_id("signin-link-continue").click()
    page.wait_for_url(public(dash) + "/me")
    cookie = next(c for c in ctx.cookies() if c["name"] == "portcullis_member")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.get_by_test_id("tab-apps").is_visible()
    # No member filter, member field or server choice on a member's page.
    assert page.get_by_test_id("token-member").count() == 0

    page.get_by_test_id("token-new").click()
    page.get_by_test_id("token-name").fill("pat's laptop")
    page.get_by_test_id("token-expiry").select_option("24h")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/me/api/tokens")) as created:
        page.get_by_test_id("token-create").click()
    assert created.value.status == 201
    secret = page.get_by_test_id("token-secret").inner_text()
    assert re.fullmatch(r"mwt_[0-9A-Za-z]{36}", secret), secret
    mcp = json.loads(page.get_by_test_id("token-mcp-json").inner_text())
    assert mcp["mcpServers"]["demo"]["url"] == dash.ws_url("demo")
    assert page.get_by_test_id("token-copy").is_visible()
    assert storage_is_empty(page) and all(secret not in c["value"] for c in ctx.cookies())
    page.set_viewport_size({"width": 1280, "height": 1400})
    shot(page, "me-new-token")
    page.set_viewport_size({"width": 1280, "height": 720})
    token_id = created.value.json()["info"]["id"]
    assert created.value.json()["info"]["member_id"] == member_id
    page.get_by_role("button", name="Done").click()

    # The real SDK with the new token.
    assert run_async(echo, dash.ws_url("demo"), secret, "from /me") == "from /me"
    shot(page, "me-tokens")

    # Revoke it from /me: asks first, then refused on the data plane.
    page.get_by_test_id(f"token-revoke-{token_id}").click()
    page.get_by_test_id("confirm").click()
    page.get_by_test_id(f"token-status-{token_id}").filter(has_text="revoked").wait_for(timeout=20000)
    r = httpx.post(dash.ws_url("demo"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                   headers={"Authorization": f"Bearer {secret}", "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.json()["error"]["code"] == UNAUTHORIZED_CODE

    # A second token, then the admin removes the member: token and session end.
    page.get_by_test_id("token-new").click()
    page.get_by_test_id("token-name").fill("second")
    page.get_by_test_id("token-create").click()
    page.get_by_test_id("token-secret").filter(has_text="mwt_").wait_for()
    second = page.get_by_test_id("token-secret").inner_text()
    page.get_by_role("button", name="Done").click()
    admin.reload()
    admin.get_by_test_id(f"member-remove-{member_id}").click()
    assert admin.get_by_test_id("confirm").is_visible()
    with admin.expect_response(lambda r: r.request.method == "DELETE") as removed:
        admin.get_by_test_id("confirm").click()
    assert removed.value.status == 200 and removed.value.json()["revoked_tokens"] == 1
    admin.get_by_test_id(f"member-row-{member_id}").wait_for(state="detached")
    r = httpx.post(dash.ws_url("demo"), json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                   headers={"Authorization": f"Bearer {second}", "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    resp = page.goto(public(dash) + "/me")
    assert resp.status == 401 and "not signed in" in page.content()

    # The used link: 410 and a page that says so.
    resp = page.goto(link)
    assert resp.status in (404, 410)
    assert not [e for e in errors + admin_errors if "Content Security Policy" in e], errors + admin_errors
    ctx.close()
    admin_ctx.close()


def test_a_used_link_says_so_and_sign_out_ends_the_session(dash: Dash, browser) -> None:
    r = dash.api("POST", "/v1/workspaces/demo/members/invite", json={"email": "quinn@example.com", "role": "owner"})
    assert r.status_code == 201, r.text
    link = r.json()["url"]
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(link)
    page.get_by_test_id("signin-link-continue").click()
    page.wait_for_url(public(dash) + "/me")
    assert "owner" in page.content()
    other = browser.new_context()
    p2 = other.new_page()
    resp = p2.goto(link)
    assert resp.status == 410 and "has been used" in p2.content()
    shot(p2, "link-used")
    other.close()
    page.get_by_test_id("signout").click()
    assert "Signed out" in page.content()
    resp = page.goto(public(dash) + "/me")
    assert resp.status == 401
    ctx.close()


@pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed (tests/js: npm ci)")
def test_member_pages_pass_axe(dash: Dash, browser) -> None:
    ctx = browser.new_context(bypass_csp=True)
    page = ctx.new_page()
    axe = AXE.read_text()

    def check(name: str) -> None:
        page.add_script_tag(content=axe)
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: {bad}"

    sign_in(page, dash)
    link = invite_in_dashboard(page, dash, "rae@example.com")
    check("members tab with a link")
    page.get_by_test_id("member-remove-" + page.locator("[data-testid^='member-row-']").filter(
        has_text="rae@example.com").get_attribute("data-id")).click()
    check("remove dialog")
    page.keyboard.press("Escape")
    page.goto(link)
    check("sign-in link")
    page.get_by_test_id("signin-link-continue").click()
    page.wait_for_url(public(dash) + "/me")
    page.wait_for_load_state("networkidle")
    check("me")
    page.get_by_test_id("token-new").click()
    check("new-token dialog")
    page.get_by_test_id("token-name").fill("axe")
    page.get_by_test_id("token-create").click()
    page.get_by_test_id("token-secret").filter(has_text="mwt_").wait_for()
    check("new token shown")
    page.goto(link)
    check("used link")
    ctx.close()
