"""Signing in to the portal with an OpenID Connect provider (authorization code with
PKCE), in a real browser, against a real OIDC server: NAV's mock-oauth2-server (a
standalone OAuth 2.0 / OpenID Connect implementation, from Maven Central), whose
issuer meshgate trusts like any other (its JWKS over loopback)."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from browser import Browser, chromium_paths
from conftest import _start_or_fail
from oauth_server import mock_oauth2_server
from test_portal import products_on_page, session_cookie

CLIENT_ID = "meshgate-portal"
SUBJECT = "olivia"

pytestmark = pytest.mark.skipif(
    chromium_paths() is None, reason="Chromium and chromedriver are not installed"
)


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory):
    """The OIDC server on a free loopback port; its issuer URL."""
    config = {
        "interactiveLogin": False,
        "tokenCallbacks": [{
            "issuerId": "default",
            "tokenExpiry": 3600,
            "requestMappings": [{
                "requestParam": "client_id",
                "match": CLIENT_ID,
                "claims": {"sub": SUBJECT, "aud": [CLIENT_ID], "roles": ["billing"]},
            }],
        }],
    }
    with mock_oauth2_server(tmp_path_factory.mktemp("oidc"), config) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def oidc_portal(demo, oidc_server, tmp_path_factory, meshgate_bin):
    """`meshgate serve` over the demo mesh trusting the OIDC server's issuer, its portal
    signing in with it."""
    from conftest import serve_config
    from mesh_helpers import DEMO_SECRET_FILE

    root = tmp_path_factory.mktemp("portal-oidc")
    base = serve_config(demo.mesh_dir / DEMO_SECRET_FILE)
    issuer = json.dumps(oidc_server)
    jwks = json.dumps(oidc_server + "/jwks")
    extra = f"""
portal:
  oidc: {{ issuer: {issuer}, client_id: {CLIENT_ID}, label: "Sign in with the test provider" }}
"""
    config = base.replace("auth:\n  issuers:\n", f"""auth:
  issuers:
    - issuer: {issuer}
      audience: [{CLIENT_ID}]
      algorithms: [RS256]
      key: {{ jwks_url: {jwks} }}
""", 1) + extra
    path = root / "meshgate.yaml"
    path.write_text(config)
    argv = [meshgate_bin, "serve", "--mesh", demo.mesh_dir, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", path, "--portal-listen", "127.0.0.1:0"]
    srv = _start_or_fail(argv, "portal-oidc")
    try:
        yield srv
    finally:
        srv.stop()


def test_signing_in_with_the_provider(oidc_portal):
    browser = Browser()
    try:
        url = oidc_portal.portal_url
        browser.get(url + "/login?next=" + urllib.parse.quote("/?q=claims"))
        button = browser.find("#oidc")
        assert button and button[0].text == "Sign in with the test provider"
        button[0].click()
        # To the provider and back (it signs in without a form), then the bounce page.
        deadline = time.time() + 30
        while time.time() < deadline and not browser.find("#viewer"):
            time.sleep(0.2)
        assert browser.find("#viewer"), browser.source()[:3000]
        assert browser.find("#viewer")[0].text == SUBJECT
        path = urllib.parse.urlsplit(browser.url)
        assert (path.path, path.query) == ("/", "q=claims")
        # The provider's roles hold: billing sees its own products.
        assert ("billing", "claims") in products_on_page(browser)
        cookie = session_cookie(browser)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert not any(c["name"] == "__Host-mg_oidc" for c in browser.driver.get_cookies())
    finally:
        browser.close()


def test_a_callback_that_did_not_start_here_is_refused(oidc_portal):
    import http.client

    parsed = urllib.parse.urlsplit(oidc_portal.portal_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", "/login/callback?code=stolen&state=guess")
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 400
    assert "did not start here" in body
    assert not any(h.startswith("__Host-mg_session=") and "Max-Age=0" not in h
                   for h in resp.msg.get_all("Set-Cookie") or [])
