"""The browser harness itself: a page's console errors and outside requests are seen."""

from __future__ import annotations

import pytest
from browser import watch

pytestmark = pytest.mark.browser


def test_console_errors_and_outside_requests_are_recorded(chromium: object) -> None:
    page = chromium.new_page()  # type: ignore[attr-defined]
    log = watch(page)
    page.set_content(
        "<html><body><script>console.error('boom'); console.log('fine');</script>"
        "<img src='http://example.invalid/x.png'></body></html>"
    )
    page.close()
    assert log.console_errors[:1] == ["boom"]
    assert log.external_requests() == ["http://example.invalid/x.png"]
