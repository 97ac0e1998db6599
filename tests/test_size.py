"""Size-normalised inference (issue 20) and splitting at the network's scale (issue 17), with the real model."""

import io

import numpy as np
import pytest
from PIL import Image

from saemi.instances import split_touching
from saemi.pipeline import analyze, segment, split
from saemi.settings import Settings, SplitSettings
from saemi.size import estimate_diameter, typical_diameter, upsample_labels, working_scale
from synth import disc_labels, micrograph


def discs(magnification, r=10, n=4, step=None, seed=0):
    """An n x n grid of discs of radius r * magnification (a little jitter), labels and drawn diameter."""
    rng = np.random.default_rng(seed)
    step = step or 4 * r
    size = n * step + step
    centres = [(step + i * step + rng.integers(-2, 3), step + j * step + rng.integers(-2, 3))
               for i in range(n) for j in range(n)]
    m = magnification
    labels = disc_labels((size * m, size * m), [(cy * m, cx * m, r * m) for cy, cx in centres])
    return labels, 2 * r * m


def png16(labels, low=900, high=1300, noise=25.0, seed=0):
    """A dark, low-contrast 16-bit frame (values in a narrow band near black), as PNG bytes."""
    rng = np.random.default_rng(seed)
    img = np.where(labels > 0, high, low) + rng.normal(0, noise, labels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("magnification", [1, 2, 4])
def test_estimated_diameter_follows_the_magnification_and_the_count_holds(trained_segmenter, magnification):
    labels, drawn = discs(magnification)
    a = analyze(micrograph(labels, seed=magnification), segmenter=trained_segmenter)
    seg = a.segmentation
    assert seg.diameter_source == "estimated"
    assert abs(seg.diameter / drawn - 1) < 0.15, (seg.diameter, drawn)
    # the typical particle spans the card's range at the network (16 to 256 px, within the tolerance)
    assert 16 / 1.25 <= seg.diameter * seg.network_scale <= 256 * 1.25
    assert a.summary["count"] == int(labels.max())
    measured = float(np.median(a.table["equivalent_diameter_px"]))
    assert abs(measured / drawn - 1) < 0.1


@pytest.mark.parametrize("contrast", ["bright", "dark-particles", "dark-16-bit"])
def test_estimate_and_count_hold_at_three_contrasts(trained_segmenter, contrast):
    labels, drawn = discs(2, seed=3)
    if contrast == "bright":
        image = micrograph(labels, seed=1)
    elif contrast == "dark-particles":
        image = micrograph(labels, bright_particles=False, seed=2)
    else:
        image = png16(labels)
    a = analyze(image, segmenter=trained_segmenter)
    assert abs(a.segmentation.diameter / drawn - 1) < 0.15, (a.segmentation.diameter, drawn)
    assert a.summary["count"] == int(labels.max())


def test_a_given_diameter_sets_the_working_scale(trained_segmenter):
    labels, drawn = discs(2)
    image = micrograph(labels)
    seg = segment(image, trained_segmenter, diameter=drawn)
    assert seg.diameter == drawn and seg.diameter_source == "user"
    assert seg.network_scale == pytest.approx(working_scale(drawn, image.shape[:2], trained_segmenter.card), rel=0.02)
    assert seg.network_probability.shape[1:] == (round(image.shape[0] * seg.network_scale),) * 2
    # a wrong diameter is honoured, not second-guessed: a tenth of it blows the image up to the cap
    tiny = segment(image, trained_segmenter, diameter=drawn / 10)
    assert tiny.diameter_source == "user" and tiny.network_scale > 3 * seg.network_scale


def pairs_and_chains():
    """Touching discs: two pairs and a chain of four (overlap of a fifth of a radius)."""
    r = 20
    drawn = [(60, 60, r), (60, 60 + 2 * r - 4, r),
             (60, 200, r), (60 + 2 * r - 4, 200, r),
             (170, 40, r), (170, 40 + 2 * r - 4, r), (170, 40 + 2 * (2 * r - 4), r), (170, 40 + 3 * (2 * r - 4), r)]
    return disc_labels((240, 260), drawn), len(drawn), 2 * r


def test_touching_pairs_and_chains_are_split_as_drawn(trained_segmenter):
    labels, n, drawn = pairs_and_chains()
    a = analyze(micrograph(labels, seed=4), segmenter=trained_segmenter)
    assert a.summary["count"] == n
    # each drawn disc holds one found particle, covering most of it
    for i in range(1, n + 1):
        found, counts = np.unique(a.labels[labels == i], return_counts=True)
        main = found[np.argmax(counts)]
        assert main > 0 and counts.max() > 0.7 * (labels == i).sum()


def test_splitting_at_the_working_scale_keeps_the_diameter(trained_segmenter):
    """Issue 17 item 2: the diameters from labels split at the network's scale and mapped back by
    nearest neighbour agree with splitting the upsampled probabilities at full resolution."""
    labels, drawn = discs(4, seed=5)
    seg = segment(micrograph(labels, seed=5), trained_segmenter)
    assert seg.network_scale < 1
    settings = Settings.from_dict(None, defaults=trained_segmenter.card["postprocess"])
    at_network = split(seg, settings)
    full = split_touching(seg.probability, settings.split_settings(), None, seg.diameter, 1.0)
    assert at_network.shape == full.shape == labels.shape
    assert at_network.max() == full.max() == labels.max()
    d_net, d_full = typical_diameter(at_network), typical_diameter(full)
    assert abs(d_net / d_full - 1) < 0.02
    assert abs(d_net / drawn - 1) < 0.05


def test_fractions_hold_at_every_magnification_and_absolute_values_override():
    small = SplitSettings().pixel_settings(20.0)
    large = SplitSettings().pixel_settings(80.0)
    assert large[0] == pytest.approx(4 * small[0], abs=1)
    assert SplitSettings(min_distance=7, min_size=30).pixel_settings(80.0) == (7, 30)
    fraction = SplitSettings().min_size_fraction
    assert SplitSettings(min_distance=7).pixel_settings(80.0, 0.5) == (4, round(fraction * np.pi * 6400 / 4 * 0.25))


def test_a_mask_without_a_diameter_is_split_by_its_own_estimate():
    labels, n, drawn = pairs_and_chains()
    assert split_touching(labels > 0).max() == n
    stack = np.stack([labels == 0, labels > 0]).astype(np.float32)
    assert estimate_diameter(stack, 1.0) == pytest.approx(drawn, rel=0.1)


def test_upsampled_labels_keep_areas():
    labels, _ = discs(1)
    small = labels[::4, ::4]
    big = upsample_labels(small, labels.shape)
    assert big.shape == labels.shape
    assert set(np.unique(big)) == set(np.unique(small))
    assert abs(typical_diameter(big) / typical_diameter(labels) - 1) < 0.1


# --- the diameter setting through the CLI and the service (the API's core; tests/test_api.py over HTTP) ---

def test_diameter_is_honoured_by_the_cli(tmp_path):
    import pandas as pd
    import saemi.cli

    labels, drawn = discs(2)
    (tmp_path / "in").mkdir()
    Image.fromarray(micrograph(labels)).save(tmp_path / "in" / "discs.png")
    assert saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "auto"), "--quiet"]) == 0
    assert saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "given"), "--quiet",
                           "--diameter", "20"]) == 0
    auto = pd.read_csv(tmp_path / "auto" / "summary.csv").iloc[0]
    given = pd.read_csv(tmp_path / "given" / "summary.csv").iloc[0]
    assert auto.diameter_source == "estimated" and abs(auto.diameter_px / drawn - 1) < 0.15
    assert given.diameter_source == "user" and given.diameter_px == 20
    with pytest.raises(SystemExit):
        saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--diameter", "abc"])
    assert saemi.cli.main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--diameter", "0"]) == 2


def test_diameter_is_honoured_by_the_service_and_keys_its_cache(trained_segmenter, tmp_path):
    from saemi.cache import DiskStore
    from saemi.errors import SaemiError
    from saemi.service import AnalysisService
    from synth import png_bytes

    svc = AnalysisService(lambda: trained_segmenter, store=DiskStore(tmp_path, 50_000_000, 3600))
    labels, drawn = discs(2)
    data = png_bytes(micrograph(labels))
    auto = svc.segment(data, "discs.png")
    assert auto["diameter_source"] == "estimated" and abs(auto["diameter"] / drawn - 1) < 0.15
    given = svc.segment(data, "discs.png", settings={"diameter": 20})
    assert (given["diameter"], given["diameter_source"]) == (20, "user") and not given["cached"]
    # a re-analysis by image_id with another diameter runs the network again on the stored image
    out = svc.analyze(image_id=auto["image_id"], settings={"diameter": 10}, include_images=False)
    assert (out["diameter"], out["diameter_source"]) == (10, "user") and out["settings"]["diameter"] == 10
    assert out["cached"] is False and "network" in out["timings"]
    same = svc.analyze(image_id=auto["image_id"], settings={"diameter": 10}, include_images=False)
    assert same["particles"] == out["particles"] and same["cached"] is True
    back = svc.analyze(image_id=auto["image_id"], settings={"diameter": None}, include_images=False)
    assert back["diameter_source"] == "estimated" and back["summary"]["count"] == int(labels.max())
    with pytest.raises(SaemiError, match="diameter must be from 1"):
        svc.analyze(image_id=auto["image_id"], settings={"diameter": 0.5})


def test_fit_to_mask_grows_labels_as_scipy_s_grey_dilation_would():
    from scipy import ndimage as ndi

    from saemi.size import fit_to_mask

    rng = np.random.default_rng(0)
    for trial in range(12):
        shape = tuple(int(v) for v in rng.integers(5, 70, 2))
        labels = (rng.integers(0, 9, shape) * (rng.random(shape) < 0.2)).astype(np.int32)
        if trial == 11:
            labels[0, 0] = 2 ** 24 + 5  # a label beyond float32's integers
        mask = rng.random(shape) < 0.6
        want = np.where(mask, labels, 0).astype(np.int32)
        for _ in range(3):
            want = np.where(mask & (want == 0), ndi.grey_dilation(want, size=(3, 3)), want)
        np.testing.assert_array_equal(fit_to_mask(labels, mask, 3), want)


def test_split_with_a_stage_memo_gives_the_labels_of_a_fresh_split():
    """pipeline.split at a working scale of 0.5 (upsampled, fitted to the full-resolution mask) with one memo."""
    import cv2
    from scipy import ndimage as ndi

    from saemi.instances import StageMemo
    from saemi.pipeline import Segmentation
    from saemi.probability import resize_probability

    rng = np.random.default_rng(5)
    labels, _ = discs(1, r=9, n=5, step=17)  # touching neighbours
    inner = ndi.binary_erosion(labels > 0, iterations=2)
    logits = np.stack([(labels == 0) * 3.0, inner * 3.0, ((labels > 0) & ~inner) * 3.0])
    logits = ndi.gaussian_filter(logits + rng.normal(0, 1.0, logits.shape), (0, 1.5, 1.5))
    e = np.exp(logits - logits.max(0))
    full = (e / e.sum(0)).astype(np.float32)
    small = np.stack([cv2.resize(p, (full.shape[2] // 2, full.shape[1] // 2), interpolation=cv2.INTER_AREA)
                      for p in full])
    image = micrograph(labels)
    seg = Segmentation(image, image, resize_probability(small, full.shape[1:]), banner_box=(0, 12, 0, full.shape[2]),
                       network_probability=small, network_scale=0.5, diameter=18.0)
    memo = StageMemo()
    base = Settings().to_dict()
    seen = set()
    for move in [{}, {"threshold": 0.6}, {"min_distance_fraction": 0.2}, {"min_size_fraction": 0.9}, {},
                 {"threshold": 0.6, "min_size_fraction": 0.9}, {"min_distance_fraction": 0.2}, {"threshold": 0.4}]:
        s = Settings.from_dict({**base, **move})
        got = split(seg, s, memo)
        np.testing.assert_array_equal(got, split(seg, s))
        seen.add(got.tobytes())
    assert len(seen) == 6  # every move but the repeats changes the labels: a stale memo would show
    assert any(k[0] == "full-resolution mask" for k in memo.keys())
