"""The web app in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

On CI (``CI=true``) a missing browser is a failure, not a skip: ``make test`` installs it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from bufferanytime.app.ui import BOTH, EXAMPLE
from bufferanytime.io.video import write_video
from tests.helpers import moving_pattern

CHROMIUM = Path(os.environ.get("BUFFERANYTIME_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAMES, HEIGHT, WIDTH = 8, 64, 96
WAIT_MS = 90_000
SCREENSHOT = os.environ.get("BUFFERANYTIME_APP_SCREENSHOT")  # where to save the app's picture (docs/app.png)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file() or (playwright := _playwright()) is None:
        message = f"no browser test: {CHROMIUM} or the playwright package is missing (`make test` installs both)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from bufferanytime.app.ui import Sessions, build_app, launch

    sessions = Sessions(tmp_path_factory.mktemp("app") / "sessions")
    demo = build_app(sessions)
    port = _free_port()
    launch(demo, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", sessions.root
    demo.close()
    sessions.close()


@pytest.fixture()
def page(browser, app_url):
    """A page of the app; every request to another host is refused and recorded in ``page.outside``."""
    url, _ = app_url
    page = browser.new_page(accept_downloads=True, viewport={"width": 1400, "height": 1100})
    page.outside = []

    def route(route):
        if route.request.url.startswith(url) or route.request.url.startswith(("data:", "blob:")):
            return route.continue_()
        page.outside.append(route.request.url)
        return route.abort()

    page.route("**/*", route)
    page.goto(url)
    page.locator("#run").wait_for(timeout=30_000)
    yield page
    page.close()


def _run(page, path: Path) -> str:
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator("#upload").get_by_text(path.name).first.wait_for(timeout=30_000)
    page.locator("#run").click()
    status = page.locator("#status textarea")
    page.wait_for_function("el => /^(done|error)/.test(el.value)", arg=status.element_handle(), timeout=WAIT_MS)
    return status.input_value()


def test_upload_run_depth_and_download(page, app_url, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_pattern(FRAMES, HEIGHT, WIDTH), fps=8)
    start = time.perf_counter()
    status = _run(page, clip)
    assert status.startswith("done"), status
    video = page.locator("#result_video video")
    assert video.get_attribute("src")
    duration = video.evaluate("""v => new Promise(resolve => v.readyState >= 1 ? resolve(v.duration)
                                 : v.addEventListener('loadedmetadata', () => resolve(v.duration)))""")
    assert np.isfinite(duration) and duration > 0
    rows = [[c.strip() for c in row.locator("td").all_inner_texts()] for row in page.locator("#metrics tr").all()]
    opw = {row[1]: float(row[2]) for row in rows if row}  # model -> OPW
    assert set(opw) == {"per-frame prior", "video model"} and all(np.isfinite(v) for v in opw.values())
    with page.expect_download() as download:
        page.locator('#downloads a[download="depth.npz"]').click()
    npz_path = tmp_path / "depth.npz"
    download.value.save_as(npz_path)
    with np.load(npz_path) as npz:
        assert npz["disparity"].shape == (FRAMES, HEIGHT, WIDTH)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert not page.outside, page.outside
    session_root = app_url[1]
    assert any(session_root.iterdir())  # the run's folder
    page.close()  # the session ends: its folders go
    deadline = time.monotonic() + 20
    while any(session_root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(session_root.iterdir())
    assert time.perf_counter() - start < 60


def test_a_text_file_named_mp4_is_a_message(page, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    status = _run(page, fake)
    assert status == "error: notes.mp4: not a readable video (Invalid data found when processing input)"
    assert "Traceback" not in page.content()
    page.screenshot(path=str(tmp_path / "error.png"))


def test_bundled_example_with_both_tasks_in_the_browser(page, tmp_path):
    """The bundled example, depth and normals: the page reports done and shows a playable result. With
    BUFFERANYTIME_APP_SCREENSHOT=docs/app.png this also makes the screenshot of docs/app.md."""
    page.get_by_label(EXAMPLE).check()
    page.get_by_label(BOTH, exact=True).check()
    page.locator("#run").click()
    status = page.locator("#status textarea")
    page.wait_for_function("el => /^(done|error)/.test(el.value)", arg=status.element_handle(), timeout=300_000)
    assert status.input_value().startswith("done")
    video = page.locator("#result_video video")
    duration = video.evaluate("""v => new Promise(resolve => v.readyState >= 1 ? resolve(v.duration)
                                 : v.addEventListener('loadedmetadata', () => resolve(v.duration)))""")
    assert np.isfinite(duration) and duration > 0
    video.evaluate("v => { v.pause(); v.currentTime = v.duration / 2; }")
    page.wait_for_timeout(1000)
    page.screenshot(path=SCREENSHOT or str(tmp_path / "app.png"), full_page=True)
