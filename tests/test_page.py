"""The live page in a real headless Chromium, against a real hub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from hub import Hub, HubConfig
from hub.store import MemoryStore

from .conftest import ROOT, TIMEOUT, RunningHub, start_hub

#: Debian's Chromium; scripts/test installs it where it is missing.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: How soon a change made over REST must show on the page: one second, stretched
#: with the tests' time unit on a slow machine.
SHOWN_WITHIN_MS = 1000 * TIMEOUT / 10

ARTIFACTS = ROOT / "test-artifacts"

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# One browser for the module (launching one takes a second or two), so every
# test and fixture here runs in the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")

Opener = Callable[..., Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, shared by the module's tests."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Browser) -> AsyncIterator[Opener]:
    """Open pages that wait until their watch is live; all closed after the test."""
    # Closed at the end, so that no page of this test keeps reconnecting to a
    # port that a later test's hub may be given.
    context = await browser.new_context()
    errors: list[str] = []

    async def opener(url: str, viewport: dict[str, int] = DESKTOP) -> Page:
        page = await context.new_page()
        await page.set_viewport_size(viewport)  # type: ignore[arg-type]
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(url)
        await expect(page.locator("#status")).to_have_attribute(
            "data-state", "live", timeout=TIMEOUT * 1000
        )
        return page

    yield opener
    await context.close()
    assert errors == []


@pytest_asyncio.fixture(loop_scope="module")
async def hub_served() -> AsyncIterator[RunningHub]:
    """A memory hub served on a free port."""
    running = await start_hub()
    yield running
    await running.runner.cleanup()


async def rest(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    """Make one REST call and return its JSON answer, failing on an error code."""
    headers = {}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            url,
            json=body,
            headers=headers,
        ) as response:
            data = await response.json()
            assert response.status < 300, data
            return data


def obj(name: str, **labels: str) -> dict[str, Any]:
    """Return an object with ``name`` and ``labels``."""
    return {"metadata": {"name": name, "labels": labels}, "spec": {"replicas": 1}}


def row(page: Page, name: str) -> Locator:
    """Return the locator of the table row of ``name``."""
    return page.locator(f'#objects tbody tr[data-name="{name}"]')


async def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    """Save a screenshot of ``page`` as a test artifact and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def test_page_shows_existing_objects(
    open_page: Opener, hub_served: RunningHub
) -> None:
    """The page lists existing objects, the hub's resourceVersion and watchers."""
    for name in ("api", "web"):
        await rest("POST", f"{hub_served.url}/api/v1/pods", obj(name, app=name))
    page = await open_page(f"{hub_served.url}/?collection=pods")

    rows = page.locator("#objects tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_have_attribute("data-name", "api")
    await expect(row(page, "web")).to_contain_text("app=web")
    await expect(page.locator("#hub-rv")).to_have_text("2")
    await expect(page.locator("#watch-rv")).to_have_text("2")
    await expect(page.locator("#watchers")).to_have_text("1", timeout=TIMEOUT * 1000)
    await expect(page.locator("#object-count")).to_have_text("2")


async def test_page_shows_create_update_delete_live(
    open_page: Opener, hub_served: RunningHub
) -> None:
    """A create, an update and a delete made over REST show within a second."""
    base = f"{hub_served.url}/api/v1/pods"
    page = await open_page(f"{hub_served.url}/?collection=pods")
    within = SHOWN_WITHIN_MS
    # Record each highlight as it is applied: it lasts about a second only.
    await page.evaluate(
        """() => {
            window.flashes = [];
            new MutationObserver((changes) => {
                for (const { target } of changes) {
                    for (const name of target.classList) {
                        if (name.startsWith("flash-")) {
                            window.flashes.push(target.dataset.name + " " + name);
                        }
                    }
                }
            }).observe(document.querySelector("#objects tbody"), {
                attributes: true, attributeFilter: ["class"], subtree: true,
            });
        }"""
    )

    created = await rest("POST", base, obj("web", app="web"))
    await expect(row(page, "web")).to_have_attribute(
        "data-rv", created["metadata"]["resourceVersion"], timeout=within
    )

    patch = {"metadata": {"labels": {"tier": "x"}}}
    updated = await rest("PATCH", f"{base}/web", patch)
    await expect(row(page, "web")).to_have_attribute(
        "data-rv", updated["metadata"]["resourceVersion"], timeout=within
    )
    await expect(row(page, "web")).to_contain_text("tier=x", timeout=within)

    await rest("DELETE", f"{base}/web")
    await expect(row(page, "web")).to_have_count(0, timeout=within)

    types = page.locator("#log li[data-type]")
    await expect(types).to_have_count(3)
    assert await types.evaluate_all("items => items.map(i => i.dataset.type)") == [
        "DELETED",
        "MODIFIED",
        "ADDED",
    ]
    await expect(page.locator("#empty")).to_be_visible()
    flashes = await page.evaluate("window.flashes")
    assert {"web flash-added", "web flash-modified", "web flash-deleted"} <= set(
        flashes
    )


async def test_page_filters_by_label_selector(
    open_page: Opener, hub_served: RunningHub
) -> None:
    """A label selector relists and rewatches: only matching objects show."""
    base = f"{hub_served.url}/api/v1/pods"
    await rest("POST", base, obj("a", tier="front"))
    await rest("POST", base, obj("b", tier="back"))
    page = await open_page(f"{hub_served.url}/?collection=pods")
    await expect(page.locator("#objects tbody tr")).to_have_count(2)

    await page.fill("#selector", "tier=front")
    await page.press("#selector", "Enter")
    await expect(page.locator("#objects tbody tr")).to_have_count(1)
    await expect(row(page, "a")).to_have_count(1)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    assert "labelSelector=tier%3Dfront" in page.url

    # Objects that start and stop matching come and go.
    await rest("POST", base, obj("c", tier="front"))
    await rest("PATCH", f"{base}/a", {"metadata": {"labels": {"tier": "back"}}})
    await expect(row(page, "c")).to_have_count(1)
    await expect(row(page, "a")).to_have_count(0)
    await expect(page.locator("#objects tbody tr")).to_have_count(1)


async def test_page_shows_bad_selector(
    open_page: Opener, hub_served: RunningHub
) -> None:
    """A malformed label selector shows the hub's error, not an empty table."""
    page = await open_page(f"{hub_served.url}/?collection=pods")
    await page.fill("#selector", "a in (")
    await page.press("#selector", "Enter")
    await expect(page.locator("#status")).to_have_attribute("data-state", "error")
    await expect(page.locator("#banner")).to_be_visible()
    await expect(page.locator("#banner")).to_contain_text("selector")


async def test_page_survives_hub_restart(open_page: Opener) -> None:
    """The page shows the hub going away, reconnects to a new one, and shows changes."""
    store = MemoryStore()
    first = await start_hub(Hub(store))
    port = int(first.url.rsplit(":", 1)[1])
    await rest("POST", f"{first.url}/api/v1/pods", obj("before"))
    page = await open_page(f"{first.url}/?collection=pods")
    await expect(row(page, "before")).to_have_count(1)

    await first.runner.cleanup()
    await expect(page.locator("#status")).to_have_attribute(
        "data-state", "reconnecting", timeout=TIMEOUT * 1000
    )
    await expect(page.locator("#status")).to_contain_text("reconnecting")
    await expect(page.locator("#offline")).to_be_visible()
    await expect(page.locator("#inspector")).to_be_hidden()
    await screenshot(page, "page-reconnecting")

    second = await start_hub(Hub(store), port=port)
    try:
        await expect(page.locator("#status")).to_have_attribute(
            "data-state", "live", timeout=TIMEOUT * 1000
        )
        await rest("POST", f"{second.url}/api/v1/pods", obj("after"))
        await expect(row(page, "after")).to_have_count(1)
        await expect(page.locator("#offline")).to_be_hidden()
        await expect(row(page, "before")).to_have_count(1)
        # Resumed, not relisted: the log has no second "listed" note.
        await expect(page.locator("#log li.note", has_text="listed")).to_have_count(1)
    finally:
        await second.runner.cleanup()


async def test_page_relists_on_expired_history(open_page: Opener) -> None:
    """A page that resumes from a version the hub no longer keeps lists again."""
    store = MemoryStore(history=2)
    first = await start_hub(Hub(store, HubConfig(history=2)))
    port = int(first.url.rsplit(":", 1)[1])
    await rest("POST", f"{first.url}/api/v1/pods", obj("old"))
    page = await open_page(f"{first.url}/?collection=pods")
    await first.runner.cleanup()
    await expect(page.locator("#status")).to_have_attribute(
        "data-state", "reconnecting", timeout=TIMEOUT * 1000
    )

    # Written while the page was away, past the history the hub keeps.
    for index in range(5):
        await store.create("pods", obj(f"new-{index}"))
    await store.delete("pods", "old")

    second = await start_hub(Hub(store, HubConfig(history=2)), port=port)
    try:
        relisted = page.locator("#log li.note", has_text="listing again")
        await expect(relisted).to_have_count(1, timeout=TIMEOUT * 1000)
        await expect(page.locator("#objects tbody tr")).to_have_count(5)
        await expect(row(page, "old")).to_have_count(0)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    finally:
        await second.runner.cleanup()


@pytest.mark.parametrize("width", ["desktop", "phone"])
async def test_page_screenshot(
    open_page: Opener, hub_served: RunningHub, width: str
) -> None:
    """The page renders a busy collection at desktop and phone widths, saved as PNG."""
    base = f"{hub_served.url}/api/v1/deployments"
    teams = ["payments", "search", "checkout", "identity", "ledger", "web"]
    for index, team in enumerate(teams):
        await rest("POST", base, obj(f"{team}-api", app=team, tier="back", env="prod"))
        if index % 2 == 0:
            await rest("POST", base, obj(f"{team}-ui", app=team, tier="front"))
    viewport = DESKTOP if width == "desktop" else PHONE
    url = f"{hub_served.url}/?collection=deployments"
    page = await open_page(url, viewport)
    await rest("PATCH", f"{base}/search-api", {"spec": {"replicas": 3}})
    await rest("DELETE", f"{base}/ledger-api")
    await rest("POST", base, obj("audit-api", app="audit", tier="back"))
    await expect(row(page, "audit-api")).to_have_count(1)
    await expect(row(page, "ledger-api")).to_have_count(0)
    await page.click('#objects tbody tr[data-name="search-api"]')
    await expect(page.locator("#inspector")).to_be_visible()

    path = await screenshot(page, f"page-{width}")
    assert path.stat().st_size > 10_000
    if width == "phone":
        # The whole scrolled page too (its vh-sized panes grow with it).
        await screenshot(page, f"page-{width}-full", full_page=True)
    # Nothing spills sideways out of the viewport.
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
