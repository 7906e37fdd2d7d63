"""What the portal's tests share: Debian's Chromium under Playwright, a page that records what it should never
do (ask another origin, log a console error), signing in, and a workspace of many jobs made fast."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from corral.store.tables import JobRow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium (``apt-get install chromium``): Playwright may not download a browser here."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--headless"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the portal's browser tests need Playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("the portal's browser tests need Chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A browser page, and what it did that it never should."""

    page: Any
    origin: str
    elsewhere: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def expected_failure(self, status: int) -> None:
        """Chromium logs each response of an error status as a console error: drop those of one the test caused."""
        self.errors = [e for e in self.errors if f"status of {status}" not in e]

    def clean(self) -> None:
        assert self.elsewhere == [], f"requests to another origin: {self.elsewhere}"
        assert self.errors == [], f"console errors: {self.errors}"


def watch(context: Any, origin: str) -> Watched:
    page = context.new_page()
    watched = Watched(page, origin)

    def on_request(request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and f"{parts.scheme}://{parts.netloc}" != origin:
            watched.elsewhere.append(request.url)

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.errors.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    return watched


def sign_in(page: Any, origin: str, token: str, path: str = "/") -> None:
    page.goto(origin + path)
    page.wait_for_url("**/signin**")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def seed_jobs(database_url: str, like: str, count: int, prefix: str = "bulk-") -> None:
    """``count`` copies of the ended job ``like`` (names ``<prefix>00000``…), written straight into the server's
    database: what submitting them would leave, made in a second instead of minutes. Copied in SQL, so that its
    sealed columns stay as they are."""
    others = [c.name for c in JobRow.__table__.columns if c.name not in ("id", "name", "uid")]
    copy = text(
        f"INSERT INTO jobs (name, uid, {', '.join(others)}) "
        f"SELECT :name, :uid, {', '.join(others)} FROM jobs WHERE id = :like"
    )
    if count <= 0:
        return
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            template = conn.execute(text("SELECT id FROM jobs WHERE name = :name"), {"name": like}).scalar_one()
            rows = [{"name": f"{prefix}{i:05d}", "uid": uuid.uuid4().hex, "like": template} for i in range(count)]
            conn.execute(copy, rows)
    finally:
        engine.dispose()
