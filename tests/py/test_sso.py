"""Single sign-on against a real OpenID Provider (docs/sso.md): panva's
oidc-provider on loopback, Debian's chromium through Playwright logging in at
the provider's own pages, the gateway's `/signin/oidc` on the data listener.

Each bad path is produced for real: the state and nonce are forged or
swapped on the wire, the PKCE challenge altered, the code issued to another
application, the issuer misnamed; the provider's accounts cover unknown,
unverified and other-domain e-mail addresses."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import free_port
from dashboard_helpers import CHROMIUM_ARGS, CHROMIUM, playwright_sync
from sso_helpers import CLIENT_ID, admin_api, admin_token, begin, doctor_oidc, gateway_log, sign_in_as, start_gateway, start_op, with_param


@pytest.fixture(scope="module")
def setup(procs, portcullis_bin, tmp_path_factory, demo_upstream):
    listen_port = free_port()
    op = start_op(procs, f"http://127.0.0.1:{listen_port}/signin/oidc/callback")
    gw = start_gateway(procs, portcullis_bin, tmp_path_factory.mktemp("sso"), demo_upstream, op, listen_port)
    return op, gw


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


def test_doctor_checks_the_provider(setup, portcullis_bin):
    op, gw = setup
    c = doctor_oidc(gw, portcullis_bin)
    assert c["status"] == "ok" and op.issuer in c["detail"], c
    assert op.secret not in str(c)


def test_start_redirects_to_the_provider_with_pkce_state_nonce_and_a_lax_cookie(setup):
    op, gw = setup
    r = httpx.get(gw.public + "/signin/oidc", timeout=10)
    assert r.status_code == 302
    loc = httpx.URL(r.headers["location"])
    assert str(loc).startswith(op.issuer + "/auth?")
    q = dict(loc.params)
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == gw.callback
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert "openid" in q["scope"].split() and "email" in q["scope"].split()
    assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43 and q["state"] != q["nonce"]
    cookie = r.headers["set-cookie"]
    for attr in ("HttpOnly", "SameSite=Lax", "Path=/signin/oidc", "Max-Age=600"):
        assert attr in cookie, cookie
    value = r.cookies["portcullis_oidc"]
    # The cookie's secret is in no URL: state, nonce and challenge are hashes of it.
    assert value.split(".")[-1] not in str(loc)
    # Another start: other values.
    r2 = httpx.get(gw.public + "/signin/oidc", timeout=10)
    assert dict(httpx.URL(r2.headers["location"]).params)["state"] != q["state"]
    # Only GET.
    assert httpx.post(gw.public + "/signin/oidc", timeout=10).status_code == 405


def test_forged_missing_or_unbound_state_is_a_400_page(setup):
    _, gw = setup
    loc, cookie = begin(gw)
    state = dict(httpx.URL(loc).params)["state"]
    cases = {
        "forged state": ({"code": "x", "state": "forged-" + state[7:]}, cookie),
        "missing state": ({"code": "x"}, cookie),
        "no cookie (login CSRF)": ({"code": "x", "state": state}, None),
        "tampered cookie": ({"code": "x", "state": state}, cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")),
        "expired cookie": ({"code": "x", "state": state}, "v1.1000." + cookie.split(".")[-1]),
    }
    for what, (params, c) in cases.items():
        cookies = {"portcullis_oidc": c} if c else {}
        r = httpx.get(gw.callback, params=params, cookies=cookies, timeout=10)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert 'data-testid="sso-bad-request"' in r.text, what
        assert r.headers["content-type"].startswith("text/html")
        # The flow cookie is cleared whatever the outcome.
        assert "portcullis_oidc=;" in r.headers.get("set-cookie", ""), what
    # The right state without a code, and a provider's error answer.
    r = httpx.get(gw.callback, params={"state": state}, cookies={"portcullis_oidc": cookie}, timeout=10)
    assert r.status_code == 400
    r = httpx.get(gw.callback, params={"state": state, "error": "access_denied<script>"}, cookies={"portcullis_oidc": cookie}, timeout=10)
    assert r.status_code == 403 and "access_denied" in r.text and "<script>" not in r.text
    # An answer naming another issuer (RFC 9207 mix-up).
    r = httpx.get(gw.callback, params={"state": state, "code": "x", "iss": "https://evil.example"}, cookies={"portcullis_oidc": cookie}, timeout=10)
    assert r.status_code == 400


def test_unknown_email_is_refused_with_a_clear_403_page(setup, context):
    """The whole flow, for real: provider login, code, token exchange with the
    client secret and PKCE verifier, RS256 ID token checked with the JWKS."""
    _, gw = setup
    resp, page = sign_in_as(context, gw, "bob@example.com")
    assert resp.status == 403
    assert page.get_by_test_id("sso-refused").is_visible()
    assert "bob@example.com is not a member" in page.get_by_test_id("sso-message").inner_text()
    assert not [c for c in context.cookies() if c["name"] == "portcullis_oidc"]


@pytest.mark.parametrize(
    "login, status, text",
    [
        ("eve@other.org", 403, "not in a domain allowed"),
        ("unverified@example.com", 403, "not verified"),
    ],
)
def test_email_policy_refusals(setup, context, login, status, text):
    _, gw = setup
    resp, page = sign_in_as(context, gw, login)
    assert resp.status == status
    assert text in page.get_by_test_id("sso-message").inner_text()


def test_a_swapped_nonce_is_refused(setup, context):
    """The provider signs the nonce it was sent; the gateway expects the hash
    of this browser's cookie."""
    _, gw = setup
    loc, cookie = begin(gw)
    resp, page = sign_in_as(context, gw, "bob@example.com", start_url=with_param(loc, "nonce", "attacker-chosen-nonce"), cookie=cookie)
    assert resp.status == 403
    assert page.get_by_test_id("sso-invalid-token").is_visible()
    assert "nonce" in page.get_by_test_id("sso-message").inner_text()


def test_an_altered_pkce_challenge_fails_the_code_exchange(setup, context):
    _, gw = setup
    loc, cookie = begin(gw)
    forged = with_param(loc, "code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    resp, page = sign_in_as(context, gw, "bob@example.com", start_url=forged, cookie=cookie)
    assert resp.status == 502
    assert page.get_by_test_id("sso-provider-error").is_visible()
    assert "token" in gateway_log(gw)


def test_a_code_issued_to_another_application_is_not_redeemed(setup, context):
    _, gw = setup
    loc, cookie = begin(gw)
    resp, _ = sign_in_as(context, gw, "bob@example.com", start_url=with_param(loc, "client_id", "another-app"), cookie=cookie)
    assert resp.status == 502


def test_a_misnamed_issuer_is_refused_at_discovery(setup, procs, portcullis_bin, tmp_path_factory, demo_upstream):
    """Configured `http://localhost:<port>`, the document says `http://127.0.0.1:<port>`:
    not the same issuer, byte for byte."""
    op, _ = setup
    gw = start_gateway(
        procs, portcullis_bin, tmp_path_factory.mktemp("sso-iss"), demo_upstream, op, free_port(), issuer=f"http://localhost:{op.port}"
    )
    r = httpx.get(gw.public + "/signin/oidc", timeout=10)
    assert r.status_code == 502 and 'data-testid="sso-provider-error"' in r.text
    assert "names issuer" in gateway_log(gw)
    # `portcullis doctor` says so before anyone tries.
    c = doctor_oidc(gw, portcullis_bin)
    assert c["status"] == "fail" and "names issuer" in c["detail"], c
    procs.stop(gw.proc)


def test_the_client_secret_never_reaches_the_log(setup, context):
    op, gw = setup
    sign_in_as(context, gw, "bob@example.com")
    log = gateway_log(gw)
    assert "sign-in refused" in log
    assert op.secret not in log


def test_client_secret_post_when_the_provider_offers_only_that(procs, portcullis_bin, tmp_path_factory, demo_upstream, context):
    listen_port = free_port()
    op = start_op(procs, f"http://127.0.0.1:{listen_port}/signin/oidc/callback", OP_AUTH_METHODS="client_secret_post")
    gw = start_gateway(procs, portcullis_bin, tmp_path_factory.mktemp("sso-post"), demo_upstream, op, listen_port)
    resp, page = sign_in_as(context, gw, "bob@example.com")
    # Refused as a non-member: the code exchange and the ID token went through.
    assert resp.status == 403 and page.get_by_test_id("sso-refused").is_visible()
    procs.stop(gw.proc)
    procs.stop(op.proc)


def test_a_rotated_provider_key_is_fetched_on_its_unknown_kid(procs, portcullis_bin, tmp_path_factory, demo_upstream, browser):
    """The provider restarts with a new signing key (new kid); the gateway's
    cached key set lacks it, reads the set again and accepts the token."""
    listen_port = free_port()
    redirect = f"http://127.0.0.1:{listen_port}/signin/oidc/callback"
    op = start_op(procs, redirect)
    gw = start_gateway(procs, portcullis_bin, tmp_path_factory.mktemp("sso-rotate"), demo_upstream, op, listen_port)
    for round_ in range(2):
        ctx = browser.new_context()
        try:
            resp, page = sign_in_as(ctx, gw, "bob@example.com")
            assert resp.status == 403 and page.get_by_test_id("sso-refused").is_visible(), (round_, page.content())
        finally:
            ctx.close()
        if round_ == 0:
            procs.stop(op.proc)
            # Past the gateway's minimum interval between two key-set reads (10 s).
            time.sleep(10)
            op = start_op(procs, redirect, port=op.port, secret=op.secret)
    procs.stop(gw.proc)
    procs.stop(op.proc)


def test_a_member_signs_in_and_lands_on_their_page(setup, context, portcullis_bin):
    """The happy path: a member of `team` signs in at the provider and gets a
    member session on the public URL."""
    _, gw = setup
    token = admin_token(gw, portcullis_bin)
    r = admin_api(gw, token, "POST", "/v1/workspaces/team/members", json={"email": "Ann@Example.com", "role": "member"})
    assert r.status_code == 201, r.text
    member_id = r.json()["id"]
    resp, page = sign_in_as(context, gw, "ann@example.com")
    assert resp.status == 303 and resp.headers["location"] == "/me"
    page.wait_for_url(gw.public + "/me")
    assert page.get_by_test_id("tab-tokens").is_visible()
    assert page.get_by_test_id("signout").is_visible()
    names = {c["name"] for c in context.cookies()}
    assert "portcullis_oidc" not in names, names
    session = [c for c in context.cookies() if c["name"] != "portcullis_oidc"]
    assert session and all(c["httpOnly"] for c in session), session
    # The sign-in is in the workspace's audit trail: signin, method oidc,
    # this member as actor.
    trail = admin_api(gw, token, "GET", "/v1/workspaces/team/audit?type=signin").json()["events"]
    assert any(e["member_id"] == member_id and e["method"] == "oidc" and e["actor"] == member_id for e in trail), trail
    # The /me JSON answers for this member's session.
    assert page.evaluate("() => fetch('/me/api/tokens').then(r => r.status)") == 200


def test_auto_join_role_creates_the_member(procs, portcullis_bin, tmp_path_factory, demo_upstream, context):
    listen_port = free_port()
    op = start_op(procs, f"http://127.0.0.1:{listen_port}/signin/oidc/callback")
    gw = start_gateway(
        procs, portcullis_bin, tmp_path_factory.mktemp("sso-join"), demo_upstream, op, listen_port,
        extra='auto_join_role = "member"\nauto_join_workspaces = ["team"]',
    )
    token = admin_token(gw, portcullis_bin)
    assert admin_api(gw, token, "GET", "/v1/workspaces/team/members").json()["members"] == []
    resp, page = sign_in_as(context, gw, "newcomer@example.com")
    assert resp.status == 303
    page.wait_for_url(gw.public + "/me")
    members = admin_api(gw, token, "GET", "/v1/workspaces/team/members").json()["members"]
    assert [(m["email"], m["role"], m["name"]) for m in members] == [("newcomer@example.com", "member", "New Comer")]
    # Signing in again finds the same member; the domain and verification
    # rules still hold with auto-join on.
    context.clear_cookies()
    resp, _ = sign_in_as(context, gw, "newcomer@example.com")
    assert resp.status == 303
    assert len(admin_api(gw, token, "GET", "/v1/workspaces/team/members").json()["members"]) == 1
    for login in ("eve@other.org", "unverified@example.com"):
        context.clear_cookies()
        resp, _ = sign_in_as(context, gw, login)
        assert resp.status == 403, login
    assert len(admin_api(gw, token, "GET", "/v1/workspaces/team/members").json()["members"]) == 1
    procs.stop(gw.proc)
    procs.stop(op.proc)
