"""A 12-megapixel upload in headless Chromium: the progress line names each stage while it works.

The server, browser and image folder are those of tests/test_browser.py (the README's gunicorn
command, the real weights, Debian chromium). The image is a 4000 x 3000 mosaic of shared EMPS
micrographs (tests/samples.py), so the network runs over many tiles and the splitting takes
seconds: long enough to read the stages as a user would.
"""

import json
import re
import time

import pytest

from samples import emps_mosaic
from test_browser import OUT, browser, emps, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
def page(server, browser):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.set_default_timeout(120_000)
    pg.goto(server.url + "/")
    pg.wait_for_selector("#demo-button")
    yield pg, errors
    ctx.close()


def test_a_large_upload_shows_the_stage_names_while_it_works(page, emps, tmp_path):  # noqa: F811
    pg, errors = page
    big = tmp_path / "mosaic_12mp.png"
    big.write_bytes(emps_mosaic((3000, 4000)))
    pg.set_input_files("#upload input[type=file]", str(big))
    seen, shown_once, end, log, t0 = [], False, time.monotonic() + 400, [], time.monotonic()
    while time.monotonic() < end:
        state = pg.evaluate("""() => {
            const box = document.getElementById('progress-box');
            return {shown: !!box && !box.hidden,
                    text: (document.getElementById('progress-stage') || {}).textContent || '',
                    status: (document.getElementById('analysis-status') || {}).textContent || ''};
        }""")
        if state["shown"]:
            shown_once = True
            if not seen or seen[-1] != state["text"]:
                seen.append(state["text"])
        log.append((round(time.monotonic() - t0, 1), state))
        if shown_once and not state["shown"] and "particles found" in state["status"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the analysis did not end in time; progress lines seen: {seen}")
    pg.screenshot(path=str(OUT / "screenshots" / "progress-12mp-done.png"))
    (OUT / "progress-12mp.json").write_text(json.dumps(log, indent=0))
    stages = [re.sub(r"… \(\d+ s\)$", "", t) for t in seen]
    tiles = [s for s in stages if re.fullmatch(r"Segmenting: tile \d+ of \d+", s)]
    assert len(tiles) >= 2, seen  # the tile count moves while the network runs
    assert max(int(s.rsplit(" ", 1)[1]) for s in tiles) >= 4, seen  # 12 megapixels: many tiles
    assert "Splitting touching particles" in stages, seen
    # the stages come in the pipeline's order: the network before the splitting
    assert stages.index(tiles[0]) < stages.index("Splitting touching particles"), seen
    assert all(re.search(r"… \(\d+ s\)$", t) or t == "Working…" for t in seen), seen
    assert not errors, errors
