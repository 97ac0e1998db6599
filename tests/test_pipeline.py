import io

import numpy as np
import pytest
from PIL import Image

from saemi.errors import SaemiError
from saemi.pipeline import Settings, analyze, segment, split_and_measure
from saemi.service import AnalysisService, safe_stem
from synth import add_banner, disc_labels, micrograph
from test_io import png_header_only


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_analyze_returns_everything_at_image_resolution(random_segmenter):
    img = micrograph(disc_labels((120, 160), [(60, 50, 20), (60, 110, 20)]))
    a = analyze(img, {"min_size": 0}, segmenter=random_segmenter)
    assert a.labels.shape == (120, 160) and a.labels.dtype == np.int32
    assert a.probability.shape == (3, 120, 160)
    assert len(a.table) == len(np.unique(a.labels[a.labels > 0]))
    assert a.summary["count"] == len(a.table)
    assert set(a.timings) == {"load", "scale", "banner", "network", "watershed", "table"}


def test_banner_is_removed_before_the_network_and_reported(random_segmenter):
    img, box = add_banner(micrograph(disc_labels((200, 300), [(80, 80, 30)])), height=30)
    a = analyze(img, segmenter=random_segmenter)
    assert a.banner_box == box
    y0, y1, x0, x1 = box
    assert (a.labels[y0:y1, x0:x1] == 0).all()
    assert not (a.segmentation.cleaned[y0:y1] == 255).all()


BAD = {
    "empty": (b"", "empty"),
    "text": (b"hello, I am not an image" * 10, "not an image"),
    "one pixel": (png(np.zeros((1, 1), np.uint8)), "1x1"),
    "huge": (png_header_only(30000, 30000), "megapixels"),
    "black": (png(np.zeros((64, 64), np.uint8)), "uniformly black"),
    "truncated": (png(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8))[:2000], "truncated"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_through_analyze(case, random_segmenter):
    data, words = BAD[case]
    with pytest.raises(SaemiError) as err:
        analyze(data, segmenter=random_segmenter)
    assert words in str(err.value)


def test_16bit_and_rgba_inputs_work(random_segmenter):
    a16 = (np.random.default_rng(0).random((80, 90)) * 60000).astype(np.uint16)
    assert analyze(png(a16), segmenter=random_segmenter).labels.shape == (80, 90)
    rgba = np.random.default_rng(0).integers(0, 255, (70, 60, 4)).astype(np.uint8)
    assert analyze(png(rgba), segmenter=random_segmenter).labels.shape == (70, 60)


@pytest.mark.parametrize("values, words", [
    ({"threshold": "high"}, "threshold"),
    ({"min_size": 2.5}, "min_size"),
    ({"watershed": "perhaps"}, "watershed"),
    ({"nm_per_pixel": -3}, "nm_per_pixel"),
    ({"colour": "red"}, "unknown setting"),
    ({"removed_labels": ["a"]}, "removed_labels"),
])
def test_settings_are_validated(values, words):
    with pytest.raises(SaemiError) as err:
        Settings.from_dict(values)
    assert words in str(err.value)


def test_settings_coercion_and_defaults():
    s = Settings.from_dict({"watershed": "false", "min_size": "12", "removed_labels": "3, 1"},
                           defaults={"min_distance": 9, "not_a_setting": 1})
    assert s.watershed is False and s.min_size == 12 and s.removed_labels == (1, 3) and s.min_distance == 9


def test_removed_labels_keep_other_ids(random_segmenter):
    truth = disc_labels((100, 200), [(50, 40, 20), (50, 100, 20), (50, 160, 20)])
    seg = segment(micrograph(truth), random_segmenter)
    seg.probability = np.stack([truth == 0, truth > 0, np.zeros_like(truth)]).astype(np.float32)
    seg.network_probability, seg.network_scale = None, 1.0  # split these, at full resolution
    before = split_and_measure(seg, Settings(min_size=0))
    after = split_and_measure(seg, Settings(min_size=0, removed_labels=(2,)))
    assert before.summary["count"] == 3 and after.summary["count"] == 2
    assert sorted(after.table.label) == [1, 3]


def test_service_runs_the_network_once_per_image(random_segmenter, tmp_path):
    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner, self.card, self.device = inner, inner.card, inner.device

        def predict(self, image):
            calls.append(image.shape)
            return self.inner.predict(image)

    from saemi.cache import DiskStore

    # room for two of these segmentations (about 50 kB each) and their handles
    svc = AnalysisService(lambda: Counting(random_segmenter), store=DiskStore(tmp_path, 110_000, 3600))
    data = png(micrograph(disc_labels((100, 120), [(50, 60, 25)])))
    first = svc.analyze(data=data, filename="../../etc/passwd.png")
    again = svc.analyze(image_id=first["image_id"], settings={"min_distance": 3})
    assert len(calls) == 1
    assert again["cached"] and "network" not in again["timings"]
    assert first["labels_png"] and first["overlay_png"]
    csv_text, name = svc.particles_csv(first["image_id"])
    assert name == "passwd_particles.csv"
    assert csv_text.count("\n") == len(again["particles"]) + 1
    # the cache is bounded in bytes: two more images push the first out
    for k in range(2):
        svc.segment(png(micrograph(disc_labels((100, 120), [(50, 60, 10 + k)]))), "x.png")
    with pytest.raises(SaemiError, match="unknown image_id"):
        svc.analyze(image_id=first["image_id"])


def test_safe_stem():
    assert safe_stem("C:\\Users\\me\\sample 1.tif") == "sample_1"
    assert safe_stem("../../..") == "image"


def test_scale_bar_calibrates_unless_told_otherwise(random_segmenter):
    from saemi.scalebar import Scale

    truth = disc_labels((100, 200), [(50, 40, 20), (50, 100, 20)])
    seg = segment(micrograph(truth), random_segmenter, detect_scale_bar=False)
    seg.probability = np.stack([truth == 0, truth > 0, np.zeros_like(truth)]).astype(np.float32)
    seg.scale = Scale(bar_length_px=50.0, value=100.0, unit="nm", nm_per_pixel=2.0, bar_box=(90, 93, 10, 60),
                      label_box=None, confidence=0.9, text="100 nm")
    auto = split_and_measure(seg, Settings(min_size=0))
    assert auto.nm_per_pixel == 2.0 and auto.summary["unit"] == "nm"
    assert "equivalent_diameter_nm" in auto.table
    assert split_and_measure(seg, Settings(min_size=0, scale_bar="none")).summary["unit"] == "px"
    assert split_and_measure(seg, Settings(min_size=0, nm_per_pixel=5.0)).nm_per_pixel == 5.0
    with pytest.raises(SaemiError, match="scale"):
        Settings.from_dict({"scale_bar": "guess"})
