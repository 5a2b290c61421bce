"""Every web page has the same navigation, in a real browser (Debian's Chromium through Playwright) against a real
server: from each page, a click on each link opens that page, which marks itself as the current one; no page
throws a JavaScript error or gets a 5xx on the way."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from fmstack.server.ui_api import PAGES

pytestmark = pytest.mark.slow


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"JavaScript error on {page.url}: {exc}"))
    page.on("response", lambda r: r.status >= 500 and problems.append(f"{r.status} from {r.url}"))
    yield page
    context.close()
    assert not problems, problems


def check_nav(page, current: str) -> None:
    """The page shows the one shared navigation: every page's link, in order, only `current` marked."""
    nav = page.get_by_test_id("nav")
    expect(nav.locator("a")).to_have_count(len(PAGES))
    expect(nav.locator("a")).to_have_text([title for _, _, title in PAGES])
    for name, path, _ in PAGES:
        link = page.locator(f"#{name}-link")
        assert link.get_attribute("href") == path
        if name == current:
            expect(link).to_have_attribute("aria-current", "page")
        else:
            assert link.get_attribute("aria-current") is None, (current, name)
    expect(nav.locator("[aria-current=page]")).to_have_count(1)


def at(path: str):
    """A URL test for `wait_for_url`: this page, whatever query it keeps (the dashboard keeps its range there)."""
    return lambda url: urlparse(url).path == path


def test_every_page_links_to_every_other_through_one_nav(page, server):
    titles = {name: title for name, _, title in PAGES}
    for name, path, title in PAGES:
        page.goto(f"{server.base}{path}")
        expect(page).to_have_title(f"fmstack · {title}")
        check_nav(page, name)
        for other, other_path, _ in PAGES:
            if other == name:
                continue
            page.click(f"#{other}-link")  # a real click: the browser follows the link
            page.wait_for_url(at(other_path))
            expect(page).to_have_title(f"fmstack · {titles[other]}")
            check_nav(page, other)
            page.go_back()
            page.wait_for_url(at(path))
            check_nav(page, name)
