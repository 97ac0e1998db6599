"""A sample, not one image: the issue's "Done when" flow in headless Chromium against gunicorn.

Five shared EMPS micrographs are uploaded at once; the page shows the progress, the user steps
through them, excludes a particle in one, checks the combined count against the combined CSV,
reads the log-normal fit, exports the histogram as SVG, saves a session, reloads, and restores it.
Then the fixes of "Where it stands" at 1366x768. The server, browser and helpers are those of
tests/test_browser.py (same command, real weights, Debian chromium).
"""

import csv
import io
import json
import math
import re
import zipfile

import numpy as np
import pytest

from test_browser import OUT, browser, emps, find_particle, server, set_slider, settle  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

#: Five EMPS images of about 512 x 512 px with 100-250 particles each (small: the flow is about the page,
#: not the network's speed).
SAMPLE = ["e3a800b533.png", "245e1a4826.png", "b3e7900e39.png", "f485e2051b.png", "80719af02f.png"]
BIG = "70f9f13af4.png"  # 1280 x 960 px, many particles: what tests/test_browser.py uploads


class Flow:
    """What the ordered tests hand on to each other."""


@pytest.fixture(scope="module")
def flow(server, browser):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page = ctx.new_page()
    f = Flow()
    f.page, f.ctx, f.errors = page, ctx, []
    page.on("pageerror", lambda e: f.errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: f.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.set_default_timeout(120_000)
    page.goto(server.url + "/")
    page.wait_for_selector("#demo-button")
    yield f
    ctx.close()


def text(page, sel):
    return (page.text_content(sel) or "").strip()


def number(page, sel):
    return int(text(page, sel).replace(",", ""))


def download(page, selector, target_dir=OUT):
    with page.expect_download() as d:
        page.click(selector)
    dl = d.value
    path = target_dir / dl.suggested_filename
    dl.save_as(str(path))
    return dl.suggested_filename, path


def per_image_counted(page):
    """The 'Counted' column of the per-image table, as the page shows it."""
    return [int(c) for c in page.eval_on_selector_all("#per-image-table tbody tr td:nth-child(4)",
                                                      "els => els.map(e => e.textContent)")]


def wait_sample_count(page, predicate_js, timeout=120_000):
    page.wait_for_function(f"() => {{ const el = document.querySelector('#sample-count'); if (!el) return false;"
                           f" const n = Number(el.textContent.replace(/,/g, '')); return {predicate_js}; }}",
                           timeout=timeout)
    settle(page)


def test_upload_five_images_as_a_sample_with_progress(flow, emps):  # noqa: F811
    page = flow.page
    seen = []
    page.expose_function("recordProgress", lambda t: seen.append(t))
    page.evaluate("""() => { const el = document.querySelector('#sample-progress-text');
        new MutationObserver(() => window.recordProgress(el.textContent)).observe(el, {childList: true,
        characterData: true, subtree: true}); }""")
    page.set_input_files("#upload input[type=file]", [str(emps / n) for n in SAMPLE])
    page.wait_for_function("() => /5 of 5 images analysed/.test(document.querySelector('#sample-progress-text')"
                           ".textContent)", timeout=600_000)
    wait_sample_count(page, "n > 0")
    # the page said how far it was, one image at a time
    steps = [t for t in seen if t.startswith("Analysing")]
    assert [int(re.match(r"Analysing (\d) of 5", t).group(1)) for t in steps] == [1, 2, 3, 4, 5], seen
    assert page.get_attribute("#sample-progress-bar", "value") == "5"
    assert text(page, "#sample-position") == "Image 1 of 5"
    assert SAMPLE[0] in text(page, "#upload-status")
    assert number(page, "#sample-images") == 5
    counted = per_image_counted(page)
    assert len(counted) == 5 and all(c > 0 for c in counted)
    assert number(page, "#sample-count") == sum(counted)
    # image 1's own count is the one its row shows
    assert number(page, "#summary-count") == counted[0]
    flow.counted = counted
    page.screenshot(path=str(OUT / "sample-1366.png"), full_page=False)


def test_step_through_the_images_each_with_its_own_overlay(flow):
    page = flow.page
    keys = set()
    for i in range(1, 3):
        page.click("#sample-next")
        page.wait_for_function(f"() => document.querySelector('#sample-position').textContent === "
                               f"'Image {i + 1} of 5'")
        page.wait_for_function(f"() => document.querySelector('#upload-status').textContent.includes('{SAMPLE[i]}')")
        settle(page)
        assert number(page, "#summary-count") == flow.counted[i]
        keys.add(page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot').layout.meta.key"))
    assert len(keys) == 2 and all(SAMPLE[0] not in k for k in keys)
    page.click("#sample-prev")  # back to image 2: the one a particle is excluded in
    page.wait_for_function("() => document.querySelector('#sample-position').textContent === 'Image 2 of 5'")
    settle(page)
    assert number(page, "#summary-count") == flow.counted[1]


def test_exclude_a_particle_in_one_image_and_the_counts_agree(flow):
    page = flow.page
    before_total = number(page, "#sample-count")
    p = find_particle(page)
    page.mouse.click(p["x"], p["y"])
    wait_sample_count(page, f"n === {before_total - 1}")
    assert number(page, "#summary-count") == flow.counted[1] - 1
    # one count everywhere: the header, the summary and the per-image table
    assert text(page, "#analysis-status").startswith(f"{flow.counted[1] - 1} particles counted")
    assert per_image_counted(page)[1] == flow.counted[1] - 1
    flow.excluded = p["label"]
    name, path = download(page, "#sample-particles-button")
    assert name == "sample_of_5_particles.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == number(page, "#sample-count") == before_total - 1
    assert {r["image"] for r in rows} == set(SAMPLE)
    assert str(p["label"]) not in {r["label"] for r in rows if r["image"] == SAMPLE[1]}
    flow.rows = rows
    name, path = download(page, "#sample-summary-button")
    summary = list(csv.DictReader(io.StringIO(path.read_text())))
    assert name == "sample_of_5_summary.csv" and [r["status"] for r in summary] == ["image"] * 5 + ["sample"]
    assert int(summary[-1]["count"]) == len(rows)
    assert [int(r["counted"]) for r in summary[:5]] == per_image_counted(page)


def test_the_log_normal_fit_is_drawn_with_its_parameters(flow):
    page = flow.page
    fit = text(page, "#fit-lognormal")
    assert "median" in fit and "geometric SD" in fit and "KS distance" in fit
    gsd = float(text(page, "#fit-gsd"))
    # the EMPS PNGs carry no calibration: the sample is in px
    unit_col = next((c for c in flow.rows[0] if c.startswith("equivalent_diameter_") and not c.endswith("_px")),
                    "equivalent_diameter_px")
    d = np.array([float(r[unit_col]) for r in flow.rows])
    assert gsd == pytest.approx(math.exp(np.log(d).std()), abs=0.0015)
    median = float(re.search(r"median ([\d.,]+)", fit).group(1).replace(",", ""))
    assert median == pytest.approx(math.exp(np.log(d).mean()), rel=0.002)
    names = page.evaluate("() => document.querySelector('#sample-graph .js-plotly-plot').data.map(t => t.name)")
    assert any(n.startswith("log-normal: median") for n in names)
    # log axis, normal fit and cumulative curve on; volume weighting moves D50 up
    d50_number = text(page, "#sample-summary")
    page.click("#sample-axis input[value=log]")
    page.click("#sample-show input[value=normal]")
    page.click("#sample-show input[value=cumulative]")
    page.wait_for_function("() => document.querySelector('#sample-graph .js-plotly-plot').layout.xaxis.type === 'log'"
                           " && document.querySelectorAll('#fit-normal').length === 1")
    settle(page)
    names = page.evaluate("() => document.querySelector('#sample-graph .js-plotly-plot').data.map(t => t.name)")
    assert any(n.startswith("normal: mean") for n in names) and "cumulative (%)" in names
    page.click("#sample-weighting input[value=volume]")
    page.wait_for_function("() => document.querySelector('#sample-graph .js-plotly-plot').layout.yaxis.title.text"
                           " === 'Volume (%)'")
    settle(page)
    assert text(page, "#sample-summary") != d50_number and "volume-weighted" in text(page, "#sample-summary")
    page.click("#sample-weighting input[value=number]")
    page.wait_for_function("() => document.querySelector('#sample-graph .js-plotly-plot').layout.yaxis.title.text"
                           " === 'Count'")
    settle(page)


LAYER_JS = "() => document.querySelector('#image-graph .js-plotly-plot').data[1].source.slice(-200)"


def test_filters_drive_statistics_overlay_and_csv(flow):
    page = flow.page
    total = number(page, "#sample-count")
    layer = page.evaluate(LAYER_JS)
    page.fill("#filter-circularity-min", "0.85")
    page.press("#filter-circularity-min", "Enter")
    wait_sample_count(page, f"n < {total}")
    # the overlay greys out what the filters leave out: the particle layer is drawn again
    page.wait_for_function(f"() => ({LAYER_JS})() !== {json.dumps(layer)}")
    kept = number(page, "#sample-count")
    assert kept == sum(per_image_counted(page))
    # the shown image follows: its count and header agree with its row
    assert number(page, "#summary-count") == per_image_counted(page)[1]
    assert "filtered out" in text(page, "#analysis-status")
    name, path = download(page, "#sample-particles-button")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == kept and all(float(r["circularity"]) >= 0.85 for r in rows)
    page.fill("#filter-circularity-min", "")
    page.press("#filter-circularity-min", "Enter")
    wait_sample_count(page, f"n === {total}")


def test_export_the_histogram_as_svg_and_the_overlay_as_png(flow, emps):  # noqa: F811
    page = flow.page
    name, path = download(page, "#export-histogram-svg")
    assert name == "sample_of_5_histogram.svg"
    svg = path.read_text()
    assert svg.lstrip().startswith("<svg") and 'width="1600"' in svg
    name, path = download(page, "#export-overlay-png")
    assert name == f"{SAMPLE[1][:-4]}_overlay.png"
    from PIL import Image

    assert Image.open(path).size == Image.open(emps / SAMPLE[1]).size  # the image's own pixel size
    name, path = download(page, "#export-overlay-svg")
    svg = path.read_text()
    assert name == f"{SAMPLE[1][:-4]}_overlay.svg" and svg.lstrip().startswith("<svg") and "<image" in svg


def test_save_a_session_reload_and_restore(flow, server):  # noqa: F811
    page = flow.page
    total = number(page, "#sample-count")
    name, path = download(page, "#session-save")
    assert name == "sample_of_5_session.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == "saemi-session" and [im["filename"] for im in doc["images"]] == SAMPLE
    assert doc["images"][1]["removed"] == [flow.excluded] and doc["current"] == 1
    # a reload keeps the work (browser storage)
    page.reload()
    page.wait_for_function("() => document.querySelector('#sample-position') && "
                           "document.querySelector('#sample-position').textContent === 'Image 2 of 5'")
    wait_sample_count(page, f"n === {total}")
    assert number(page, "#summary-count") == flow.counted[1] - 1
    # a new visit (not a reload) offers the sample instead of racing a new upload with it
    page.goto(server.url + "/")
    page.wait_for_selector("#resume-box:not([hidden])")
    assert "Your last sample (5 images, sample_of_5)" in text(page, "#resume-text")
    settle(page)
    assert page.evaluate("() => document.querySelector('#image-graph .js-plotly-plot').data.length") == 0
    page.click("#resume-button")
    page.wait_for_function("() => document.querySelector('#sample-position').textContent === 'Image 2 of 5'")
    wait_sample_count(page, f"n === {total}")
    assert page.is_hidden("#resume-box")
    # a fresh browser: nothing there, until the session file is restored
    page.evaluate("() => window.localStorage.clear()")
    page.reload()
    page.wait_for_selector("#demo-button")
    settle(page)
    assert page.query_selector("#sample-count") is None
    page.set_input_files("#session-upload input[type=file]", str(path))
    page.wait_for_function("() => document.querySelector('#session-status').textContent.startsWith('Restored')")
    wait_sample_count(page, f"n === {total}")
    assert text(page, "#sample-position") == "Image 2 of 5"
    assert number(page, "#summary-count") == flow.counted[1] - 1
    assert per_image_counted(page)[1] == flow.counted[1] - 1


def slider_value(page, cid):
    return float(page.get_attribute(f"#{cid} [role=slider]", "aria-valuenow"))


def go_to(page, i):
    """Step to image ``i`` with Previous / Next, one image at a time, as a user would."""
    for _ in range(5):
        cur = int(re.match(r"Image (\d) of 5", text(page, "#sample-position")).group(1)) - 1
        if cur == i:
            break
        page.click("#sample-next" if i > cur else "#sample-prev")
        page.wait_for_function(f"() => document.querySelector('#sample-position').textContent === "
                               f"'Image {cur + (2 if i > cur else 0)} of 5'")
        page.wait_for_function(f"() => document.querySelector('#upload-status').textContent.includes("
                               f"'{SAMPLE[cur + (1 if i > cur else -1)]}')")
        settle(page)
    assert text(page, "#sample-position") == f"Image {i + 1} of 5"


def test_settings_for_this_image_only_or_for_all(flow):
    """The probability threshold (it changes every image's count) for one image, then for all."""
    page = flow.page
    go_to(page, 2)
    rows = per_image_counted(page)
    shared = slider_value(page, "threshold")
    assert page.is_checked("#settings-scope input[value=all]")
    page.click("#settings-scope input[value=image]")
    set_slider(page, "threshold", shared + 0.3)
    mine_value = slider_value(page, "threshold")
    wait_sample_count(page, f"n !== {sum(rows)}")
    after = per_image_counted(page)
    assert after[2] == number(page, "#summary-count") != rows[2]
    assert after[:2] + after[3:] == rows[:2] + rows[3:]  # the others are as they were
    go_to(page, 3)  # the others keep the sample's settings
    assert slider_value(page, "threshold") == shared and page.is_checked("#settings-scope input[value=all]")
    assert number(page, "#summary-count") == rows[3]
    go_to(page, 2)
    assert slider_value(page, "threshold") == mine_value and page.is_checked("#settings-scope input[value=image]")
    # "all images": the next move applies to every image
    page.click("#settings-scope input[value=all]")
    set_slider(page, "threshold", shared + 0.1)
    everyone = slider_value(page, "threshold")
    wait_sample_count(page, f"n !== {sum(after)}")
    go_to(page, 4)
    assert slider_value(page, "threshold") == everyone and number(page, "#summary-count") == per_image_counted(page)[4]


def test_each_image_keeps_its_calibration_unless_used_for_all(flow):
    """Some of the five carry a scale bar the page read, others none: each keeps its own."""
    page = flow.page
    go_to(page, 3)
    own = page.input_value("#nm-per-pixel")
    go_to(page, 4)
    page.fill("#nm-per-pixel", "2.5")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => document.querySelector('#calibration-record').textContent.includes('2.5 nm/px')")
    settle(page)
    go_to(page, 3)
    assert page.input_value("#nm-per-pixel") == own
    go_to(page, 4)
    assert page.input_value("#nm-per-pixel") == "2.5"
    page.click("#calib-all input[type=checkbox]")
    page.fill("#nm-per-pixel", "2.4")
    page.press("#nm-per-pixel", "Enter")
    page.wait_for_function("() => !document.querySelector('#sample-summary').textContent.includes('calibration')"
                           " && document.querySelector('#sample-summary').textContent.includes(' nm')")
    settle(page)
    assert text(page, "#filter-size-unit") == "nm"
    go_to(page, 0)
    assert page.input_value("#nm-per-pixel") == "2.4"
    page.click("#calib-all input[type=checkbox]")


def test_a_zip_with_junk_and_a_traversal_name_is_read_safely(flow, emps, tmp_path):  # noqa: F811
    page = flow.page
    archive = tmp_path / "run7.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(emps / SAMPLE[0], f"run7/{SAMPLE[0]}")
        z.write(emps / SAMPLE[2], f"../../{SAMPLE[2]}")
        z.writestr("run7/notes.txt", "not an image")
    page.set_input_files("#upload input[type=file]", str(archive))
    page.wait_for_function("() => /1 of 1 images analysed/.test(document.querySelector('#sample-progress-text')"
                           ".textContent)", timeout=300_000)
    settle(page)
    skipped = text(page, "#sample-skipped")
    assert "notes.txt (not an image" in skipped and f"../../{SAMPLE[2]} (unsafe name" in skipped
    assert number(page, "#sample-images") == 1
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is no archive")
    page.set_input_files("#upload input[type=file]", [str(bad), str(emps / SAMPLE[3])])
    page.wait_for_function("() => /1 of 1 images analysed/.test(document.querySelector('#sample-progress-text')"
                           ".textContent) && document.querySelector('#sample-skipped').textContent.includes('broken')",
                           timeout=300_000)
    assert "broken.zip (the zip archive cannot be read" in text(page, "#sample-skipped")


# --- the fixes of "Where it stands", at 1366x768 ---------------------------------------------

def in_view(page, selector):
    """True when ``selector`` is on screen: at least its middle row of pixels, inside the window."""
    return page.evaluate("""(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
        const mid = (r.top + r.bottom) / 2;
        return mid > 0 && mid < window.innerHeight && r.right > 0 && r.left < window.innerWidth; }""", selector)


def rect(page, selector):
    return page.evaluate("(sel) => JSON.stringify(document.querySelector(sel).getBoundingClientRect())", selector)


def test_the_image_stays_in_view_while_the_lowest_controls_are_used(flow):
    page = flow.page
    page.evaluate("() => window.scrollTo(0, 0)")
    for sel in ("#exclude-edge", "#nm-per-pixel", "#opacity"):
        page.locator(sel).scroll_into_view_if_needed()
        assert in_view(page, sel) and in_view(page, "#image-graph"), (sel, rect(page, sel), rect(page, "#image-graph"))
    page.locator("#opacity [role=slider]").focus()
    page.keyboard.press("ArrowLeft")
    assert in_view(page, "#image-graph")
    page.screenshot(path=str(OUT / "sample-controls-1366.png"), full_page=False)


def test_stale_results_are_greyed_with_a_spinner_during_a_new_upload(flow, emps):  # noqa: F811
    page = flow.page
    page.set_input_files("#upload input[type=file]", str(emps / BIG))  # a few seconds on the network
    # the previous image's results greyed out (and a spinner over them) until the new ones are in
    page.wait_for_function("""() => { const el = document.querySelector('.histogram-panel.stale');
        return el && Number(getComputedStyle(el.firstElementChild).opacity) < 0.5 &&
               getComputedStyle(el, '::after').animationName === 'saemi-spin'; }""", timeout=20_000)
    assert page.query_selector(".table-panel.stale") and page.query_selector(".sample-panel.stale")
    page.wait_for_selector(".histogram-panel.stale", state="detached", timeout=300_000)
    settle(page)
    assert BIG in text(page, "#upload-status") and number(page, "#sample-images") == 1
    assert number(page, "#sample-count") == number(page, "#summary-count")


def test_the_table_shows_touches_edge_and_sorted_headers_keep_their_words(flow):
    page = flow.page
    page.locator("#particle-grid").scroll_into_view_if_needed()
    header = page.locator("#particle-grid .ag-header-cell[col-id=touches_edge]")
    box = header.bounding_box()
    grid = page.locator("#particle-grid").bounding_box()
    assert box and box["x"] >= grid["x"] - 1 and box["x"] + box["width"] <= grid["x"] + grid["width"] + 1
    for col in ("feret_max_px", "circularity"):
        page.click(f"#particle-grid .ag-header-cell[col-id={col}] .ag-header-cell-label")
        page.wait_for_timeout(300)
        widest = page.evaluate("""(col) => { const el = document.querySelector(
            `#particle-grid .ag-header-cell[col-id=${col}] .ag-header-cell-text`);
            const range = document.createRange(); range.selectNodeContents(el);
            const lines = Array.from(range.getClientRects()).map(r => r.width);
            return {lines: lines.length, narrowest: Math.min(...lines)}; }""", col)
        assert widest["lines"] <= 3 and widest["narrowest"] > 20, (col, widest)


def test_the_histogram_downloads_under_the_image_name(flow):
    page = flow.page
    config = page.evaluate("() => document.querySelector('#histogram-graph .js-plotly-plot')._context"
                           ".toImageButtonOptions")
    assert config["filename"] == f"{BIG[:-4]}_histogram"


def particle_near(page, fr, fc):
    """Screen position of a particle pixel nearest to the fraction (row, column) of the image."""
    return page.evaluate("""([fr, fc]) => {
        const gd = document.querySelector('#image-graph .js-plotly-plot');
        const tr = gd._fullData[2]; const z = tr._z || tr.z; const n = z.length, m = z[0].length;
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis; const bb = gd.getBoundingClientRect();
        let best = null;
        for (let r = 1; r < n - 1; r++) for (let c = 1; c < m - 1; c++) {
            const v = z[r][c]; if (!v || z[r][c - 1] !== v || z[r][c + 1] !== v) continue;
            const d = Math.hypot(r / n - fr, c / m - fc); if (!best || d < best.d) best = {d: d, r: r, c: c}; }
        const x = tr.x0 + best.c * tr.dx, y = tr.y0 + best.r * tr.dy;
        return {x: bb.left + xa._offset + xa.l2p(x), y: bb.top + ya._offset + ya.l2p(y)}; }""", [fr, fc])


def test_the_tooltip_is_not_clipped(flow):
    """Near the image's right edge the tooltip opens to the left: it stays on the image panel and the screen."""
    page = flow.page
    page.evaluate("() => window.scrollTo(0, 0)")
    panel = page.locator(".image-panel").bounding_box()
    for fr, fc in ((0.5, 0.98), (0.5, 0.02), (0.98, 0.98)):
        p = particle_near(page, fr, fc)
        page.mouse.move(5, 5)
        page.wait_for_timeout(150)
        page.mouse.move(p["x"], p["y"])
        page.wait_for_function("() => (document.querySelector('#image-tooltip') || {}).textContent"
                               ".includes('Particle')", timeout=10_000)
        page.wait_for_timeout(300)
        tip = page.evaluate("""() => { const r = document.querySelector('.particle-tooltip').getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }""")
        assert tip["left"] >= panel["x"] - 1 and tip["right"] <= panel["x"] + panel["width"] + 1, (fr, fc, tip, panel)
        assert tip["right"] <= 1366 and tip["top"] >= 0 and tip["bottom"] <= 768, tip
    page.mouse.move(5, 5)


def test_the_page_opens_without_a_jump(browser, server):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    page = ctx.new_page()
    page.add_init_script("""window.__shift = 0; new PerformanceObserver(list => { for (const e of list.getEntries())
        { if (!e.hadRecentInput) window.__shift += e.value; } }).observe({type: 'layout-shift', buffered: true});""")
    page.goto(server.url + "/")
    page.wait_for_selector("#demo-button")
    settle(page)
    page.wait_for_timeout(1500)
    shift = page.evaluate("() => window.__shift")
    ctx.close()
    assert shift < 0.1, f"cumulative layout shift {shift:.3f} on opening"


def test_no_javascript_errors(flow):
    assert not [e for e in flow.errors if "favicon" not in e], flow.errors
