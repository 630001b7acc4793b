"""The console in a real browser (Debian's chromium driven by playwright; nothing downloaded).

History -> filter -> inspection -> toggle the overlay -> hover a word (its own map) -> review -> the review
in the history. Screenshots are kept in var/test-artifacts/console/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.console_harness import ConsoleProcess, filled_store

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "var" / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("INSPECTD_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt install chromium)")
        pytest.skip("chromium is not installed (apt install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # rebind.test resolves to the console's address, as an attacker's name would after DNS rebinding
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--host-resolver-rules=MAP rebind.test 127.0.0.1"])
        yield launched
        launched.close()


def test_an_engineer_filters_opens_toggles_hovers_and_reviews(browser, tmp_path):
    config = filled_store(tmp_path, REPO / "models" / "tiny-cgro")
    console = ConsoleProcess(config)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        console.wait_ready()
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(console.url + "/")
        assert page.locator("#history tbody tr").count() == 4
        page.screenshot(path=str(SHOTS / "history.png"), full_page=True)

        page.select_option("#verdict-filter", "anomalous")
        page.click("#apply-filters")
        page.wait_for_url("**verdict=anomalous**")
        badges = page.locator("#history tbody .badge").all_inner_texts()
        assert badges and set(badges) == {"anomalous"}

        page.locator("#history a.row-link").first.click()
        page.wait_for_selector("#photo")
        assert page.locator("#photo").evaluate("img => img.complete && img.naturalWidth > 0")
        assert page.locator("#heat").is_visible() and page.locator("#outline").is_visible()
        page.screenshot(path=str(SHOTS / "inspection.png"), full_page=True)
        page.uncheck("#toggle-heat")
        assert not page.locator("#heat").is_visible() and page.locator("#outline").is_visible()
        page.check("#toggle-heat")

        word = page.locator("#reasoning .tok.kept").first
        token = word.get_attribute("data-token")
        word.hover()
        token_map = page.locator("#token-map")
        token_map.wait_for(state="visible")
        assert token_map.get_attribute("src").endswith(f"/tokens/{token}.png")
        page.wait_for_function("document.getElementById('token-map').naturalWidth > 0")
        page.screenshot(path=str(SHOTS / "inspection-token-hover.png"), full_page=True)
        page.mouse.move(5, 5)
        token_map.wait_for(state="hidden")

        page.check("input[name=label][value=good]")
        page.fill("input[name=reviewer]", "ann")
        page.fill("input[name=note]", "reflection, not a hole")
        page.click("#submit-review")
        page.wait_for_selector("#latest-review")
        assert "good" in page.inner_text("#latest-review")
        assert "ann" in page.inner_text("#reviews") and "reflection" in page.inner_text("#reviews")
        assert page.inner_text("#verdict") == "anomalous"  # the model's verdict stays

        page.goto(console.url + "/history?reviewed=yes")
        rows = page.locator("#history tbody tr")
        assert rows.count() == 1 and "good" in rows.first.inner_text() and "≠ model" in rows.first.inner_text()
        page.screenshot(path=str(SHOTS / "history-reviewed.png"), full_page=True)
        page.goto(console.url + "/stats")
        assert "0 of 1" in page.inner_text("main")
        page.screenshot(path=str(SHOTS / "stats.png"), full_page=True)
    finally:
        console.stop()


@pytest.fixture(scope="module")
def console(tmp_path_factory, browser):
    config = filled_store(tmp_path_factory.mktemp("browser-guards"), REPO / "models" / "tiny-cgro")
    process = ConsoleProcess(config)
    process.wait_ready()
    yield process
    process.stop()


def test_a_page_loaded_through_a_rebinding_name_gets_nothing(browser, console):
    """http://rebind.test:PORT/ is the console's address under another name: refused, and its script too."""
    page = browser.new_page()
    response = page.goto(f"http://rebind.test:{console.port}/history")
    assert response.status == 400 and page.locator("#history").count() == 0
    for path in ("/history", "/inspections/1", "/inspections/1/photo.jpg", "/healthz"):
        status, text = page.evaluate("async p => { const r = await fetch(p); return [r.status, await r.text()]; }",
                                     path)
        assert status == 400 and "inspection" not in text, (path, status, text[:200])
    page.close()


def test_another_site_cannot_frame_an_inspection(browser, console):
    """Clickjacking a review: a page of another origin (another local port) frames /inspections/N; the browser
    shows nothing of it."""
    import http.server
    import threading

    html = f'<iframe id="victim" src="{console.url}/inspections/1"></iframe>'.encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_timeout(1500)
        frames = [frame for frame in page.frames if frame is not page.main_frame]
        assert frames and frames[0].query_selector("#verdict") is None and frames[0].query_selector("form") is None, \
            frames[0].url
    finally:
        page.close()
        server.shutdown()


def test_the_pages_work_under_the_content_security_policy(browser, console):
    """Every page, the overlay toggles, a token's map and a review, with no policy violation in the console."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    messages, policies = [], []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("response", lambda response: policies.append(response.headers.get("content-security-policy")))
    page.goto(console.url + "/history")
    page.locator("#history a.row-link").first.click()
    page.wait_for_selector("#photo")
    assert page.locator("#photo").evaluate("img => img.complete && img.naturalWidth > 0")
    page.uncheck("#toggle-heat")  # inspection.js (a static file) runs
    assert not page.locator("#heat").is_visible()
    if page.locator("#reasoning .tok").count():
        page.locator("#reasoning .tok").first.hover()
        page.locator("#token-map").wait_for(state="visible")
    page.check("input[name=label][value=defect]")
    page.fill("input[name=reviewer]", "ann")
    page.click("#submit-review")  # form-action 'self' allows the post and its redirect
    page.wait_for_selector("#latest-review")
    for path in ("/stats", "/alerts", "/inspections/999999"):
        page.goto(console.url + path)
    assert policies and all(p and "frame-ancestors 'none'" in p for p in policies), policies
    violations = [m for m in messages if "Content Security Policy" in m or "Refused to" in m]
    assert not violations, violations
    page.close()
