"""The web app in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

On CI (``CI=true``) a missing browser is a failure, not a skip: ``make test`` installs it."""

from __future__ import annotations

import os
import socket
import time
import zipfile
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
# Every wait below ends on an event of the page (a status, an element, a download); this bound only stops a hung
# app, far above what any run takes on a slow, busy machine. No test asserts how long anything took.
PATIENCE_MS = 900_000
SCREENSHOT = os.environ.get("BUFFERANYTIME_APP_SCREENSHOT")  # where to save the app's picture (docs/app.png)
SMALL_EXAMPLE = {"num_frames": 8, "size": (96, 128)}  # the bundled example, cut down for the tests


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
    """The app served on a free port; the bundled example is cut down unless the screenshot is being made."""
    from bufferanytime.app import work
    from bufferanytime.app.ui import Sessions, build_app, launch

    with pytest.MonkeyPatch.context() as patch:
        if not SCREENSHOT:
            for key, value in SMALL_EXAMPLE.items():
                patch.setitem(work.EXAMPLE_VIDEO, key, value)
        sessions = Sessions(tmp_path_factory.mktemp("app") / "sessions")
        demo = build_app(sessions)
        url = launch(demo, "127.0.0.1", _free_port())
        yield url, sessions.root
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
    page.set_default_timeout(PATIENCE_MS)
    page.goto(url)
    page.locator("#run").wait_for()
    yield page
    page.close()


def _wait_for_status(page) -> str:
    status = page.locator("#status textarea")
    page.wait_for_function("el => /^(done|error)/.test(el.value)", arg=status.element_handle(), timeout=PATIENCE_MS)
    return status.input_value()


def _run(page, path: Path) -> str:
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator("#upload").get_by_text(path.name).first.wait_for()
    page.locator("#run").click()
    return _wait_for_status(page)


def test_upload_run_depth_and_download(page, app_url, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_pattern(FRAMES, HEIGHT, WIDTH), fps=8)
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
    page.close()  # the session ends: its folders go (polled until then; the bound only stops a hang)
    deadline = time.monotonic() + PATIENCE_MS / 1000
    while any(session_root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(session_root.iterdir())


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
    assert page.locator("#upload").is_visible()
    page.get_by_label(EXAMPLE).check()
    page.locator("#upload_box").wait_for(state="hidden")  # no upload box, nor its trim controls, for the example
    assert not page.locator("#upload").is_visible() and not page.locator("#first").is_visible()
    page.get_by_label(BOTH, exact=True).check()
    with page.expect_response(lambda r: r.url.endswith("/fused.glb"), timeout=PATIENCE_MS) as scene:
        page.locator("#run").click()  # the 3D view fetches the fused scene by itself, before any download
        assert _wait_for_status(page).startswith("done")
    assert scene.value.ok and scene.value.body()[:4] == b"glTF"
    page.locator("#scene3d canvas").first.wait_for(state="visible")
    _assert_the_3d_downloads_open(page, tmp_path)
    _assert_nothing_covers_the_pictures(page)
    video = page.locator("#result_video video")
    duration = video.evaluate("""v => new Promise(resolve => v.readyState >= 1 ? resolve(v.duration)
                                 : v.addEventListener('loadedmetadata', () => resolve(v.duration)))""")
    assert np.isfinite(duration) and duration > 0
    video.evaluate("""v => new Promise(resolve => { v.addEventListener('seeked', resolve, {once: true});
                                                    v.pause(); v.currentTime = v.duration / 2; })""")
    _screenshot(page, Path(SCREENSHOT) if SCREENSHOT else tmp_path / "app.png")


def _assert_the_3d_downloads_open(page, tmp_path: Path) -> None:
    """The depth run's 3D files are offered; the COLMAP zip downloads and holds the model COLMAP reads."""
    for name in ("fused.ply", "fused.glb", "camera.json", "colmap.zip", "nerfstudio.zip"):
        page.locator(f'#downloads a[download="{name}"]').first.wait_for()
    with page.expect_download() as download:
        page.locator('#downloads a[download="colmap.zip"]').first.click()
    download.value.save_as(tmp_path / "colmap.zip")
    with zipfile.ZipFile(tmp_path / "colmap.zip") as zf:
        assert "colmap/sparse/0/cameras.txt" in zf.namelist()


def _screenshot(page, path: Path) -> None:
    """The page down to the time slice, in 256 colours (docs/app.png stays well under 300 KB)."""
    from PIL import Image

    bottom = page.locator("#time_slice").evaluate("el => el.getBoundingClientRect().bottom + window.scrollY")
    full = path.with_name(f".{path.stem}.full.png")
    page.screenshot(path=str(full), full_page=True,
                    clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": bottom + 8})
    with Image.open(full) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    full.unlink()


def _assert_nothing_covers_the_pictures(page) -> None:
    """No visible text, icon or button lies over the top strip of the video or of the time slice (no Gradio badge
    or toolbar): the time slice's own column labels stay readable. By geometry: Gradio's badge ignores the
    pointer, so ``elementFromPoint`` would not see it."""
    for element in ("#time_slice img", "#result_video video"):
        picture = page.locator(element)
        picture.wait_for(state="visible")
        covered = picture.evaluate("""el => { const r = el.getBoundingClientRect();
            return [...document.querySelectorAll('body *:not([data-testid=status-tracker])')]  // the fading progress
                .filter(o => !o.contains(el) && !el.contains(o))
                .filter(o => o.innerText?.trim() || ['BUTTON', 'svg', 'IMG', 'VIDEO', 'CANVAS'].includes(o.tagName))
                .filter(o => { const b = o.getBoundingClientRect(), style = getComputedStyle(o);
                    return b.width > 1 && b.height > 1 && style.visibility !== 'hidden' && style.opacity !== '0'
                        && b.left < r.right && b.right > r.left && b.top < r.top + 24 && b.bottom > r.top; })
                .map(o => o.outerHTML.slice(0, 80)); }""")
        assert covered == [], (element, covered)


def test_adapt_first_then_run_shows_opw_before_and_after(page, tmp_path):
    """Ticking "adapt to this video first" adapts the video model on the upload, then predicts with it: the page
    says so under the metrics, with the held-out part's OPW before and after."""
    clip = tmp_path / "adapt.mp4"
    write_video(clip, moving_pattern(12, HEIGHT, WIDTH), fps=8)
    page.locator("#adapt input[type=checkbox]").check()
    page.locator("#adapt_budget textarea").fill("2steps")
    status = _run(page, clip)
    assert status.startswith("done"), status
    metrics = page.locator("#metrics").inner_text()
    line = next(text for text in metrics.splitlines() if "adapted to this video" in text)
    assert "(2 steps, budget 2steps)" in line and "model is shown" in line, line
    before, after = line.split("held-out part ")[1].split(";")[0].split(" → ")
    assert float(before) > 0 and float(after) > 0
    assert not page.outside, page.outside
