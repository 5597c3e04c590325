"""Headless Chromium for the browser tests: Debian's ``chromium`` driven through Playwright.

Playwright never downloads a browser here: it launches the system binary (``executable_path``)
with the flags the command centre's kiosk machines use. Every page opened through
:func:`open_page` records console errors, uncaught page errors and every request it makes, so a
test can assert "zero console errors" and "nothing but localhost".
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
)
#: Hosts a page may load from: the test's own server, or nothing at all (files, inline data).
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about", "chrome-error"})


def chromium_path() -> str | None:
    """The system Chromium (Debian package ``chromium``), or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageLog:
    """What a page did while a test watched it."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [*self.console_errors, *self.page_errors]

    def external_requests(self) -> list[str]:
        """Requests to any host but localhost (a closed network has none)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                continue
            if (parts.hostname or "") not in LOCAL_HOSTS:
                out.append(url)
        return out


def watch(page: Any) -> PageLog:
    """Attach a :class:`PageLog` to a Playwright page (before it navigates)."""
    log = PageLog()
    page.on(
        "console",
        lambda m: log.console_errors.append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    page.on("request", lambda r: log.requests.append(r.url))
    return log


def launch(playwright: Any) -> Any:
    """Launch the system Chromium headless."""
    path = chromium_path()
    if path is None:  # pragma: no cover - the fixture checks first
        msg = "chromium is not installed (Debian packages chromium and chromium-driver)"
        raise RuntimeError(msg)
    return playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))


def iter_browser() -> Iterator[Any]:
    """Yield a launched browser and close it afterwards (for a session fixture)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()
