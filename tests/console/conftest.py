"""The browser harness: Debian's Chromium driven by Playwright (its own browser download
cannot work here), one browser per run and a fresh context per test. A test fails on any
error the page writes to its console (a CSP violation is one) or throws, unless the test
named that exact failed request as expected. Screenshots go to
.diffleet/screenshots/console/ and the run's summary lists them."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.support.stack import ROOT

CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keep it from calling home during tests.
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = ROOT / ".diffleet" / "screenshots" / "console"
# Chromium logs a failed request (any 4xx) as a console error starting so.
FAILED_REQUEST = "Failed to load resource: the server responded with a status of"
# Reports CSP violations as errors even where Chromium would only count them: Playwright
# adds this through the DevTools protocol, so the page's own CSP does not block it.
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  const blocked = event.blockedURI || "inline";
  console.error(`CSP violation: ${event.violatedDirective} blocked ${blocked}`);
});
"""
taken: list[Path] = []


# Module scope: Playwright's sync API runs an event loop in this thread while it is open,
# and every later test in the same process that calls asyncio.run would find it running.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class ConsoleErrors:
    """What a page wrote as errors; `expect_failed_request` excuses one failed request
    (Chromium logs a 401 or 409 the page handled as a console error too)."""

    seen: list[str] = field(default_factory=list)
    excused: list[tuple[int, str]] = field(default_factory=list)

    def expect_failed_request(self, status: int, path: str) -> None:
        self.excused.append((status, path))

    def record(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        for status, path in self.excused:
            if message.text.startswith(f"{FAILED_REQUEST} {status}") and path in url:
                return
        self.seen.append(f"{message.text} ({url})")


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def page(browser: Browser, console_errors: ConsoleErrors) -> Iterator[Page]:
    """A page in a fresh context (no credential carries over); the test fails on any
    console error or uncaught exception it did not expect."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    opened.add_init_script(CSP_REPORTER)
    opened.on("console", console_errors.record)
    opened.on("pageerror", lambda error: console_errors.seen.append(f"uncaught: {error}"))
    yield opened
    context.close()
    assert console_errors.seen == [], "the page logged errors"


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot as .diffleet/screenshots/console/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    taken.append(path)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if taken:
        terminalreporter.section("console screenshots")
        for path in sorted(set(taken)):
            terminalreporter.write_line(str(path.relative_to(ROOT)))
