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
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
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
