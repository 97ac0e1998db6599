"""End to end in headless Chromium: the page as a user drives it, served by gunicorn.

The server is started with the README's command (``gunicorn app:server``, on a
free loopback port) and the real bundled weights; the browser is the Debian
``chromium`` package driven by Playwright (never a downloaded browser).
Screenshots of the main states go to ``test-output/screenshots/``.

The tests share one page and run in order: upload -> hover -> sliders ->
click -> downloads -> calibration -> calibration by drawing a line -> bad
upload -> layouts -> timing.
"""

import base64
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from livesrv import Server, free_port, gunicorn_exe, weights_available

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
EMPS_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/emps-train/images"
OUT = REPO / "test-output"
SHOTS = OUT / "screenshots"
UPLOAD_NAME = "70f9f13af4.png"  # a SEM image with many particles, some touching
TIMING_SOURCE = "2ee0518d7a.png"
MAX_UPLOAD_MB = 50
BANNER_IMAGE = "1b3c6536a3.png"  # an SEM image with an instrument data bar along the bottom
CALIBRATION_SOURCE = "aa309f6cec.png"
CALIBRATION_SIZE = (2200, 1650)  # over the 2048 px the page shows unscaled: the browser gets a subsampled picture
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def gunicorn_command(port):
    """What the README tells a user to run, on a free loopback port."""
    return [gunicorn_exe(), "-b", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "--timeout", "300",
            "app:server"]


@pytest.fixture(scope="module")
def emps():
    if not EMPS_IMAGES.is_dir():
        pytest.skip(f"shared EMPS images not found at {EMPS_IMAGES} (expected ../shared beside the repo)")
    return EMPS_IMAGES


@pytest.fixture(scope="module")
def server(emps, tmp_path_factory):
    if not weights_available():
        pytest.fail("model weights missing: saemi/model_weights/saemi_unet_resnet18.pt (or $SAEMI_WEIGHTS) must exist")
    OUT.mkdir(exist_ok=True)
    port = free_port()
    srv = Server(gunicorn_command(port), port=port, log_path=OUT / "browser-gunicorn.log",
                 env={"SAEMI_DEVICE": "cpu", "SAEMI_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),  # the default
                      # a cache of its own: a segmentation left by an earlier run would skip the network
                      "SAEMI_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
                      # and parked sample uploads of its own (the default, /tmp/saemi-staging, is shared by
                      # every server of this host, a concurrent test run's too)
                      "SAEMI_STAGING_DIR": str(tmp_path_factory.mktemp("staging"))})
    try:
        srv.wait("/api/v1/health", timeout=240)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium")
    if not exe:
        pytest.skip("Debian package 'chromium' is not installed (apt-get install chromium); "
                    ".ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageState:
    """What the ordered tests hand on to each other."""

    def __init__(self, page, errors):
        self.page, self.errors = page, errors
        self.count = None
        self.filename = None


@pytest.fixture(scope="module")
def ui(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.set_default_timeout(60_000)
    page.goto(server.url + "/")
    page.wait_for_selector("#demo-button")
    yield PageState(page, errors)
    ctx.close()


# --- helpers ----------------------------------------------------------------------------------

def shot(page, name, full_page=True):
    page.screenshot(path=str(SHOTS / name), full_page=full_page)


def settle(page, timeout=120_000):
    """Wait until no Dash callback is pending (and let Plotly draw)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-dash-is-loading=\"true\"]') && window.dash_clientside !== undefined",
        timeout=timeout)
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=timeout)


def count(page):
    return int(page.text_content("#summary-count").replace(",", ""))


def histogram_meta(page):
    return page.evaluate("""() => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');
        return gd && gd.layout ? gd.layout.meta : null; }""")


def wait_count_change(page, old, timeout=120_000):
    page.wait_for_function(f"() => document.querySelector('#summary-count').textContent !== '{old}'",
                           timeout=timeout)
    settle(page)
    return count(page)


def upload(page, path, timeout=240_000, spinner=None):
    """Upload a file and wait for the histogram of the new analysis; returns seconds taken.

    With a ``spinner`` list, records whether the loading indicator showed meanwhile.
    """
    old = (histogram_meta(page) or {}).get("key")
    t0 = time.perf_counter()
    page.set_input_files("#upload input[type=file]", str(path))
    if spinner is not None:
        try:
            page.wait_for_selector("#image-loading .dash-spinner-container, #image-loading [class*=spinner]",
                                   state="attached", timeout=20_000)
            spinner.append(True)
        except Exception:
            spinner.append(False)
    page.wait_for_function(
        """(old) => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');
            const key = gd && gd.layout && gd.layout.meta ? gd.layout.meta.key : '';
            return key && key !== old; }""", arg=old or "", timeout=timeout)
    elapsed = time.perf_counter() - t0
    settle(page)
    return elapsed


def control_settings(page):
    """The splitting settings the page's controls show right now."""
    def slider(cid):
        return float(page.get_attribute(f"#{cid} [role=slider]", "aria-valuenow"))

    return {"watershed": page.is_checked("#watershed input[type=checkbox]"),
            # the fraction sliders show percentages of the typical diameter (or of its disc's area)
            "min_distance_fraction": round(slider("min-distance-fraction") / 100, 6), "threshold": slider("threshold"),
            "min_size_fraction": round(slider("min-size-fraction") / 100, 6),
            "exclude_edge": page.is_checked("#exclude-edge input[type=checkbox]"),
            "merge_threshold": slider("merge-threshold"),
            "min_relative_size": round(slider("min-relative-size") / 100, 6)}  # the slider shows a percentage


def wait_key_change(page, old, timeout=120_000):
    """Wait for the histogram of a new labelling (its key names the splitting settings)."""
    page.wait_for_function("""(old) => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');
        return gd && gd.layout && gd.layout.meta && gd.layout.meta.key !== old; }""", arg=old, timeout=timeout)
    settle(page)


def set_slider(page, cid, value):
    """Move a slider to ``value`` from the keyboard: Home, then one step right at a time."""
    thumb = page.locator(f"#{cid} [role=slider]")
    thumb.focus()
    page.keyboard.press("Home")
    for _ in range(200):
        if float(thumb.get_attribute("aria-valuenow")) >= value - 1e-9:
            break
        page.keyboard.press("ArrowRight")


def api_count(server, image_path, settings):
    body = {"image": base64.b64encode(Path(image_path).read_bytes()).decode(), "filename": Path(image_path).name,
            **settings, "include_images": False}
    r = requests.post(server.url + "/api/v1/analyze", json=body, timeout=300)
    assert r.status_code == 200, r.text[:500]
    return r.json()["summary"]["count"]


def find_particle(page, exclude=()):
    """Screen position and label of a pixel well inside some particle (from the hover grid)."""
    return page.evaluate("""(exclude) => {
        const gd = document.querySelector('#image-graph .js-plotly-plot');
        const tr = gd._fullData[2]; const z = tr._z || tr.z; const n = z.length, m = z[0].length;
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis; const bb = gd.getBoundingClientRect();
        const sizes = {};
        for (let r = 0; r < n; r++) for (let c = 0; c < m; c++) { const v = z[r][c]; if (v) sizes[v] = (sizes[v] || 0) + 1; }
        let best = null;
        for (let r = 2; r < n - 2; r++) for (let c = 2; c < m - 2; c++) {
            const v = z[r][c]; if (!v || exclude.includes(v)) continue;
            let inside = true;
            for (let dr = -2; dr <= 2 && inside; dr++) for (let dc = -2; dc <= 2; dc++) if (z[r + dr][c + dc] !== v) { inside = false; break; }
            if (!inside) continue;
            if (!best || sizes[v] > best.size) best = {label: v, size: sizes[v], r: r, c: c};
        }
        if (!best) return null;
        const x = tr.x0 + best.c * tr.dx, y = tr.y0 + best.r * tr.dy;
        return {label: best.label, x: bb.left + xa._offset + xa.l2p(x), y: bb.top + ya._offset + ya.l2p(y)};
    }""", list(exclude))


def no_horizontal_scroll(page):
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


# --- the tests, in the order a user works -------------------------------------------------------

def test_page_loads_with_title_and_favicon(ui, server):
    page = ui.page
    assert page.title().startswith("SAEMI")
    icon = page.get_attribute("link[rel=icon]", "href")
    assert "favicon.ico" in icon and requests.get(server.url + icon, timeout=10).status_code == 200
    assert "Try the demo" in page.text_content("#demo-button")
    assert "j.jiec.2019.05.007" in page.text_content("footer")
    for cid in ("min-distance-fraction", "threshold", "min-size-fraction", "merge-threshold", "min-relative-size",
                "diameter", "nm-per-pixel", "bar-value", "opacity", "metric", "bin-width"):
        assert page.locator(f"#{cid}-label").count() == 1, cid
    assert page.get_attribute("#upload-error", "role") == "alert"
    for cid in ("min-distance-fraction", "threshold", "min-size-fraction", "merge-threshold", "min-relative-size",
                "opacity"):  # the handles carry their label's name
        page.wait_for_function(f"() => document.querySelector('#{cid} [role=slider]')"
                               f".getAttribute('aria-labelledby') === '{cid}-label'", timeout=10_000)
    assert page.get_by_role("slider", name="Minimum peak distance (% of the typical diameter)").count() == 1
    assert page.get_by_role("checkbox", name="Split touching particles (watershed)").count() == 1
    assert page.get_by_role("spinbutton", name="Calibration", exact=True).count() == 1  # in the unit beside it
    assert page.get_by_role("textbox", name="Bar length").count() == 1
    shot(page, "01-start.png")


def test_upload_shows_overlay_histogram_and_the_api_count(ui, server, emps):
    page = ui.page
    path = emps / UPLOAD_NAME
    elapsed = upload(page, path)
    ui.filename = UPLOAD_NAME
    overlay = page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot').data[1].source")
    assert overlay.startswith("data:image/png;base64,") and len(overlay) > 1000
    meta = histogram_meta(page)
    shown = count(page)
    assert shown > 5 and meta["count"] == shown
    bars = page.evaluate("() => document.querySelectorAll('#histogram-graph .bars path').length")
    assert bars > 0
    assert shown == api_count(server, path, control_settings(page))
    assert page.text_content("#upload-error") == ""
    assert f"{shown} particles found" in page.text_content("#analysis-status")
    rows = page.locator("#particle-grid .ag-center-cols-container [role=row]").count()
    assert rows > 0
    ui.count = shown
    shot(page, "02-analysed.png")
    print(f"upload to histogram ({UPLOAD_NAME}): {elapsed:.2f} s, {shown} particles")


def test_hover_shows_label_and_size(ui):
    page = ui.page
    p = find_particle(page)
    assert p, "no particle found in the hover grid"
    page.mouse.move(p["x"], p["y"])
    page.wait_for_function("() => (document.querySelector('#image-tooltip') || {}).textContent", timeout=10_000)
    text = page.text_content("#image-tooltip")
    assert f"Particle {p['label']}:" in text and "eq. diameter" in text and "px" in text
    shot(page, "03-hover.png", full_page=False)
    page.mouse.move(5, 5)


def test_min_distance_changes_the_count(ui, server, emps):
    page = ui.page
    # Merging exists to undo over-splitting, so with it on the watershed's own
    # effect can vanish from the count: look at min_distance with merging off.
    old = histogram_meta(page)["key"]
    page.locator("#merge-threshold [role=slider]").focus()
    page.keyboard.press("Home")
    wait_key_change(page, old)
    assert control_settings(page)["merge_threshold"] == 0
    before = count(page)
    thumb = page.locator("#min-distance-fraction [role=slider]")
    thumb.focus()
    page.keyboard.press("Home")  # 1 % of the typical diameter: splits the most
    try:
        after = wait_count_change(page, before, timeout=60_000)
    except Exception:
        thumb.focus()
        page.keyboard.press("End")  # the largest distance: splits the least
        after = wait_count_change(page, before)
    assert after != before
    settings = control_settings(page)
    assert settings["min_distance_fraction"] * 100 in (1, int(float(thumb.get_attribute("aria-valuemax"))))
    assert after == api_count(server, emps / UPLOAD_NAME, settings)
    ui.count = after
    shot(page, "04-min-distance.png")


def test_typical_diameter_field_is_sent_and_honoured(ui, server, emps):
    """Issue 20: the page's "Typical particle diameter (px)" field; empty means estimated."""
    page = ui.page
    assert page.locator("#diameter-label").text_content() == "Typical particle diameter (px)"
    hint = page.get_attribute("#diameter", "placeholder")  # the estimate for the image shown
    assert hint.startswith("automatic (estimated "), hint
    estimated = float(hint.split("estimated ")[1].rstrip(")"))
    before = count(page)
    given = max(1, round(estimated / 3))
    old = histogram_meta(page)["key"]
    page.fill("#diameter", str(given))
    page.press("#diameter", "Enter")
    wait_key_change(page, old)
    after = count(page)
    # the same as the API gives for that diameter: the network ran at the working scale it sets
    assert after == api_count(server, emps / UPLOAD_NAME, {**control_settings(page), "diameter": given})
    assert after != before
    assert page.get_attribute("#diameter", "placeholder") == "automatic"  # the user's value is in force
    shot(page, "04b-diameter.png")
    old = histogram_meta(page)["key"]
    page.fill("#diameter", "")
    page.press("#diameter", "Enter")
    wait_key_change(page, old)
    assert count(page) == before and page.get_attribute("#diameter", "placeholder") == hint


def test_fragment_and_merge_sliders_reanalyse(ui, server, emps):
    """The two newer splitting settings re-measure like the others, and agree with the API."""
    page = ui.page
    before, start = count(page), control_settings(page)
    for cid in ("min-relative-size", "merge-threshold"):  # the most each can do
        old = histogram_meta(page)["key"]
        page.locator(f"#{cid} [role=slider]").focus()
        page.keyboard.press("End")
        wait_key_change(page, old)
    after = count(page)
    settings = control_settings(page)
    assert settings["min_relative_size"] >= 0.5 and settings["merge_threshold"] >= 0.9
    assert after < before  # fragments dropped and pieces merged
    assert after == api_count(server, emps / UPLOAD_NAME, settings)
    shot(page, "04b-fragments-merged.png")
    set_slider(page, "min-relative-size", start["min_relative_size"] * 100)
    set_slider(page, "merge-threshold", start["merge_threshold"])
    assert control_settings(page) == start
    page.wait_for_function(f"() => document.querySelector('#summary-count').textContent === '{before:,}'")
    page.evaluate("() => window.scrollTo(0, 0)")  # the sliders scrolled the image partly out of view
    settle(page)
    assert count(page) == before


def test_click_excludes_a_particle_and_restores_it(ui):
    page = ui.page
    before = count(page)
    p = find_particle(page)
    sent, received = [], []

    def on_request(r):
        if "_dash-update-component" in r.url:
            sent.append(r.post_data or "")

    def on_response(r):
        if "_dash-update-component" in r.url:
            received.append(r)

    page.on("request", on_request)
    page.on("response", on_response)
    page.mouse.click(p["x"], p["y"])
    assert wait_count_change(page, before) == before - 1
    settle(page)
    page.remove_listener("request", on_request)
    page.remove_listener("response", on_response)
    # the labels stay on the server: a click sends none up, and gets back only what the page draws
    assert sent and not any("labels_png" in body or "iVBORw0KGgo" in body for body in sent), \
        [body[:200] for body in sent]
    up = sum(len(body) for body in sent)
    down = sum(len(r.body()) for r in received if r.status == 200)
    print(f"\none click: {len(sent)} callbacks, {up / 1000:.1f} kB up, {down / 1000:.1f} kB down")
    assert up < 60_000  # 126 kB went up per click while the label PNG travelled with it
    page.mouse.move(5, 5)
    page.wait_for_timeout(200)
    page.mouse.move(p["x"] + 1, p["y"] + 1)
    page.mouse.move(p["x"], p["y"])
    page.wait_for_function("() => (document.querySelector('#image-tooltip') || {}).textContent.includes('excluded')",
                           timeout=10_000)
    shot(page, "05-excluded.png", full_page=False)
    page.mouse.click(p["x"], p["y"])  # restore
    assert wait_count_change(page, before - 1) == before
    page.mouse.click(p["x"], p["y"])  # and exclude again for the downloads
    ui.count = wait_count_change(page, before)
    assert ui.count == before - 1
    ui.excluded = p["label"]
    page.mouse.move(5, 5)


def test_downloads_match_the_count_shown(ui):
    page = ui.page
    with page.expect_download() as d:
        page.click("#download-particles-button")
    dl = d.value
    assert dl.suggested_filename == Path(ui.filename).stem + "_particles.csv"
    target = OUT / dl.suggested_filename
    dl.save_as(str(target))
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == count(page) == ui.count
    assert str(ui.excluded) not in {r["label"] for r in rows}
    with page.expect_download() as d:
        page.click("#download-summary-button")
    dl = d.value
    assert dl.suggested_filename == Path(ui.filename).stem + "_summary.csv"
    target = OUT / dl.suggested_filename
    dl.save_as(str(target))
    summary = {r["metric"]: r for r in csv.DictReader(io.StringIO(target.read_text()))}
    assert int(summary["equivalent_diameter"]["count"]) == ui.count


def test_calibration_switches_sizes_to_nm(ui):
    page = ui.page
    page.fill("#nm-per-pixel", "2.5")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(nm)')")
    settle(page)
    assert " nm" in page.text_content("#summary")
    headers = page.text_content("#particle-grid .ag-header")
    assert "nm" in headers
    page.click("#metric")
    page.get_by_role("option", name="Area").click()
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('nm²')")
    page.fill("#bin-width", "500")
    page.press("#bin-width", "Enter")
    settle(page)
    assert count(page) == ui.count  # units and bins never change the particles
    shot(page, "06-calibrated.png")
    page.fill("#nm-per-pixel", "")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => !document.querySelector('#histogram-graph').textContent.includes('(nm')")
    settle(page)


def image_geometry(page):
    """Where the micrograph lies on the screen, and the image it shows."""
    return page.evaluate("""() => { const gd = document.querySelector('#image-graph .js-plotly-plot');
        const r = gd.querySelector('.imagelayer image').getBoundingClientRect();
        return {left: r.left, top: r.top, width: r.width, height: r.height, stride: gd.data[0].dx,
                image_width: gd.layout.meta.width, image_height: gd.layout.meta.height}; }""")


def drag(page, x0, y0, x1, y1):
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    page.mouse.up()


def shown_line_px(page):
    return float(page.text_content("#calib-line-length").split()[1].replace(",", ""))


def test_calibration_by_drawing_a_line(ui, emps, tmp_path):
    """Draw a line over a known span, type the bar's value: nm per pixel = value / span in image pixels.

    The image is wider than the page shows unscaled, so the browser draws a
    subsampled picture; the span must still come out in original pixels.
    """
    from PIL import Image

    page = ui.page
    path = tmp_path / "large_for_calibration.png"
    Image.open(emps / CALIBRATION_SOURCE).convert("RGB").resize(CALIBRATION_SIZE, Image.BILINEAR).save(path)
    upload(page, path)
    ui.count, ui.filename = count(page), path.name
    if page.input_value("#nm-per-pixel"):  # a scale bar read in the image: start from pixels
        page.fill("#nm-per-pixel", "")
        page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(px')")
    settle(page)
    assert "No line drawn" in page.text_content("#calib-line-length")

    page.click("#draw-line-button")
    page.wait_for_function("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout.dragmode"
                           " === 'drawline'")
    page.locator("#image-graph").scroll_into_view_if_needed()
    g = image_geometry(page)
    assert g["stride"] == 2 and (g["image_width"], g["image_height"]) == CALIBRATION_SIZE
    scale = g["image_width"] / g["width"]  # image pixels per screen pixel
    assert abs(g["image_height"] / g["height"] - scale) < 0.01 * scale
    x0, y0 = g["left"] + 0.2 * g["width"], g["top"] + 0.35 * g["height"]
    x1, y1 = g["left"] + 0.75 * g["width"], g["top"] + 0.55 * g["height"]
    drag(page, x0, y0, x1, y1)
    span = math.hypot(x1 - x0, y1 - y0) * scale
    page.wait_for_function("() => document.querySelector('#calib-line-length').textContent.startsWith('Line:')")
    assert abs(shown_line_px(page) - span) < 0.03 * span
    assert "Type the length" in page.text_content("#calib-message")

    page.fill("#bar-value", "-3")
    page.press("#bar-value", "Enter")
    page.wait_for_function("() => document.querySelector('#calib-message').textContent.includes('positive number')")
    assert page.input_value("#nm-per-pixel") == ""  # nothing filled in from a bad value
    page.check("#bar-unit input[value='µm']")
    page.fill("#bar-value", "2")
    page.press("#bar-value", "Enter")
    # sizes in nm, or in µm when the particles are that large (issue 18's units)
    page.wait_for_function("() => /\\((nm|µm)/.test(document.querySelector('#histogram-graph').textContent)")
    settle(page)
    nm = float(page.input_value("#nm-per-pixel"))
    assert abs(nm - 2000 / span) < 0.03 * 2000 / span, (nm, 2000 / span)
    unit = "µm" if "(µm" in page.text_content("#histogram-graph") else "nm"
    assert f" {unit}" in page.text_content("#summary") and unit in page.text_content("#particle-grid .ag-header")
    assert "nm per pixel" in page.text_content("#calib-message")
    assert count(page) == ui.count  # a calibration never changes the particles
    page.locator("#image-graph").scroll_into_view_if_needed()
    shot(page, "06b-line-calibration.png", full_page=False)

    # click the line, drag its end further: the edit (shapes[i].x1 ...) re-measures it
    g = image_geometry(page)
    x0, y0 = g["left"] + 0.2 * g["width"], g["top"] + 0.35 * g["height"]
    x1, y1 = g["left"] + 0.75 * g["width"], g["top"] + 0.55 * g["height"]
    page.mouse.click((x0 + x1) / 2, (y0 + y1) / 2)
    page.wait_for_timeout(300)
    x2 = g["left"] + 0.9 * g["width"]
    drag(page, x1, y1, x2, y1)
    longer = math.hypot(x2 - x0, y1 - y0) * scale
    page.wait_for_function("(old) => document.querySelector('#nm-per-pixel').value !== old", arg=str(nm))
    settle(page)
    assert abs(shown_line_px(page) - longer) < 0.03 * longer
    assert abs(float(page.input_value("#nm-per-pixel")) - 2000 / longer) < 0.03 * 2000 / longer
    assert count(page) == ui.count

    page.fill("#bar-value", "")
    page.press("#bar-value", "Enter")
    page.fill("#nm-per-pixel", "")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => !/\\((nm|µm)/.test(document.querySelector('#histogram-graph').textContent)")
    page.evaluate("() => window.scrollTo(0, 0)")
    settle(page)


def test_text_file_renamed_png_shows_an_error_and_the_page_keeps_working(ui, tmp_path, emps):
    page = ui.page
    bad = tmp_path / "notes.png"
    bad.write_text("This is a lab notebook entry, not an image.\n" * 20)
    page.set_input_files("#upload input[type=file]", str(bad))
    page.wait_for_function("() => document.querySelector('#upload-error').textContent.length > 0")
    msg = page.text_content("#upload-error")
    assert "notes.png" in msg and "not an image" in msg
    assert count(page) == ui.count  # the previous result is still shown
    shot(page, "07-error.png", full_page=False)
    huge = tmp_path / "huge.tif"
    with open(huge, "wb") as f:  # sparse: one byte over the limit costs no disk
        f.write(b"II*\x00")
        f.truncate(MAX_UPLOAD_MB * 1024 * 1024 + 1)
    page.evaluate("() => { document.querySelector('#upload-error').textContent = ''; }")
    page.set_input_files("#upload input[type=file]", str(huge))
    page.wait_for_function("() => document.querySelector('#upload-error').textContent.length > 0")
    msg = page.text_content("#upload-error")
    assert "huge.tif" in msg and f"limit is {MAX_UPLOAD_MB} MB" in msg, msg
    upload(page, emps / BANNER_IMAGE)  # and a good file works right after
    assert page.text_content("#upload-error") == ""
    assert count(page) > 0
    shapes = page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot').layout.shapes")
    assert any(sh.get("name") == "banner" for sh in shapes), "the removed data bar is not drawn"
    shot(page, "07b-banner.png")


def test_overlay_mode_and_opacity(ui):
    page = ui.page

    def layer():
        return page.evaluate("""() => { const t = document.querySelector('#image-graph .js-plotly-plot').data[1];
            return [t.source.length, t.opacity]; }""")

    size, _ = layer()
    page.get_by_label("Filled labels").check()
    page.wait_for_function(f"() => document.querySelector('#image-graph .js-plotly-plot').data[1].source.length"
                           f" !== {size}")
    settle(page)
    shot(page, "07c-filled.png", full_page=False)
    thumb = page.locator("#opacity [role=slider]")
    thumb.focus()
    page.keyboard.press("Home")
    page.wait_for_function("() => document.querySelector('#image-graph .js-plotly-plot').data[1].opacity === 0")
    page.keyboard.press("End")
    page.wait_for_function("() => document.querySelector('#image-graph .js-plotly-plot').data[1].opacity === 1")
    page.get_by_label("Outlines").check()
    settle(page)
    assert count(page) > 0


def test_demo_button_and_layouts(ui):
    page = ui.page
    old = (histogram_meta(page) or {}).get("key")
    page.click("#demo-button")
    page.wait_for_function("""(old) => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');
        return gd && gd.layout && gd.layout.meta && gd.layout.meta.key && gd.layout.meta.key !== old; }""",
                           arg=old or "", timeout=240_000)
    settle(page)
    assert page.text_content("#upload-error") == ""
    assert count(page) > 0 and "emps_demo.png" in page.text_content("#upload-status")
    for w, h in ((1366, 768), (1920, 1080)):
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(800)
        assert no_horizontal_scroll(page), f"horizontal scroll bar at {w}x{h}"
        graph = page.locator("#image-graph").bounding_box()
        hist = page.locator("#histogram-graph").bounding_box()
        assert graph["width"] > 400 and hist["width"] > 300
        assert graph["y"] < h and hist["y"] < h  # the image and histogram are visible without scrolling
        shot(page, f"08-demo-{w}x{h}.png", full_page=False)
    page.set_viewport_size({"width": 1366, "height": 768})


def test_upload_to_histogram_time_for_1024x768(ui, emps, tmp_path):
    from PIL import Image

    img = Image.open(emps / TIMING_SOURCE).convert("RGB").resize((1024, 768), Image.BILINEAR)
    path = tmp_path / "emps_1024x768.png"
    img.save(path)
    spinner = []
    seconds = upload(ui.page, path, spinner=spinner)
    assert spinner and spinner[0], "no loading indicator while the model ran"
    n = count(ui.page)
    # a slider move: re-analysis from the cached network output, histogram redrawn
    old = histogram_meta(ui.page)["key"]
    ui.page.locator("#min-distance-fraction [role=slider]").focus()
    t0 = time.perf_counter()
    ui.page.keyboard.press("ArrowRight")
    ui.page.wait_for_function("""(old) => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');
        return gd.layout.meta.key !== old; }""", arg=old)
    slider_s = time.perf_counter() - t0
    settle(ui.page)
    result = {"image": f"{TIMING_SOURCE} resized to 1024x768", "upload_to_histogram_s": round(seconds, 2),
              "slider_to_histogram_s": round(slider_s, 2), "particles": n}
    (OUT / "browser-timing.json").write_text(json.dumps(result, indent=2))
    print(f"upload to histogram, 1024x768: {seconds:.2f} s ({n} particles); slider to histogram {slider_s:.2f} s")
    shot(ui.page, "09-1024x768.png")
    assert seconds < 240


def test_page_runs_under_its_content_security_policy(ui, server):
    """Everything above ran under the page's CSP; here: it is sent, and enforced by Chromium."""
    csp = requests.get(server.url + "/", timeout=10).headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
    # an injected inline script is refused by the browser ...
    before = len(ui.errors)
    injected = ui.page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', e => resolve(e.violatedDirective), {once: true});
        const s = document.createElement('script'); s.textContent = 'window.__saemi_injected = 1';
        document.body.appendChild(s);
        setTimeout(() => resolve(window.__saemi_injected === 1 ? 'ran' : 'silent'), 2000);
    })""")
    assert injected.startswith("script-src"), injected
    # ... while the page's own callbacks still work (the upload, sliders and clicks above did)
    assert ui.page.locator("#image-graph .main-svg").count() > 0
    # the refusal itself is the one console error this test causes
    caused = ui.errors[before:]
    assert all("Content Security Policy" in e for e in caused), caused
    del ui.errors[before:]


def summary_value(page, name):
    """The text the summary panel shows for one statistic ("Median" -> "12.34 nm")."""
    return page.evaluate("""(name) => { for (const dt of document.querySelectorAll('#summary dt'))
        if (dt.textContent.trim() === name) return dt.nextElementSibling.textContent.trim(); return null; }""", name)


def test_zeiss_tiff_shows_the_file_calibration_and_sizes_in_nm(ui, server, emps, tmp_path):
    """A Zeiss SmartSEM TIFF (CZ_SEM tag) calibrates the page by itself, and says so."""
    import tifffile
    from PIL import Image

    from emfiles import zeiss_text

    page = ui.page
    grey = np.asarray(Image.open(emps / UPLOAD_NAME).convert("L")).astype(np.uint16) * 257
    h, w = grey.shape
    path = tmp_path / "zeiss_sem.tif"
    tifffile.imwrite(path, grey, extratags=[(34118, 2, 0, zeiss_text(store=f"{w} * {h}"), True)])
    page.click("#metric")  # the summary is compared with the API's, whose default metric this is
    page.get_by_role("option", name="Equivalent diameter").click()
    settle(page)
    upload(page, path)
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(nm)')")
    settle(page)
    line = page.text_content("#calibration-record")
    assert line == "Calibration: 7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)"
    assert page.input_value("#nm-per-pixel") == "7.344"
    assert "7.344 nm/px from the file" in page.text_content("#upload-status")
    # the page's nm sizes are the backend's for the same settings, with the file's calibration
    body = {"image": base64.b64encode(path.read_bytes()).decode(), "filename": path.name,
            **control_settings(page), "include_images": False}
    api = requests.post(server.url + "/api/v1/analyze", json=body, timeout=300).json()
    assert api["calibration"]["source"] == "file" and api["summary"]["unit"] == "nm"
    median = summary_value(page, "Median")
    assert median.endswith(" nm")
    assert float(median.split()[0].replace(",", "")) == pytest.approx(api["summary"]["median"], rel=2e-3)
    assert count(page) == api["summary"]["count"]
    with page.expect_download() as dl:
        page.click("#download-particles-button")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert rows and {r["nm_per_pixel"] for r in rows} == {"7.344"} and {r["calibration_source"] for r in rows} == {"file"}
    # typing another value wins, and the page says the file disagrees
    page.fill("#nm-per-pixel", "8")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#calibration-record').textContent.includes('set by you')")
    assert "The file says 7.344 nm/px" in page.text_content("#calibration-warnings")
    shot(page, "10-zeiss-calibrated.png")
    page.fill("#nm-per-pixel", "")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#calibration-record').textContent.includes('none')")
    settle(page)


def scale_bar_micrograph(path, label="500 nm", bar=(430, 470, 600), seed=3):
    """A synthetic micrograph: dark discs on grey, a white scale bar (y, x0, x1) and its label above it."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    h, w = 512, 700
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), 150.0) + rng.normal(0, 6, (h, w))
    for _ in range(30):
        cy, cx, r = rng.uniform(20, 380), rng.uniform(20, w - 20), rng.uniform(10, 22)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 45
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB")
    d = ImageDraw.Draw(pil)
    y, x0, x1 = bar
    d.rectangle([x0, y, x1 - 1, y + 7], fill=(255, 255, 255))
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 28)
    except OSError:
        font = ImageFont.load_default(28)
    d.text(((x0 + x1) / 2, y - 8), label, fill=(255, 255, 255), font=font, anchor="ms")
    pil.save(path)
    return path


def dragmode(page):
    return page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout.dragmode")


def test_a_scale_bar_read_automatically_is_confirmed_or_edited(ui, server, tmp_path):
    """The page says what it read, marks sizes unconfirmed, and Confirm or Edit settles it (issue 18)."""
    page = ui.page
    # a fresh page, as a new user opens it: in this module's long session the first click after the
    # drawing below was sometimes lost (it passed every time from a fresh page and after the
    # line-drawing test; not traced further)
    page.goto(server.url + "/")
    page.wait_for_selector("#demo-button")
    upload(page, scale_bar_micrograph(tmp_path / "bar_500nm.png"))
    page.wait_for_selector("#calib-check:not([hidden])", timeout=30_000)
    text = page.text_content("#calib-check-text")
    assert text.startswith("Scale bar read automatically: 500 nm over ") and " px" in text, text
    assert abs(float(page.input_value("#nm-per-pixel")) - 500 / 130) < 0.05 * 500 / 130
    assert "read automatically" in page.text_content("#calibration-record")
    assert "not confirmed" in page.text_content("#summary-note")
    assert "read automatically" in page.text_content("#histogram-graph")
    shot(page, "10-scale-bar-to-confirm.png")
    page.click("#calib-confirm")
    page.wait_for_selector("#calib-check", state="hidden")
    page.wait_for_function("() => !document.querySelector('#summary-note')")
    assert "confirmed by you" in page.text_content("#calibration-record")

    # Edit: draw along the bar, with the value read filled in; the page then pans (and clicks exclude) again
    upload(page, scale_bar_micrograph(tmp_path / "bar_again.png", seed=4))
    page.wait_for_selector("#calib-check:not([hidden])", timeout=30_000)  # a new image: its own read, unconfirmed
    page.click("#calib-edit")
    page.wait_for_function("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout.dragmode"
                           " === 'drawline'")
    assert page.input_value("#bar-value") == "500"
    page.locator("#image-graph").scroll_into_view_if_needed()
    g = image_geometry(page)
    k = g["width"] / g["image_width"]
    drag(page, g["left"] + 470 * k, g["top"] + 434 * k, g["left"] + 670 * k, g["top"] + 434 * k)  # 200 px
    page.wait_for_function("() => document.querySelector('#calib-line-length').textContent.startsWith('Line:')")
    page.wait_for_function("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout.dragmode"
                           " === 'pan'")
    settle(page)
    assert abs(float(page.input_value("#nm-per-pixel")) - 2.5) < 0.1
    assert "set by you" in page.text_content("#calibration-record")
    assert page.is_hidden("#calib-check")
    before = count(page)
    page.evaluate("() => document.querySelector('#image-graph').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    p = find_particle(page)
    page.mouse.click(p["x"], p["y"])  # back to click-to-exclude
    assert wait_count_change(page, before) == before - 1


def test_a_calibration_belongs_to_its_image_unless_used_for_all(ui, emps, tmp_path):
    page = ui.page
    # copies: the browser does not fire a second upload of the file it has just sent
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    shutil.copy(emps / UPLOAD_NAME, first)
    shutil.copy(emps / UPLOAD_NAME, second)
    page.fill("#nm-per-pixel", "2.5")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(nm)')")
    upload(page, first)
    settle(page)
    if not page.input_value("#nm-per-pixel"):  # the image's own calibration, or none: never the last one's
        assert "(px" in page.text_content("#histogram-graph")
    assert page.input_value("#nm-per-pixel") != "2.5"
    page.check("#calib-all input[type=checkbox]")
    page.fill("#nm-per-pixel", "2.5")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(nm)')")
    upload(page, second)
    assert page.input_value("#nm-per-pixel") == "2.5"  # used for all images, as ImageJ's global scale
    page.uncheck("#calib-all input[type=checkbox]")


def test_sizes_switch_to_micrometres_and_the_calibration_takes_other_units(ui):
    page = ui.page
    page.fill("#nm-per-pixel", "100")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(µm)')")
    settle(page)
    assert " µm" in page.text_content("#summary") and "µm" in page.text_content("#particle-grid .ag-header")
    assert "nm" not in page.text_content("#particle-grid .ag-header")
    shot(page, "11-micrometres.png")
    page.click("#size-unit")
    page.get_by_role("dialog").get_by_role("option", name="nm", exact=True).click()
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(nm)')")
    settle(page)
    assert "nm" in page.text_content("#particle-grid .ag-header")
    page.click("#calib-unit")
    page.get_by_role("dialog").get_by_role("option", name="px/µm").click()
    page.wait_for_function("() => document.querySelector('#nm-per-pixel').value === '10'")  # 100 nm/px
    page.fill("#nm-per-pixel", "400")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#calibration-record').textContent.includes('2.5 nm/px')")
    page.click("#calib-unit")
    page.get_by_role("dialog").get_by_role("option", name="nm/px").click()
    page.wait_for_function("() => document.querySelector('#nm-per-pixel').value === '2.5'")
    page.click("#size-unit")
    page.get_by_role("dialog").get_by_role("option", name="Auto").click()
    page.fill("#nm-per-pixel", "")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#histogram-graph').textContent.includes('(px')")
    settle(page)


# --- manual correction (issue 15) ---------------------------------------------------------------

def downloaded_labels(page, button="#download-labels-button"):
    """The label image the page's download button gives, as an int array."""
    from PIL import Image

    with page.expect_download() as d:
        page.click(button)
    path = OUT / d.value.suggested_filename
    d.value.save_as(str(path))
    im = Image.open(path)
    assert im.mode.startswith("I;16") or im.mode == "I", im.mode
    return np.asarray(im).astype(np.int64), d.value.suggested_filename


def to_screen(page, x, y):
    """The screen position of image pixel (x, y) on the image view."""
    g = image_geometry(page)
    k = g["width"] / g["image_width"]
    return g["left"] + (x + 0.5) * k, g["top"] + (y + 0.5) * k


def choose_tool(page, key, tool):
    page.mouse.move(2, 2)
    page.keyboard.press(key)  # the shortcut the page lists
    page.wait_for_function(f"() => document.querySelector('#edit-tool input[value=\"{tool}\"]').checked")
    settle(page)


def edited(page, before, action):
    """Do an edit; returns (new count, seconds from the end of the gesture until the count changed)."""
    action()
    t0 = time.perf_counter()
    page.wait_for_function(f"() => document.querySelector('#summary-count').textContent !== '{before}'",
                           timeout=120_000)
    seconds = time.perf_counter() - t0
    settle(page)
    return count(page), seconds


def test_particles_are_corrected_by_mouse_and_keyboard(ui, server, emps, tmp_path):
    """Draw, erase, split, merge, undo and redo on a shared image; after each the count and the
    downloaded label image are exactly what the edit means."""
    from scipy import ndimage as ndi

    page = ui.page
    page.goto(server.url + "/")
    page.wait_for_selector("#demo-button")
    path = tmp_path / "to_correct.png"
    shutil.copy(emps / UPLOAD_NAME, path)
    upload(page, path)
    page.evaluate("() => document.querySelector('#image-graph').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    n0 = count(page)
    l0, name = downloaded_labels(page)
    assert name == "to_correct_labels.png" and len(np.unique(l0)) - 1 == n0
    # the baseline of the timings below: an exclusion click and its undoing, as before issue 15
    p = find_particle(page)
    timings = {}
    assert edited(page, n0, lambda: page.mouse.click(p["x"], p["y"]))[0] == n0 - 1
    n, timings["exclude click"] = edited(page, n0 - 1, lambda: page.mouse.click(p["x"], p["y"]))
    assert n == n0

    # add: outline a patch of background
    choose_tool(page, "a", "add")
    assert page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout.dragmode") \
        == "drawclosedpath"
    side = 24
    free = ndi.minimum_filter((l0 == 0).astype(np.uint8), size=side + 8, mode="constant") > 0
    ys, xs = np.nonzero(free)
    pick = len(ys) // 2
    cx, cy = int(xs[pick]), int(ys[pick])
    corners = [(cx - side // 2, cy - side // 2), (cx + side // 2, cy - side // 2), (cx + side // 2, cy + side // 2),
               (cx - side // 2, cy + side // 2), (cx - side // 2, cy - side // 2)]

    def outline():
        page.mouse.move(*to_screen(page, *corners[0]))
        page.mouse.down()
        for c in corners[1:]:
            page.mouse.move(*to_screen(page, *c), steps=6)
        page.mouse.up()

    n1, timings["add"] = edited(page, n0, outline)
    settle(page)
    assert n1 == n0 + 1
    l1, _ = downloaded_labels(page)
    new = int(l0.max()) + 1
    assert set(np.unique(l1)) == set(np.unique(l0)) | {new}
    assert np.array_equal(l1[l1 != new], l0[l1 != new])  # nothing else changed
    inner = np.zeros_like(l0, bool)
    inner[cy - side // 2 + 3:cy + side // 2 - 2, cx - side // 2 + 3:cx + side // 2 - 2] = True
    outer = np.zeros_like(l0, bool)
    outer[cy - side // 2 - 3:cy + side // 2 + 4, cx - side // 2 - 3:cx + side // 2 + 4] = True
    assert (l1[inner] == new).all() and not ((l1 == new) & ~outer).any()
    shapes = page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot').layout.shapes || []")
    assert not [sh for sh in shapes if sh.get("type") == "path"]  # the drawn outline became the particle
    assert "1 edit" in page.text_content("#edit-status")
    shot(page, "20-edit-added.png", full_page=False)

    # erase: click a particle
    choose_tool(page, "e", "erase")
    p = find_particle(page, exclude=[new])
    n2, timings["erase"] = edited(page, n1, lambda: page.mouse.click(p["x"], p["y"]))
    settle(page)
    assert n2 == n1 - 1
    l2, _ = downloaded_labels(page)
    erased = p["label"]
    assert set(np.unique(l2)) == set(np.unique(l1)) - {erased}
    assert (l2[l1 == erased] == 0).all() and np.array_equal(l2[l1 != erased], l1[l1 != erased])

    # split: drag a line across the roundest large particle, through its middle
    choose_tool(page, "s", "split")
    objects = ndi.find_objects(l2)
    best = None
    for lab, sl in enumerate(objects, start=1):
        if sl is None or lab == new:
            continue
        mask = l2[sl] == lab
        h, w = mask.shape
        if mask.sum() < 300 or sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == l2.shape[0] \
                or sl[1].stop == l2.shape[1]:
            continue
        fill = mask.sum() / (h * w)  # near pi/4 for a disc
        if best is None or abs(fill - math.pi / 4) + abs(h - w) / max(h, w) < best[0]:
            best = (abs(fill - math.pi / 4) + abs(h - w) / max(h, w), lab, sl)
    _, target, sl = best
    ys, xs = np.nonzero(l2 == target)
    mid = int(round(xs.mean()))
    top, bottom = int(ys.min()) - 4, int(ys.max()) + 4
    n3, timings["split"] = edited(page, n2, lambda: drag(page, *to_screen(page, mid, top), *to_screen(page, mid, bottom)))
    settle(page)
    assert n3 == n2 + 1
    l3, _ = downloaded_labels(page)
    piece = new + 1
    assert set(np.unique(l3)) == set(np.unique(l2)) | {piece}
    assert set(np.unique(l3[l2 == target])) == {target, piece} and np.array_equal(l3 > 0, l2 > 0)
    assert np.array_equal(l3[l2 != target], l2[l2 != target])
    sides = [set(np.unique(l3[:, :mid - 1][l2[:, :mid - 1] == target])),
             set(np.unique(l3[:, mid + 2:][l2[:, mid + 2:] == target]))]
    assert len(sides[0]) == len(sides[1]) == 1 and sides[0] != sides[1]  # cut along the line

    # merge: select two particles with clicks, then Enter
    choose_tool(page, "m", "merge")
    first = find_particle(page, exclude=[new, target, piece])
    page.mouse.click(first["x"], first["y"])
    page.wait_for_function("(t) => document.querySelector('#edit-status').textContent.startsWith(t)",
                           arg=f"Selected for merging: {first['label']}.", timeout=20_000)
    second = find_particle(page, exclude=[new, target, piece, first["label"]])
    page.mouse.click(second["x"], second["y"])
    page.wait_for_function("(t) => document.querySelector('#edit-status').textContent.startsWith(t)",
                           arg=f"Selected for merging: {first['label']}, {second['label']}.", timeout=20_000)
    page.wait_for_selector("#edit-merge:not([disabled])")
    page.mouse.move(2, 2)
    n4, timings["merge"] = edited(page, n3, lambda: page.keyboard.press("Enter"))
    settle(page)
    assert n4 == n3 - 1
    l4, _ = downloaded_labels(page)
    a, b = sorted((first["label"], second["label"]))
    assert set(np.unique(l4)) == set(np.unique(l3)) - {b}
    assert (l4[(l3 == a) | (l3 == b)] == a).all() and np.array_equal(l4[l3 != b], l3[l3 != b])

    # the table marks each particle's origin
    with page.expect_download() as d:
        page.click("#download-particles-button")
    rows = list(csv.DictReader(io.StringIO(Path(d.value.path()).read_text())))
    origin = {int(r["label"]): r["origin"] for r in rows}
    assert origin[new] == "added" and origin[target] == origin[piece] == "split" and origin[a] == "merged"
    assert len(rows) == n4 and sum(v == "model" for v in origin.values()) == n4 - 4

    # undo (Ctrl+Z) and redo (the button): exactly the label images before and after the merge
    n5, timings["undo"] = edited(page, n4, lambda: page.keyboard.press("Control+z"))
    settle(page)
    assert n5 == n3 and np.array_equal(downloaded_labels(page)[0], l3)
    n6, timings["redo"] = edited(page, n5, lambda: page.click("#edit-redo"))
    settle(page)
    assert n6 == n4 and np.array_equal(downloaded_labels(page)[0], l4)
    assert "4 edits" in page.text_content("#edit-status")
    shot(page, "21-edits-done.png", full_page=False)

    # a slider move keeps the drawn particle (edits are replayed on the new labelling)
    old = (histogram_meta(page) or {}).get("key")
    set_slider(page, "min-distance-fraction", control_settings(page)["min_distance_fraction"] * 100 + 3)
    wait_key_change(page, old)
    moved, _ = downloaded_labels(page)
    assert len(np.unique(moved[inner])) == 1 and moved[inner][0] > 0
    assert "4 edits" in page.text_content("#edit-status")
    print("\nedit to new count in the browser (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    ui.training_pair_source = path


def test_training_pairs_written_by_the_page_train_a_model(ui, emps, tmp_path):
    """Two corrected images downloaded as training pairs, unzipped into one folder: saemi train --extra takes it."""
    import subprocess
    import sys
    import zipfile

    page = ui.page
    extra = tmp_path / "corrected"
    for round_ in range(2):
        if round_:
            path = tmp_path / "second.png"
            shutil.copy(emps / TIMING_SOURCE, path)
            upload(page, path)
            page.evaluate("() => document.querySelector('#image-graph').scrollIntoView({block: 'start'})")
            choose_tool(page, "e", "erase")
            p = find_particle(page)
            edited(page, count(page), lambda: page.mouse.click(p["x"], p["y"]))
        with page.expect_download() as d:
            page.click("#download-pair-button")
        assert d.value.suggested_filename.endswith("_training_pair.zip")
        with zipfile.ZipFile(d.value.path()) as z:
            z.extractall(extra)
    assert len(list((extra / "images").glob("*.png"))) == len(list((extra / "segmaps").glob("*.png"))) == 2
    out = tmp_path / "weights"
    r = subprocess.run([str(Path(sys.executable).parent / "saemi"), "train", "--data", str(REPO / "tests/fixtures/emps"),
                        "--extra", str(extra), "--epochs", "1", "--size", "64", "--batch-size", "2",
                        "--val-every", "1", "--val-fraction", "0.34", "--device", "cpu", "--out", str(out),
                        "--checkpoint-dir", str(tmp_path / "ck")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((out / "model_card.json").read_text())["training"]
    assert card["extra"][0]["images"] == 2
    from saemi.model import load_segmenter

    load_segmenter(out, device="cpu")


def test_touch_screen_pans_and_zooms(browser, server):
    """On a touch device the image view zooms with the toolbar's +/- and pans with a finger."""
    ctx = browser.new_context(viewport={"width": 900, "height": 1000}, has_touch=True, is_mobile=True)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(server.url + "/")
        page.click("#demo-button")
        page.wait_for_function("() => { const gd = document.querySelector('#histogram-graph .js-plotly-plot');"
                               " return gd && gd.layout && gd.layout.meta && gd.layout.meta.key; }", timeout=240_000)
        settle(page)
        page.locator("#image-graph").scroll_into_view_if_needed()

        def x_range():
            return page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot')._fullLayout"
                                 ".xaxis.range.slice()")

        full = x_range()
        box = page.locator("#image-graph .nsewdrag").first.bounding_box()
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # shows the toolbar
        page.locator('#image-graph .modebar-btn[data-title="Zoom in"]').tap()
        page.wait_for_function("(w) => { const r = document.querySelector('#image-graph .js-plotly-plot')"
                               "._fullLayout.xaxis.range; return r[1] - r[0] < w * 0.9; }", arg=full[1] - full[0])
        zoomed = x_range()
        # a one-finger drag, as the browser sends it: touchstart, touchmove, touchend on the plot
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.evaluate("""([cx, cy]) => {
            const el = document.elementFromPoint(cx, cy);
            const touch = (x, y) => new Touch({identifier: 1, target: el, clientX: x, clientY: y, pageX: x, pageY: y});
            const fire = (type, x, y) => el.dispatchEvent(new TouchEvent(type, {bubbles: true, cancelable: true,
                touches: type === 'touchend' ? [] : [touch(x, y)], changedTouches: [touch(x, y)]}));
            fire('touchstart', cx, cy);
            for (let k = 1; k <= 10; k++) fire('touchmove', cx + 12 * k, cy);
            fire('touchend', cx + 120, cy);
        }""", [cx, cy])
        page.wait_for_function("(r0) => document.querySelector('#image-graph .js-plotly-plot')._fullLayout"
                               ".xaxis.range[0] < r0 - 1", arg=zoomed[0])
        panned = x_range()
        assert abs((panned[1] - panned[0]) - (zoomed[1] - zoomed[0])) < 1e-6 * (full[1] - full[0]) + 1e-6
    finally:
        ctx.close()


def test_no_javascript_errors(ui):
    bad = [e for e in ui.errors if "favicon" not in e]
    assert not bad, "\n".join(bad[:10])


# --- the GPU-server deployment: front end and backend in two processes --------------------------

def test_remote_backend_mode(browser, emps, tmp_path):
    """``SAEMI_BACKEND_URL``: the page posts to another server; no model in the front end; a down
    backend gives a readable message."""
    if not weights_available():
        pytest.fail("model weights missing")
    bport, fport = free_port(), free_port()
    backend = Server([gunicorn_exe(), "-b", f"127.0.0.1:{bport}", "--workers", "1", "--threads", "2",
                      "--timeout", "300", "saemi.api:create_app()"], port=bport,
                     log_path=OUT / "browser-remote-backend.log",
                     env={"SAEMI_DEVICE": "cpu", "SAEMI_CACHE_DIR": str(tmp_path / "cache")})
    front = Server(gunicorn_command(fport), port=fport, log_path=OUT / "browser-remote-front.log",
                   env={"SAEMI_BACKEND_URL": backend.url, "SAEMI_BACKEND_TIMEOUT": "60"})
    try:
        backend.wait("/api/v1/health", timeout=240)
        front.wait("/", timeout=120)
        r = requests.get(front.url + "/api/v1/health", timeout=10)  # no backend here: Dash's page, not JSON
        assert not r.headers.get("Content-Type", "").startswith("application/json")
        for pid in front.worker_pids():
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "libtorch" not in maps, "the front end loaded torch"
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(front.url + "/")
        page.wait_for_selector("#demo-button")
        assert "backend at" in page.text_content("footer")
        upload(page, emps / UPLOAD_NAME)
        shown = count(page)
        assert shown > 5 and shown == api_count(backend, emps / UPLOAD_NAME, control_settings(page))
        backend.stop()
        page.set_input_files("#upload input[type=file]", str(emps / "aa309f6cec.png"))
        page.wait_for_function("() => document.querySelector('#upload-error').textContent.length > 0")
        msg = page.text_content("#upload-error")
        assert "not reachable" in msg and backend.url in msg
        assert count(page) == shown
        shot(page, "10-remote-backend-down.png", full_page=False)
        ctx.close()
    finally:
        front.stop()
        backend.stop()


def test_page_uploads_again_when_the_server_dropped_the_image(browser, emps, tmp_path):
    """The cache is bounded: once it has dropped the image, a slider move re-uploads it unasked."""
    if not weights_available():
        pytest.fail("model weights missing")
    cache = tmp_path / "cache"
    port = free_port()
    srv = Server(gunicorn_command(port), port=port, log_path=OUT / "browser-expired-gunicorn.log",
                 env={"SAEMI_DEVICE": "cpu", "SAEMI_CACHE_DIR": str(cache)})
    try:
        srv.wait("/api/v1/health", timeout=240)
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.set_default_timeout(120_000)
        page.goto(srv.url + "/")
        page.wait_for_selector("#demo-button")
        upload(page, emps / UPLOAD_NAME)
        before = count(page)
        records = list(cache.glob("*.rec"))
        assert records
        for rec in records:  # what eviction or the TTL does
            rec.unlink()
        page.click("#exclude-edge input[type=checkbox]")
        # the page says it is sending the image again, then shows the new analysis
        page.wait_for_function("() => document.querySelector('#analysis-status').textContent"
                               ".includes('uploading it again')")
        page.wait_for_function("() => /particles? found/.test(document.querySelector('#analysis-status').textContent)")
        settle(page)
        assert page.text_content("#analysis-error") == ""
        assert list(cache.glob("seg-*.rec")), "the image is back in the cache"
        shown = count(page)
        assert shown == api_count(srv, emps / UPLOAD_NAME, control_settings(page)) and shown <= before
        assert not errors, errors
        ctx.close()
    finally:
        srv.stop()
