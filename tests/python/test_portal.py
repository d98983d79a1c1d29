"""The portal in a real browser (Debian's Chromium through Selenium): signing in, each
persona seeing exactly its products and columns, search, the quality charts against
`mesh.meta.quality_history`, untrusted descriptions rendered as text, CSRF, the same
404 for denied and missing products, and no token in cookies, pages or logs.

Screenshots of the main pages are written to tests/python/out/portal/.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from browser import Browser, chromium_paths
from conftest import _start_or_fail, serve_config
from mesh_helpers import DEMO_SECRET_FILE, TABLES, query_once, split_name
from policy_model import PERSONAS, column_mask, visible_products

SHOTS = Path(__file__).parent / "out" / "portal"
UNTRUSTED = "<script>document.title='pwned'</script><img src=x onerror=alert(1)> & \"quotes\""

pytestmark = pytest.mark.skipif(
    chromium_paths() is None, reason="Chromium and chromedriver are not installed"
)


@pytest.fixture(scope="module")
def portal_url(demo) -> str:
    url = demo.server.portal_url
    if not url:
        pytest.fail("the demo did not announce its portal", pytrace=False)
    return url


@pytest.fixture(scope="module")
def persona_tokens(mint) -> dict[str, str]:
    return {name: mint(*p.mint_args()) for name, p in PERSONAS.items()}


@pytest.fixture
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def sign_in(browser: Browser, portal: str, token: str, next_path: str = "/") -> None:
    browser.get(portal + "/login?next=" + urllib.parse.quote(next_path))
    # Typing a long token key by key is slow: set it, as a paste would.
    browser.set_value("#token", token)
    browser.submit("form.login button[type=submit]")
    assert "/login" not in browser.url, browser.source()[:2000]


def session_cookie(browser: Browser) -> dict:
    cookies = {c["name"]: c for c in browser.driver.get_cookies()}
    assert "__Host-mg_session" in cookies, cookies
    return cookies["__Host-mg_session"]


def fetch(portal: str, path: str, *, method: str = "GET", cookie: str | None = None,
          form: dict | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
    """One request without a browser (and without JavaScript): status, headers, body."""
    parsed = urllib.parse.urlsplit(portal)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    hdrs = dict(headers or {})
    if cookie:
        hdrs["Cookie"] = cookie
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    text = resp.read().decode()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)
    conn.close()
    return out


def products_on_page(browser: Browser) -> set[tuple[str, str]]:
    return {tuple(li.get_attribute("data-product").split(".", 1)) for li in browser.find("li.product")}


def product_links(html: str) -> set[tuple[str, str]]:
    return {(urllib.parse.unquote(d), urllib.parse.unquote(p))
            for d, p in re.findall(r'href="/products/([^/"]+)/([^/"]+)', html)}


# -- signing in -------------------------------------------------------------------


def test_a_request_without_a_session_is_sent_to_sign_in(portal_url, browser):
    status, headers, _ = fetch(portal_url, "/products/clinical/encounters")
    assert status == 303
    assert headers["location"] == "/login?next=%2Fproducts%2Fclinical%2Fencounters"
    browser.get(portal_url + "/")
    assert urllib.parse.urlsplit(browser.url).path == "/login"
    assert browser.find("label[for=token]"), "the token field has no label"
    browser.screenshot(SHOTS / "login.png")


def test_sign_in_keeps_the_token_in_a_sealed_http_only_cookie(portal_url, browser, persona_tokens, demo):
    token = persona_tokens["ana"]
    sign_in(browser, portal_url, token, "/products/reference/regions")
    assert urllib.parse.urlsplit(browser.url).path == "/products/reference/regions"
    cookie = session_cookie(browser)
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
    assert token not in cookie["value"] and token.split(".")[1] not in cookie["value"]
    assert browser.js("return document.cookie") == ""
    assert browser.find("#viewer")[0].text == "ana"
    assert token not in browser.source()
    assert token not in demo.server.output()
    audit = (demo.mesh_dir / "audit.jsonl").read_text()
    assert token not in audit
    assert '"rpc":"PORTAL/login"' in audit.replace(" ", "")


def test_a_bad_token_is_refused_with_a_reason(portal_url, browser):
    browser.get(portal_url + "/login")
    browser.set_value("#token", "not-a-token")
    browser.submit("form.login button[type=submit]")
    assert urllib.parse.urlsplit(browser.url).path == "/login"
    assert "not accepted" in browser.find("#login-error")[0].text
    assert not any(c["name"] == "__Host-mg_session" for c in browser.driver.get_cookies())


def test_after_sign_out_the_old_cookie_opens_nothing(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["ben"])
    old = session_cookie(browser)["value"]
    browser.submit("form.signout button")
    assert urllib.parse.urlsplit(browser.url).path == "/login"
    status, headers, _ = fetch(portal_url, "/", cookie=f"__Host-mg_session={old}")
    assert status == 303 and headers["location"].startswith("/login")


# -- what each persona sees ---------------------------------------------------------


@pytest.mark.parametrize("persona", ["ana", "ben"])
def test_each_persona_sees_exactly_its_products(portal_url, browser, persona_tokens, persona):
    p = PERSONAS[persona]
    sign_in(browser, portal_url, persona_tokens[persona])
    browser.get(portal_url + "/")
    expected = visible_products(p)
    assert products_on_page(browser) == expected
    html = browser.source()
    assert product_links(html) <= expected, product_links(html) - expected
    assert browser.find("#result-count")[0].text.startswith(f"{len(expected)} product")
    hidden = {d + "." + q for d, q in {split_name(t)[:2] for t in TABLES} - expected}
    for name in hidden:
        assert name not in html, f"{persona} sees {name} named on the home page"
    # The domain facet counts only what the persona sees.
    domains = {o.get_attribute("value"): o.text for o in browser.find("#f-domain option") if o.get_attribute("value")}
    assert set(domains) == {d for d, _ in expected}
    browser.screenshot(SHOTS / f"products-{persona}.png")


def test_a_denied_product_is_the_same_404_as_a_missing_one(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["cara"])
    cookie = "__Host-mg_session=" + session_cookie(browser)["value"]
    denied = sorted({split_name(t)[:2] for t in TABLES} - visible_products(PERSONAS["cara"]))
    assert denied, "cara should be denied some product"
    d, p = denied[0]
    s1, _, missing = fetch(portal_url, "/products/nowhere/nothing", cookie=cookie)
    s2, _, forbidden = fetch(portal_url, f"/products/{d}/{p}", cookie=cookie)
    s3, _, table = fetch(portal_url, f"/products/{d}/{p}/tables/x", cookie=cookie)
    assert s1 == s2 == s3 == 404
    assert missing == forbidden == table


def test_search_finds_products_by_column_and_hides_denied_ones(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["ben"])
    visible = visible_products(PERSONAS["ben"])
    fqtn = next(t for t in sorted(TABLES) if split_name(t)[:2] in visible)
    column = TABLES[fqtn][-1].name
    browser.get(portal_url + "/?q=" + urllib.parse.quote(column))
    found = products_on_page(browser)
    assert split_name(fqtn)[:2] in found, (column, found)
    assert found <= visible
    browser.screenshot(SHOTS / "search.png")
    denied = sorted({split_name(t)[:2] for t in TABLES} - visible)
    if denied:
        browser.get(portal_url + "/?q=" + urllib.parse.quote(denied[0][1]))
        assert denied[0] not in products_on_page(browser)
    browser.get(portal_url + "/?q=no-such-word-anywhere")
    assert products_on_page(browser) == set()
    assert browser.find("#result-count")[0].text == "0 products"


@pytest.mark.parametrize("persona", ["ana", "ben"])
def test_the_contract_shows_what_the_viewer_gets(portal_url, browser, persona_tokens, persona):
    p = PERSONAS[persona]
    sign_in(browser, portal_url, persona_tokens[persona])
    visible = visible_products(p)
    for fqtn in sorted(TABLES):
        domain, product, table = split_name(fqtn)
        if (domain, product) not in visible:
            continue
        browser.get(f"{portal_url}/products/{domain}/{product}/tables/{table}")
        got = browser.texts("#contract tbody tr", "data-column", "td.access")
        want = {}
        for col in TABLES[fqtn]:
            mask = column_mask(p, fqtn, col.name)
            want[col.name] = "clear" if mask is None else f"masked ({mask})"
        assert got == want, fqtn


# -- product and table pages ---------------------------------------------------------


def test_the_product_page_shows_owner_slas_tables_and_snippets(portal_url, browser, persona_tokens, demo):
    sign_in(browser, portal_url, persona_tokens["dev"])
    browser.get(portal_url + "/products/clinical/encounters")
    assert browser.find("#owner")[0].text
    assert browser.find("#slas") or "No SLA declared" in browser.source()
    tables = [a.text for a in browser.find("#tables tbody a")]
    assert "visits" in tables
    codes = [c.text for c in browser.find("figure.snippet code")]
    assert any('"clinical"."encounters"' in c and "MESHGATE_TOKEN" in c for c in codes), codes
    assert any(demo.server.address in c for c in codes), codes
    browser.screenshot(SHOTS / "product.png")


def test_the_charts_are_the_quality_history(portal_url, browser, persona_tokens, demo):
    token = persona_tokens["ben"]
    sign_in(browser, portal_url, token)
    fqtn = "reference.regions.regions"
    d, p, t = split_name(fqtn)
    browser.get(f"{portal_url}/products/{d}/{p}/tables/{t}")
    points = [(float(c.get_attribute("data-t")), float(c.get_attribute("data-v")))
              for c in browser.find("#chart-row-count circle")]
    assert points, "no point on the row-count chart"
    history = query_once(
        demo.server.uri, token,
        f"SELECT to_unixtime(measured_at) AS t, row_count FROM mesh.meta.quality_history "
        f"WHERE domain = '{d}' AND product = '{p}' AND table_name = '{t}' AND row_count IS NOT NULL "
        f"ORDER BY measured_at").to_pylist()
    recorded = [(float(r["t"]), float(r["row_count"])) for r in history]
    # The agent may have measured again since the page was drawn: the page shows the
    # history up to then.
    assert recorded[: len(points)] == points
    assert browser.find("#chart-row-count title")[0].get_attribute("textContent").startswith("Row count")
    assert browser.find("#chart-freshness") and browser.find("#chart-checks")
    browser.screenshot(SHOTS / "table.png")


def test_pages_read_without_javascript(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["ben"])
    cookie = "__Host-mg_session=" + session_cookie(browser)["value"]
    status, headers, html = fetch(portal_url, "/products/reference/regions/tables/regions", cookie=cookie)
    assert status == 200
    assert "<svg" in html and 'id="contract"' in html
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


# -- untrusted input and CSRF ---------------------------------------------------------


@pytest.fixture(scope="module")
def untrusted_portal(demo, tmp_path_factory, meshgate_bin):
    """A gateway over a copy of the demo mesh with one more product whose description
    and column descriptions hold markup and script."""
    root = tmp_path_factory.mktemp("portal-untrusted")
    dst = root / "mesh"
    shutil.copytree(demo.mesh_dir, dst, ignore=shutil.ignore_patterns(".state", "audit.jsonl"))
    good = (dst / "reference" / "regions.yaml").read_text()
    bad = re.sub(r"(?m)^product: regions$", "product: untrusted", good, count=1)
    assert bad != good, "reference/regions.yaml has no `product: regions` line"
    bad = re.sub(r"(?m)^description: .*$", "description: " + json.dumps(UNTRUSTED), bad, count=1)
    bad = bad.replace("description: Display name }", "description: " + json.dumps(UNTRUSTED) + " }")
    (dst / "reference" / "untrusted.yaml").write_text(bad)
    config = root / "meshgate.yaml"
    config.write_text(serve_config(dst / DEMO_SECRET_FILE))
    argv = [meshgate_bin, "serve", "--mesh", dst, "--listen", "127.0.0.1:0", "--plaintext",
            "--config", config, "--portal-listen", "127.0.0.1:0"]
    srv = _start_or_fail(argv, "portal-untrusted")
    try:
        yield srv
    finally:
        srv.stop()


def test_untrusted_descriptions_render_as_text(untrusted_portal, browser, persona_tokens):
    url = untrusted_portal.portal_url
    sign_in(browser, url, persona_tokens["ben"])
    browser.console()
    browser.get(url + "/?q=untrusted")
    assert ("reference", "untrusted") in products_on_page(browser)
    for page in ("/?q=untrusted", "/products/reference/untrusted",
                 "/products/reference/untrusted/tables/regions"):
        browser.get(url + page)
        scripts = browser.attributes("script", "src")
        assert scripts == [url + "/static/v1/portal.js"], scripts
        assert browser.count("img") == 0, "markup from a descriptor became an element"
        assert browser.driver.title != "pwned"
        assert "<script>document.title" in browser.js("return document.body.textContent")
    browser.get(url + "/products/reference/untrusted")
    assert browser.attributes("#description", "innerText") == [UNTRUSTED]
    errors = [e for e in browser.console() if "Content Security Policy" in e.get("message", "")]
    assert not errors, errors


def test_forms_from_elsewhere_are_refused(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["ben"])
    cookie = "__Host-mg_session=" + session_cookie(browser)["value"]
    browser.get(portal_url + "/query")
    csrf = browser.find("form.query input[name=_csrf]")[0].get_attribute("value")
    form = {"sql": "SELECT 1 AS one", "_csrf": csrf}
    assert fetch(portal_url, "/query", method="POST", cookie=cookie, form=form)[0] == 200
    assert fetch(portal_url, "/query", method="POST", cookie=cookie, form={**form, "_csrf": "x" * len(csrf)})[0] == 403
    assert fetch(portal_url, "/query", method="POST", cookie=cookie, form={"sql": "SELECT 1"})[0] in (403, 422)
    host = urllib.parse.urlsplit(portal_url).netloc
    assert fetch(portal_url, "/query", method="POST", cookie=cookie, form=form,
                 headers={"Origin": "https://evil.example", "Host": host})[0] == 403
    assert fetch(portal_url, "/query", method="POST", cookie=cookie, form=form,
                 headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    # Signing in needs the sign-in form's own cookie.
    assert fetch(portal_url, "/login", method="POST", form={"token": persona_tokens["ben"], "_csrf": "guess"})[0] == 403


def test_the_query_page_answers_as_the_viewer(portal_url, browser, persona_tokens):
    sign_in(browser, portal_url, persona_tokens["cara"])
    denied = sorted(t for t in TABLES if split_name(t)[:2] not in visible_products(PERSONAS["cara"]))
    assert denied

    def run(sql: str) -> str:
        browser.get(portal_url + "/query")
        box = browser.find("#sql")[0]
        browser.js("arguments[0].value = arguments[1];", box, sql)
        browser.submit("form.query button[type=submit]")
        errors = browser.find("#query-error")
        return errors[0].text if errors else ""

    assert run("SELECT count(*) AS n FROM reference.regions.regions") == ""
    assert browser.find("#result tbody tr")
    browser.screenshot(SHOTS / "query.png")
    d, p, t = split_name(denied[0])
    on_denied = run(f"SELECT * FROM {d}.{p}.{t}")
    on_missing = run(f"SELECT * FROM {d}.{p}.nosuchtable")
    assert on_denied and on_denied.replace(t, "?") == on_missing.replace("nosuchtable", "?")


def test_a_link_from_another_site_comes_again_from_the_portal(portal_url):
    """SameSite=Strict keeps the cookie off a link from another site: the portal answers
    with a page that loads the same path from itself (then the cookie is sent), and
    clears nothing."""
    status, headers, html = fetch(portal_url, "/products/clinical/encounters?x=1",
                                  headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 200
    assert 'http-equiv="refresh" content="0; url=/products/clinical/encounters?x=1"' in html
    assert "set-cookie" not in headers
    status, headers, _ = fetch(portal_url, "/products/clinical/encounters",
                               headers={"Sec-Fetch-Site": "same-origin"})
    assert status == 303 and "set-cookie" not in headers
