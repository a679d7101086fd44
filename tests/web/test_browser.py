"""The admin UI in a real browser: Debian's chromium driven by Playwright, over a real
gateway and sink on loopback. Under CI=true a missing chromium fails these tests.

Screenshots (desktop and phone width) go to $MXFLOW_SCREENSHOTS when it is set, for a
person to look at; otherwise into the test's tmp dir.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.engine.helpers import maildir_messages, wait_for
from tests.web.helpers import PASSWORD, Lab, add_user, lab, send

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.slow


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    require(HAVE_CHROMIUM, f"chromium ({CHROMIUM}; apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("MXFLOW_SCREENSHOTS") or tmp_path / "shots")
    where.mkdir(parents=True, exist_ok=True)
    return where


async def _login(page: object, url: str, name: str = "admin", password: str = PASSWORD) -> None:
    await page.goto(f"{url}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=username]", name)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    await page.click("button:has-text('Sign in')")  # type: ignore[attr-defined]


async def _shoot(
    browser: object, lab_: Lab, cookies: list[object], shots: Path, *, name: str, path: str
) -> None:
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        context = await browser.new_context(viewport=size)  # type: ignore[attr-defined]
        await context.add_cookies(cookies)
        page = await context.new_page()
        await page.goto(f"{lab_.url}{path}")
        await page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
        await context.close()


async def test_admin_traces_and_releases_in_a_browser(tmp_path: Path, browser: object) -> None:
    async with lab(tmp_path) as lab_:
        await add_user(lab_.config_file, "admin", "admin")
        await send(lab_.gateway, "Quarterly figures", "<ok.1@fabrikam.test>")
        held = await send(lab_.gateway, "Cheap pills", "<spam.1@fabrikam.test>", spam=True)
        bob = "bob@contoso.com"
        await wait_for(lambda: len(maildir_messages(lab_.sink_config, bob)) == 1)
        lab_.gateway.trace.flush()
        context = await browser.new_context(viewport=DESKTOP)  # type: ignore[attr-defined]
        page = await context.new_page()

        # a failed login says so, and lets nobody in
        await _login(page, lab_.url, password="wrong password!")
        assert await page.locator(".flash.bad").inner_text() == "Wrong user name or password."
        assert (await page.goto(f"{lab_.url}/trace")).url.startswith(f"{lab_.url}/login")

        await _login(page, lab_.url)
        await page.wait_for_selector("h1:has-text('Dashboard')")
        cookie = next(c for c in await context.cookies() if c["name"] == "mxflow_session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

        # search a message, open its timeline
        await page.click("nav >> text=Message trace")
        await page.fill("input[name=message_id]", "ok.1@fabrikam.test")
        await page.click("button:has-text('Search')")
        row = page.locator("table.rows tbody tr")
        assert await row.count() == 1
        assert "Delivered" in await row.inner_text()
        # (subjects show once the engine passes `subject=` to trace.record)
        await row.locator("a").click()
        await page.wait_for_selector("h2:has-text('Timeline across hops')")
        timeline = await page.locator("ol.timeline").inner_text()
        assert "received" in timeline and "delivered" in timeline
        assert "127.77.0.9" in await page.locator("table.rows").inner_text()

        # a forged CSRF token is refused, and nothing happens
        await page.goto(f"{lab_.url}/quarantine/{held}")
        forge = "els => els.forEach(e => { e.value = 'forged' })"
        await page.locator("input[name=csrf]").evaluate_all(forge)
        await page.click("button:has-text('Delete')")
        assert "bad CSRF token" in await page.locator("main").inner_text()
        assert lab_.gateway.quarantine is not None
        assert lab_.gateway.quarantine.get(held).state == "held"  # type: ignore[attr-defined]

        # release the quarantined message: it reaches the mailbox, the trace says Delivered
        await page.goto(f"{lab_.url}/quarantine")
        await page.click("table.rows a:has-text('Cheap pills')")
        assert "XJS*C4JDBQADN1" in await page.locator("pre.body").inner_text()
        await page.click("button:has-text('Release')")
        assert "Released" in await page.locator(".flash.ok").inner_text()
        await wait_for(lambda: len(maildir_messages(lab_.sink_config, bob)) == 2)

        async def delivered() -> bool:
            await page.goto(f"{lab_.url}/trace?message_id=spam.1@fabrikam.test")
            return "Delivered" in await page.locator("table.rows").inner_text()

        await wait_for(delivered, within=20, interval=0.5)

        shots = _shots(tmp_path)
        cookies = await context.cookies()
        for name, path in (
            ("dashboard", "/"),
            ("trace", "/trace"),
            ("message", "/trace/message?id=spam.1@fabrikam.test"),
            ("quarantine-item", f"/quarantine/{held}"),
            ("connectors", "/connectors"),
        ):
            await _shoot(browser, lab_, cookies, shots, name=name, path=path)
        await page.goto(f"{lab_.url}/login")
        await page.screenshot(path=str(shots / "login-desktop.png"))
        await context.close()
