"""Real EMPS micrographs for the tests: the shared data set when present, else committed stand-ins.

The shared training set lives beside the repository (``../shared/data/emps-train``). Without it,
the images the end-to-end tests name are taken from the repository itself: the demo image is EMPS
``2ee0518d7a`` byte for byte, and ``tests/fixtures/emps`` holds one whole EMPS image and two crops
with their masks (see its README for source and licence).
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "emps-train"
FIXTURE_EMPS = Path(__file__).resolve().parent / "fixtures" / "emps"
DEMO = REPO / "saemi" / "ui" / "assets" / "demo.png"

# EMPS name -> the committed file that stands in for it (the same image, or a crop of it)
STAND_INS = {
    "2ee0518d7a": DEMO,
    "aa309f6cec": FIXTURE_EMPS / "images" / "aa309f6cec.png",
    "70f9f13af4": FIXTURE_EMPS / "images" / "70f9f13af4_crop.png",
    "7fabcfe23f": FIXTURE_EMPS / "images" / "7fabcfe23f_crop.png",
}


def shared_available():
    return (SHARED_DATA / "images").is_dir()


def real_image(name):
    """Path of EMPS image ``name``: the shared file, else its committed stand-in (else the test skips)."""
    if shared_available():
        return SHARED_DATA / "images" / f"{name}.png"
    if name in STAND_INS:
        return STAND_INS[name]
    pytest.skip(f"shared EMPS data not found at {SHARED_DATA} and {name} has no committed stand-in")


def labelled_sample(shared_names):
    """(EMPS-layout folder, image names) for evaluation: ``shared_names`` of the shared set, else
    the committed sample (tests/fixtures/emps: images/ and segmaps/)."""
    if shared_available():
        return SHARED_DATA, list(shared_names)
    return FIXTURE_EMPS, sorted(p.stem for p in (FIXTURE_EMPS / "images").glob("*.png"))[:len(shared_names)]


def emps_mosaic(shape=(3000, 4000), seed=0):
    """PNG bytes of a grey ``shape`` mosaic of shared EMPS images, tiled and cropped, never resized.

    A stand-in for a 12-megapixel micrograph whose particles have their real
    sizes (about 500 of them at the default shape). Needs the shared data.
    """
    import io

    import numpy as np
    from PIL import Image

    files = sorted((SHARED_DATA / "images").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no EMPS images under {SHARED_DATA}")
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    y = 0
    while y < shape[0]:
        x, row_h = 0, 0
        while x < shape[1]:
            img = np.asarray(Image.open(files[rng.integers(len(files))]).convert("L"))
            h, w = min(img.shape[0], shape[0] - y), min(img.shape[1], shape[1] - x)
            out[y:y + h, x:x + w] = img[:h, :w]
            x, row_h = x + w, max(row_h, h)
        y += row_h
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "PNG")
    return buf.getvalue()
