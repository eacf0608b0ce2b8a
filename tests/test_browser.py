"""The web page in a real browser: Debian's chromium, headless, driven by Playwright, against a live server.

`make test` installs chromium (apt) where it can; elsewhere this test skips and says why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.server import create_app
from tests.agent_data import build_agent_data
from tests.test_server import DOCUMENT_QUESTION, GRAPH_QUESTION, LiveServer, server_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("TRELLIS_TEST_OUTPUT", Path(__file__).resolve().parents[1] / "test-output"))
# Headless in a sandbox-less container, and quiet on a machine without internet (no background fetches).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not found: `make test` installs Debian's chromium with apt"
)

# Records every text the newest answer shows while it is still streaming, to prove it arrived in pieces.
WATCH_STREAMING = """
window.partials = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.answer');
  const last = answers[answers.length - 1];
  if (last && last.classList.contains('streaming')) {
    const text = last.querySelector('.answer-text').textContent;
    if (text && window.partials[window.partials.length - 1] !== text) window.partials.push(text);
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = build_agent_data(tmp_path_factory.mktemp("browser") / "data")
    with LiveServer(create_app(server_settings(data_dir), warm=True)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_chat_page_streams_an_answer_with_citation_and_path(live: LiveServer, browser) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(live.url) else elsewhere.append(request.url))
    page.goto(live.url)
    page.evaluate(WATCH_STREAMING)

    page.fill("#question", DOCUMENT_QUESTION)
    page.press("#question", "Enter")
    answer = page.locator(".answer").last
    answer.locator(".badge").wait_for(timeout=120_000)
    assert answer.locator(".badge").get_attribute("data-source") == "context"
    assert "Kerrow Lighthouse" in answer.locator(".citation").first.inner_text()
    final = answer.locator(".answer-text").inner_text()
    partials = page.evaluate("window.partials")
    assert len(partials) >= 2 and all(final.startswith(p.strip()) for p in partials[:-1]), partials

    page.fill("#question", GRAPH_QUESTION)
    page.click("#send")
    answer = page.locator(".answer").nth(1)
    answer.locator(".badge").wait_for(timeout=120_000)
    assert answer.locator(".badge").get_attribute("data-source") == "graph"
    assert answer.locator(".path").first.inner_text().startswith("Marek Lis")

    assert elsewhere == [], "the page works offline: nothing is fetched from other hosts"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "chat.png"), full_page=True)
    page.close()


def test_upload_page_ingests_a_file_and_lists_it(live: LiveServer, browser, tmp_path: Path) -> None:
    note = tmp_path / "mill.md"
    note.write_text("# Harlow Mill\n\nHarlow Mill grinds grain for the village of Tess.\n", encoding="utf-8")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{live.url}/upload")
    page.set_input_files("#files", str(note))
    page.click("#upload")
    page.wait_for_function("document.getElementById('upload-phase').textContent.startsWith('Done')", timeout=120_000)
    assert "1 ingested" in page.inner_text("#upload-phase")
    page.locator("#documents tr", has_text="Harlow Mill").wait_for()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "upload.png"), full_page=True)
    page.close()


def test_api_docs_render_without_a_cdn(live: LiveServer, browser) -> None:
    page = browser.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(live.url) else elsewhere.append(request.url))
    page.goto(f"{live.url}/docs")
    page.locator(".opblock-summary-path", has_text="/v1/chat/completions").first.wait_for(timeout=30_000)
    assert elsewhere == [], "the docs page must not fetch from other hosts"
    page.close()
