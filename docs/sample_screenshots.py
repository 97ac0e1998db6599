"""Regenerate the README's screenshots of the sample view (docs/screenshots/sample-*.png).

Starts the page as the README says (``gunicorn app:server``, real weights, on a free loopback
port), uploads five shared EMPS images as one sample in headless Debian ``chromium``, steps to the
second image, turns on the cumulative curve (the log-normal fit is on by default), and saves what
the screen shows at 1366x768 and 1920x1080: the image view (``sample-WxH-image.png``) and the
sample panel scrolled into view (``sample-WxH.png``).

    PYTHONPATH=$PWD .venv/bin/python docs/sample_screenshots.py

Needs ../shared/data/emps-train beside the repository.
"""

import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from livesrv import Server, free_port  # noqa: E402
from test_browser import CHROMIUM_ARGS, EMPS_IMAGES, gunicorn_command, settle  # noqa: E402
from test_browser_sample import SAMPLE  # noqa: E402

OUT = REPO / "docs" / "screenshots"
SIZES = [(1366, 768), (1920, 1080)]


def main():
    from playwright.sync_api import sync_playwright

    if not EMPS_IMAGES.is_dir():
        sys.exit(f"shared EMPS images not found at {EMPS_IMAGES}")
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory() as cache:
        srv = Server(gunicorn_command(port), port=port, log_path=Path(cache) / "gunicorn.log",
                     env={"SAEMI_DEVICE": "cpu", "SAEMI_CACHE_DIR": cache})
        try:
            srv.wait("/api/v1/health", timeout=240)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                for width, height in SIZES:
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.set_default_timeout(300_000)
                    page.goto(srv.url + "/")
                    page.wait_for_selector("#demo-button")
                    page.set_input_files("#upload input[type=file]", [str(EMPS_IMAGES / n) for n in SAMPLE])
                    page.wait_for_function("() => /5 of 5 images analysed/.test("
                                           "document.querySelector('#sample-progress-text').textContent)")
                    settle(page)
                    page.click("#sample-next")
                    page.wait_for_function("() => document.querySelector('#sample-position').textContent"
                                           " === 'Image 2 of 5'")
                    settle(page)
                    page.click("#sample-show input[value=cumulative]")
                    settle(page)
                    # what the screen shows: the image with its controls, then scrolled to the sample panel
                    top = OUT / f"sample-{width}x{height}-image.png"
                    page.evaluate("() => window.scrollTo(0, 0)")
                    page.wait_for_timeout(300)
                    page.screenshot(path=str(top))
                    page.evaluate("() => document.querySelector('#sample-panel').scrollIntoView({block: 'start'})")
                    page.wait_for_timeout(500)
                    path = OUT / f"sample-{width}x{height}.png"
                    page.screenshot(path=str(path))
                    print(top.relative_to(REPO), path.relative_to(REPO))
                    page.close()
                browser.close()
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
