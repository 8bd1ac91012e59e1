"""A real headless Chromium for the console tests: Debian's package, installed by the test set-up when
missing (apt-get, as root), driven by Playwright (whose own browser download cannot work offline)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# What headless Chromium needs as root in a container, and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def ensure_chromium() -> str:
    """The Chromium executable, installed from Debian's packages if it is not there yet."""
    from surveillance.system_packages import SystemPackageMissing
    from surveillance.system_packages import ensure_chromium as install

    try:
        return install("the browser tests")
    except SystemPackageMissing as exc:
        pytest.fail(str(exc))


@contextmanager
def chromium_page(user_data_dir: Path) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium profile."""
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            yield page
        finally:
            context.close()


# Every plotly figure on the page, and whether plotly drew it: a layout, an SVG, and a mark per trace.
_FIGURES = """() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({
    id: d.id,
    laid_out: Boolean(d._fullLayout),
    svg: Boolean(d.querySelector('.main-svg')),
    traces: (d.data || []).length,
    marks: d.querySelectorAll('g.trace, g.hm').length,
}))"""


def check_html_pages(
    pages: dict[str, Path], screenshots: Path, user_data_dir: Path, offline_cdn: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Open each page the project wrote in headless Chromium (as a reader opens the file), fail on a script
    error or a figure plotly did not draw, and keep a full-page screenshot. {name: figures on the page}.

    ``offline_cdn``: pages (GX's Data Docs) whose scripts come from CDNs this machine cannot reach; their
    script errors are tolerated, their figures and screenshots are not."""
    screenshots.mkdir(parents=True, exist_ok=True)
    found: dict[str, int] = {}
    with chromium_page(user_data_dir) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        for name, path in pages.items():
            errors.clear()
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
            with contextlib.suppress(Exception):  # a figure never drawn: the check below names it
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.plotly-graph-div')]"
                    ".every(d => d._fullLayout && d.querySelector('.main-svg'))",
                    timeout=30_000,
                )
            figures = page.evaluate(_FIGURES)
            page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
            assert not errors or name in offline_cdn, f"{name}: script errors {errors}"
            blank = [
                f for f in figures if not (f["laid_out"] and f["svg"] and (f["marks"] or not f["traces"]))
            ]
            assert not blank, f"{name}: figures plotly did not draw: {blank}"
            found[name] = len(figures)
    return found
