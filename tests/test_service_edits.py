"""Manual corrections through the service the page and the API share: kept in the store, on every worker."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from livesrv import REPO
from saemi.cache import DiskStore
from saemi.errors import SaemiError
from saemi.measure import particle_table, update_table
from saemi.service import AnalysisService

DEMO = (REPO / "saemi" / "ui" / "assets" / "demo.png").read_bytes()


@pytest.fixture
def store(tmp_path):
    return DiskStore(tmp_path / "cache", 512 * 2**20, 3600)


@pytest.fixture
def worker(store, trained_segmenter):
    """A service as one gunicorn worker has it (each test gets fresh per-process memos)."""
    def make():
        return AnalysisService(segmenter_factory=lambda: trained_segmenter, store=store)
    return make


def labels_of(svc, iid, **kw):
    png, name = svc.labels_png(iid, **kw)
    im = Image.open(io.BytesIO(png))
    assert im.info.get("Software", "").startswith("SAEMI") and name.endswith("_labels.png")
    return np.asarray(im).astype(np.int64)


def square_on_background(labels, side=12):
    from scipy import ndimage as ndi

    free = ndi.minimum_filter((labels == 0).astype(np.uint8), size=side + 6, mode="constant") > 0
    ys, xs = np.nonzero(free)
    x, y = int(xs[0]) - side // 2, int(ys[0]) - side // 2
    return [[x, y], [x + side - 1, y], [x + side - 1, y + side - 1], [x, y + side - 1]]


def test_edits_made_on_one_worker_apply_on_another(worker):
    a, b = worker(), worker()
    iid = a.segment(DEMO, "demo.png")["image_id"]
    first = a.analyze(image_id=iid, include_images=False)
    l0 = labels_of(a, iid)
    big = max(first["particles"], key=lambda p: p["area_px"])["label"]
    a.edit(iid, [{"op": "add", "polygon": square_on_background(l0)}, {"op": "erase", "labels": [big]}])
    on_b = b.analyze(image_id=iid, include_images=False)  # b replays both edits from the store
    assert on_b["edits"]["count"] == 2 and on_b["summary"]["count"] == first["summary"]["count"]
    assert np.array_equal(labels_of(b, iid), labels_of(a, iid))
    b.undo(iid)
    assert a.analyze(image_id=iid, include_images=False)["summary"]["count"] == first["summary"]["count"] + 1
    assert a.list_edits(iid)["undone"][0]["op"] == "erase"


def test_the_incremental_table_is_the_table_measured_afresh(worker):
    svc = worker()
    iid = svc.segment(DEMO, "demo.png")["image_id"]
    first = svc.analyze(image_id=iid, include_images=False)
    labels = [p["label"] for p in first["particles"]]
    l0 = labels_of(svc, iid)
    svc.edit(iid, {"op": "add", "polygon": square_on_background(l0)})
    svc.edit(iid, {"op": "merge", "labels": labels[3:5]})
    svc.edit(iid, {"op": "erase", "labels": [labels[7]]})
    svc.undo(iid)
    svc.redo(iid)
    incremental = svc.analyze(image_id=iid, include_images=False)
    afresh = worker().analyze(image_id=iid, include_images=False)  # no memo: every particle measured
    assert incremental["particles"] == afresh["particles"] and incremental["summary"] == afresh["summary"]
    origins = {p["label"]: p["origin"] for p in afresh["particles"]}
    assert origins[labels[3]] == "merged" and labels[4] not in origins and labels[7] not in origins
    assert sorted(set(origins.values())) == ["added", "merged", "model"]


def test_a_slider_move_replays_the_edits_and_counts_what_no_longer_applies(worker):
    svc = worker()
    iid = svc.segment(DEMO, "demo.png")["image_id"]
    first = svc.analyze(image_id=iid, include_images=False, settings={"min_distance": 7})
    l0 = labels_of(svc, iid)
    square = square_on_background(l0)
    two = [p["label"] for p in first["particles"]][:2]
    svc.edit(iid, [{"op": "add", "polygon": square}, {"op": "merge", "labels": two}], settings={"min_distance": 7})
    moved = svc.analyze(image_id=iid, include_images=False, settings={"min_distance": 15, "watershed": False})
    assert moved["edits"]["count"] == 2
    assert moved["edits"]["applied"] + len(moved["edits"]["dropped"]) == 2
    x0, y0 = square[0]
    drawn = labels_of(svc, iid)[y0:y0 + 12, x0:x0 + 12]
    assert len(np.unique(drawn)) == 1 and drawn[0, 0] > 0  # the drawn particle survived


def test_downloads_zero_exclusions_but_the_training_mask_keeps_every_particle(worker):
    svc = worker()
    iid = svc.segment(DEMO, "demo lab #1.png")["image_id"]
    first = svc.analyze(image_id=iid, include_images=False)
    gone = first["particles"][0]["label"]
    every = labels_of(svc, iid, settings={"removed_labels": [gone]}, every_particle=True)
    measured = labels_of(svc, iid, settings={"removed_labels": [gone]})
    assert (every == gone).any() and not (measured == gone).any()
    data, name = svc.training_pair(iid, settings={"removed_labels": [gone]})
    assert name == "demo_lab_1_training_pair.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(z.namelist())
        assert names == [f"images/demo_lab_1_{iid[:8]}.png", f"segmaps/demo_lab_1_{iid[:8]}.png"]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(z.read(names[1])))).astype(np.int64), every)
        assert Image.open(io.BytesIO(z.read(names[0]))).size == (first["width"], first["height"])


def test_refused_edits_change_nothing(worker):
    svc = worker()
    iid = svc.segment(DEMO, "demo.png")["image_id"]
    svc.analyze(image_id=iid, include_images=False)
    ys, xs = np.nonzero(labels_of(svc, iid) == 0)
    background = [int(xs[-1]), int(ys[-1])]
    with pytest.raises(SaemiError, match="no edit to undo"):
        svc.undo(iid)
    with pytest.raises(SaemiError, match=r"edit 2: .*at least 3"):
        svc.edit(iid, [{"op": "add", "polygon": [[1, 1], [30, 1], [30, 30]]}, {"op": "add", "polygon": [[1, 1]]}])
    with pytest.raises(SaemiError, match=r"edit 2 \(erase\) changes nothing"):
        svc.edit(iid, [{"op": "add", "polygon": [[1, 1], [30, 1], [30, 30]]},
                       {"op": "erase", "points": [background]}])
    assert svc.list_edits(iid)["done"] == []
    with pytest.raises(SaemiError, match="at most"):
        svc.edit(iid, [{"op": "add", "polygon": [[1, 1], [30, 1], [30, 30]]}] * 2001)
    with pytest.raises(SaemiError) as err:
        svc.edit("x" * 30, {"op": "erase", "points": [[1, 1]]})
    assert err.value.code == "not_found"


def test_update_table_equals_a_full_measurement():
    yy, xx = np.mgrid[:80, :120]
    before = np.zeros((80, 120), np.int32)
    for lab, (cy, cx, r) in enumerate([(20, 20, 10), (40, 60, 15), (60, 100, 8)], start=1):
        before[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = lab
    after = before.copy()
    after[after == 3] = 0          # erased
    after[:, 60:][after[:, 60:] == 2] = 4  # split
    after[70:78, 5:20] = 5         # added
    table = update_table(particle_table(before), after, [2, 3, 4, 5])
    assert table.equals(particle_table(after))
