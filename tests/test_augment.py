"""The v2 training recipe's augmentations (saemi.augment) and the crops train cuts with them."""

import random

import numpy as np
import pytest
from scipy import ndimage as ndi

from saemi import augment as A
from saemi.dataset import class_targets

# --------------------------------------------------------------------------- helpers


def discs(shape, specs):
    """Instance labels of discs (cy, cx, r), label k + 1 for the k-th (later ones drawn over earlier)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lab = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(specs):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k + 1
    return lab


def item(seed=0, shape=(160, 200), n=10, r=(9, 16)):
    """A training item: an RGB micrograph of separate bright discs on a dark ground, its labels and name."""
    rng = np.random.default_rng(seed)
    specs, tries = [], 0
    while len(specs) < n and tries < 1000:
        tries += 1
        cy, cx, rr = rng.integers(20, shape[0] - 20), rng.integers(20, shape[1] - 20), rng.integers(*r)
        if all((cy - a) ** 2 + (cx - b) ** 2 > (rr + c + 2) ** 2 for a, b, c in specs):
            specs.append((cy, cx, rr))
    lab = discs(shape, specs)
    grey = np.where(lab > 0, 190, 60).astype(np.float64) + rng.normal(0, 8, shape)
    img = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return {"name": f"synth{seed}", "image": img, "labels": lab}


def images():
    rng = np.random.default_rng(5)
    return {
        "uint8 rgb": rng.integers(0, 256, (48, 64, 3)).astype(np.uint8),
        "uint8 grey": rng.integers(0, 256, (48, 64)).astype(np.uint8),
        "uint16": rng.integers(0, 65536, (48, 64)).astype(np.uint16),
        "float32": rng.random((48, 64, 3)).astype(np.float32),
    }


# --------------------------------------------------------------------------- intensity


@pytest.mark.parametrize("kind", list(images()))
def test_intensity_aug_keeps_shape_dtype_and_range_and_is_seeded(kind):
    img = images()[kind]
    top = {"uint8": 255, "uint16": 65535}.get(img.dtype.name, 1.0)
    changed = 0
    for seed in range(20):
        out = A.intensity_augment(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == img.dtype
        assert out.min() >= 0 and out.max() <= top and np.isfinite(out).all()
        assert np.array_equal(out, A.intensity_augment(img, np.random.default_rng(seed)))
        changed += not np.array_equal(out, img)
    assert changed == 20
    before = img.copy()  # the input is not changed
    A.intensity_augment(img, np.random.default_rng(0))
    assert np.array_equal(img, before)


NEUTRAL = {"invert_p": 0.0, "log_gamma": 0.0, "contrast": (1.0, 1.0), "brightness": 0.0, "charging_p": 0.0,
           "blur_p": 0.0, "gauss_p": 0.0, "shot_p": 0.0}


@pytest.mark.parametrize("kind", list(images()))
def test_inversion_inverts(kind):
    img = images()[kind]
    top = {"uint8": 255, "uint16": 65535}.get(img.dtype.name, 1.0)
    inv = A.invert(img)
    assert inv.dtype == img.dtype
    assert np.allclose(inv.astype(np.float64), top - img.astype(np.float64), atol=1e-6)
    assert np.array_equal(A.invert(inv), img) if img.dtype.kind == "u" else np.allclose(A.invert(inv), img, atol=1e-6)
    # the augmentation with only inversion switched on is exactly the inversion
    out = A.intensity_augment(img, np.random.default_rng(0), {**NEUTRAL, "invert_p": 1.0})
    assert np.allclose(out.astype(np.float64), inv.astype(np.float64), atol=1e-6)
    same = A.intensity_augment(img, np.random.default_rng(0), NEUTRAL)  # and with nothing on, the image
    assert np.abs(same.astype(np.float64) - img.astype(np.float64)).max() <= (1 if img.dtype.kind == "u" else 1e-5)


def test_charging_gradient_is_smooth_and_reaches_its_amplitude():
    for seed in range(10):
        f = A.charging_field((192, 256), 0.2, np.random.default_rng(seed))
        assert f.shape == (192, 256) and f.dtype == np.float32
        assert np.abs(f).max() == pytest.approx(0.2, rel=1e-4)
        assert f.std() > 0.02  # not flat
        steps = max(np.abs(np.diff(f, axis=0)).max(), np.abs(np.diff(f, axis=1)).max())
        assert steps < 10 * 0.2 / 192  # no edges: at most a few times amplitude / side per pixel
        curvature = max(np.abs(np.diff(f, 2, axis=0)).max(), np.abs(np.diff(f, 2, axis=1)).max())
        assert curvature < 0.2 / 192  # and no kinks
    flat = np.full((192, 256), 128, np.uint8)
    f = A.charging_field(flat.shape, 0.2, np.random.default_rng(0))
    shown = A.add_field(flat, f).astype(np.float64) / 255 - 128 / 255
    assert np.abs(shown - f).max() <= 0.5 / 255 + 1e-6  # the image carries the field, to rounding


def test_noise_and_blur_do_what_they_say():
    grey = np.full((200, 200), 0.5, np.float32)
    g = A.gaussian_noise(grey, 0.05, np.random.default_rng(0))
    assert g.std() == pytest.approx(0.05, rel=0.05) and g.mean() == pytest.approx(0.5, abs=0.005)
    dark, bright = np.full((200, 200), 0.1, np.float32), np.full((200, 200), 0.5, np.float32)
    sd = [A.shot_noise(x, 100, np.random.default_rng(1)).std() for x in (dark, bright)]  # sqrt(counts) / photons
    assert sd[0] == pytest.approx(np.sqrt(0.1 / 100), rel=0.1) and sd[1] == pytest.approx(np.sqrt(0.5 / 100), rel=0.1)
    edge = np.zeros((40, 40), np.uint8)
    edge[:, 20:] = 255
    b = A.blur(edge, 2.0)
    assert b.dtype == np.uint8 and 0 < b[20, 19] < 255 and b[20, 0] == 0 and b[20, 39] == 255


def test_intensity_aug_leaves_labels_and_targets_bit_identical():
    from saemi.train import recipe_crop

    it = item(1)
    bank = A.particle_bank([it, item(2)], np.random.default_rng(0))
    for seed in range(6):
        outs = []
        for intensity in (False, True):
            recipe = A.Recipe(intensity_aug=intensity, scale_aug=True, copy_paste=1.0)
            outs.append(recipe_crop(dict(it), 96, random.Random(seed), recipe, bank, return_labels=True))
        (x0, y0, l0), (x1, y1, l1) = outs
        assert np.array_equal(y0, y1) and np.array_equal(l0, l1)
        assert not np.array_equal(x0, x1)  # the images did change
        assert x1.dtype == np.float32 and x1.shape == (3, 96, 96) and np.isfinite(x1).all()


# --------------------------------------------------------------------------- scale


def test_scale_band_comes_from_the_size_normalisation():
    from saemi.size import DEFAULT_SIZE_NORMALISATION

    low, high = DEFAULT_SIZE_NORMALISATION["network_diameter"]
    assert A.scale_band() == pytest.approx((low / A.SCALE_BEYOND, high * A.SCALE_BEYOND))
    card = {"size_normalisation": {"network_diameter": [20, 100]}}
    assert A.scale_band(card) == pytest.approx((20 / A.SCALE_BEYOND, 100 * A.SCALE_BEYOND))


def test_draw_scale_spans_the_band_log_uniformly():
    lo, hi = A.scale_band()
    rng = np.random.default_rng(0)
    targets = np.array([A.draw_scale(40.0, rng) * 40.0 for _ in range(4000)])
    assert targets.min() >= lo - 1e-9 and targets.max() <= hi + 1e-9
    assert targets.min() < lo * 1.05 and targets.max() > hi / 1.05  # beyond the band at both ends
    logs = (np.log(targets) - np.log(lo)) / (np.log(hi) - np.log(lo))
    assert np.histogram(logs, bins=4, range=(0, 1))[0].min() > 850  # about 1000 per quarter: log-uniform
    no_particles = [A.draw_scale(float("nan"), rng) for _ in range(200)] + [A.draw_scale(0.0, rng)]
    assert min(no_particles) >= A.V1_SCALE_JITTER[0] and max(no_particles) <= A.V1_SCALE_JITTER[1]


@pytest.mark.parametrize("s", [0.4, 0.5, 0.75, 1.5, 2.0, 3.0])
def test_scale_aug_keeps_every_instance_and_scales_areas_by_s_squared(s):
    lab = discs((180, 240), [(50, 60, 22), (50, 100, 20), (120, 170, 30), (130, 60, 18)])  # two touch
    img = np.repeat(np.where(lab > 0, 200, 50).astype(np.uint8)[..., None], 3, axis=2)
    im2, lab2 = A.rescale_pair(img, lab, s)
    assert im2.shape[:2] == lab2.shape == (round(180 * s), round(240 * s)) and im2.dtype == np.uint8
    assert lab2.dtype == np.int32
    assert set(np.unique(lab2)) == set(np.unique(lab))  # no instance lost, none made up
    before, after = np.bincount(lab.ravel())[1:], np.bincount(lab2.ravel(), minlength=5)[1:]
    assert np.allclose(after / before, s * s, rtol=0.08)
    # the image follows the labels: bright where a particle is, dark elsewhere
    assert im2[..., 0][lab2 > 0].mean() > 150 and im2[..., 0][lab2 == 0].mean() < 100


def test_scaled_crop_is_a_crop_at_that_scale():
    it = item(3)
    for s in (0.3, 1.0, 2.5):
        im, lab, achieved = A.scaled_crop(it["image"], it["labels"], 64, s, np.random.default_rng(0))
        assert im.shape == (64, 64, 3) and lab.shape == (64, 64) and achieved == pytest.approx(s, rel=0.03)
        assert set(np.unique(lab)) <= set(np.unique(it["labels"]))


# --------------------------------------------------------------------------- copy-paste


def constant_bank(n=6, r=(7, 12)):
    """Bank particles whose patches are one grey value each (10, 20, ...): a pixel shows which one it is."""
    bank = []
    for k in range(n):
        rr = r[0] + k % (r[1] - r[0])
        mask = discs((2 * rr + 3, 2 * rr + 3), [(rr + 1, rr + 1, rr)]) > 0
        bank.append({"image": np.full(mask.shape + (3,), 10 * (k + 1), np.uint8), "mask": mask,
                     "diameter": float(np.sqrt(4 * mask.sum() / np.pi)), "source": "c", "stats": (0.0, 1.0, 1.0)})
    return bank


def replay(labels, placements):
    """The labels a paste sequence must give: each placement's mask written over what was there, in order."""
    out = labels.astype(np.int32).copy()
    h, w = out.shape
    for p in placements:
        m, y0, x0 = p["mask"], p["y0"], p["x0"]
        for (y, x) in zip(*np.nonzero(m)):
            if 0 <= y0 + y < h and 0 <= x0 + x < w:
                out[y0 + y, x0 + x] = p["label"]
    return out


@pytest.mark.parametrize("seed", range(8))
def test_copy_paste_gives_exact_labels_with_occlusion(seed):
    base = discs((96, 96), [(30, 30, 12), (70, 64, 10)])
    img = np.repeat(np.where(base > 0, 250, 0).astype(np.uint8)[..., None], 3, axis=2)
    bank = constant_bank()
    diameter = None if seed % 2 else 20.0
    out_i, out_l, placements = A.copy_paste(img, base, bank, np.random.default_rng(seed), diameter=diameter,
                                            match=False)
    assert out_l.dtype == np.int32 and out_i.dtype == np.uint8 and out_i.shape == img.shape
    assert len(placements) >= 2
    assert [p["label"] for p in placements] == list(range(3, 3 + len(placements)))
    assert np.array_equal(out_l, replay(base, placements))  # every pixel: the last paste over it wins
    for p in placements:  # every visible pasted pixel shows its own particle's patch
        here = out_l == p["label"]
        assert (out_i[here] == bank[p["particle"]]["image"][0, 0]).all()
    untouched = out_l == replay(base, [])
    assert np.array_equal(out_i[untouched & (out_l == base)], img[untouched & (out_l == base)])
    # a dense cluster: pastes overlap (some pasted pixels were covered by a later paste) and touch
    footprint = sum(int(p["mask"].sum()) for p in placements)
    visible = sum(int((out_l == p["label"]).sum()) for p in placements)
    assert visible < footprint
    pasted = out_l >= 3
    touching = (ndi.grey_dilation(np.where(pasted, out_l, 0), size=3) != out_l) & pasted & (
        ndi.grey_erosion(np.where(pasted, out_l, 10**6), size=3) != out_l)
    assert touching.any()
    assert np.array_equal(base, discs((96, 96), [(30, 30, 12), (70, 64, 10)]))  # the input was not changed


def test_copy_paste_clusters_of_the_crops_own_image():
    bank = [dict(p, source="mine" if k < 2 else "other") for k, p in enumerate(constant_bank())]
    own = 0
    for seed in range(40):
        _, _, placements = A.copy_paste(np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96), int), bank,
                                        np.random.default_rng(seed), n=5, match=False, source="mine")
        sources = {bank[p["particle"]]["source"] for p in placements}
        own += sources == {"mine"}
    assert 12 <= own <= 30  # about own_p = 0.5 of the clusters (plus a few all-"mine" by chance)
    _, _, placements = A.copy_paste(np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96), int), bank,
                                    np.random.default_rng(0), n=20, match=False, source="nobody")
    assert {bank[p["particle"]]["source"] for p in placements} == {"mine", "other"}  # none of its own: all


def test_copy_paste_resizes_particles_to_the_crop_diameter():
    bank = constant_bank()
    _, out_l, placements = A.copy_paste(np.zeros((200, 200, 3), np.uint8), np.zeros((200, 200), int), bank,
                                        np.random.default_rng(0), diameter=40.0, n=4, match=False)
    d = [np.sqrt(4 * p["mask"].sum() / np.pi) for p in placements]
    assert all(40 * 0.75 < x < 40 * 1.33 for x in d)


def test_recipe_crop_targets_are_class_targets_of_the_pasted_labels():
    from saemi.train import recipe_crop

    it = item(4)
    bank = A.particle_bank([it], np.random.default_rng(0))
    pasted = 0
    for seed in range(6):
        x, y, lab = recipe_crop(dict(it), 96, random.Random(seed), A.Recipe(copy_paste=1.0), bank,
                                boundary_width=2, return_labels=True)
        assert np.array_equal(y, class_targets(lab, 2))
        _, y0, lab0 = recipe_crop(dict(it), 96, random.Random(seed), A.Recipe(copy_paste=0.0), bank,
                                  boundary_width=2, return_labels=True)  # the same crop without the paste
        new = lab != lab0
        if new.any():
            pasted += 1
            assert lab[new].min() > lab0.max()  # pasted particles carry new labels
            assert not np.array_equal(y, y0)  # and the targets follow them
    assert pasted >= 4


def test_particle_bank_takes_whole_particles_of_the_training_images():
    it = item(6)
    lab = it["labels"].copy()
    lab[0:10, 0:10] = lab.max() + 1  # a particle cut by the border
    lab[50, 190] = lab.max() + 1  # a speck under min_area
    it = {**it, "labels": lab}
    bank = A.particle_bank([it], np.random.default_rng(0))
    assert len(bank) == lab.max() - 2
    for p in bank:
        assert p["mask"].shape == p["image"].shape[:2] and p["mask"].sum() >= A.COPY_PASTE["min_area"]
        assert p["source"] == it["name"] and (p["image"][p["mask"]] > 120).mean() > 0.9
    few = A.particle_bank([it], np.random.default_rng(0), per_image=3)
    assert len(few) == 3


def test_match_intensity_maps_contrast_and_polarity():
    patch = np.array([[50, 200]], np.uint8)  # background 50, a bright particle 200
    same = A.match_intensity(patch, (50.0, 200.0, 40.0), (50.0, 200.0, 40.0))
    assert same.tolist() == [[50, 200]]
    flipped = A.match_intensity(patch, (50.0, 200.0, 40.0), (200.0, 60.0, 40.0))  # dark particles there
    assert flipped.tolist() == [[200, 50]]


# --------------------------------------------------------------------------- hard-image sampling


def test_hard_weights_are_a_distribution_favouring_high_loss():
    losses = np.array([0.2, 0.4, 0.8, 1.6, np.nan])
    w = A.hard_weights(losses)
    assert np.isfinite(w).all() and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[0] < w[1] < w[2] < w[3]
    f = A.hard_factors(losses)
    assert f[4] == 1.0 and f.min() >= A.HARD_SAMPLING["floor"] and f.max() <= A.HARD_SAMPLING["cap"]
    assert np.allclose(A.hard_weights([np.nan] * 4), 0.25)  # nothing known yet: uniform
    assert np.allclose(A.hard_weights([0.0, 0.0]), 0.5)
    base = [1.0, 4.0]
    assert np.allclose(A.hard_weights([1.0, 1.0], base), [0.2, 0.8])  # the extra weight multiplies
    big = A.hard_weights([0.01] * 20 + [100.0])
    assert big[-1] / big[0] == pytest.approx(A.HARD_SAMPLING["cap"] / A.HARD_SAMPLING["floor"])


def test_update_losses_is_a_running_average_and_pure():
    losses = np.full(3, np.nan)
    a = A.update_losses(losses, [0, 0, 2], [1.0, 2.0, 0.5], momentum=0.5)
    assert np.isnan(losses).all()  # unchanged
    assert a[0] == pytest.approx(1.5) and np.isnan(a[1]) and a[2] == 0.5
    assert np.isnan(A.update_losses(a, [1], [float("nan")])[1])  # a NaN loss is skipped


def test_make_batch_draws_hard_images_more_often():
    from saemi.train import make_batch

    items = [{"image": np.full((40, 40, 3), i, np.uint8), "target": np.full((40, 40), i, np.uint8)} for i in range(3)]
    weights = list(A.hard_factors([0.1, 0.1, 2.0]))
    _, y, picks = make_batch(items, 600, 16, random.Random(0), weights, return_picks=True)
    assert picks.count(2) / 600 > 0.6
    assert all((y[k] == picks[k]).all() for k in range(600))


# --------------------------------------------------------------------------- the recipe's one list


def test_recipe_flags_are_made_from_the_recipe():
    import argparse
    from dataclasses import fields

    p = argparse.ArgumentParser(exit_on_error=False)
    A.add_recipe_arguments(p)
    assert A.recipe_from_args(p.parse_args([])) == A.Recipe()
    r = A.recipe_from_args(p.parse_args(["--no-intensity-aug", "--copy-paste", "0.2", "--no-hard-sampling"]))
    assert r == A.Recipe(intensity_aug=False, copy_paste=0.2, hard_sampling=False)
    assert A.recipe_from_args(p.parse_args(["--no-intensity-aug", "--no-scale-aug", "--copy-paste", "0",
                                            "--no-hard-sampling"])) == A.V1_RECIPE
    with pytest.raises(argparse.ArgumentError):
        p.parse_args(["--copy-paste", "1.5"])
    with pytest.raises(ValueError):
        A.Recipe(copy_paste=-0.1)
    card = A.Recipe().card()
    assert {f.name for f in fields(A.Recipe)} <= set(card)
    assert card["scale_target_diameter_px"] == [round(v, 2) for v in A.scale_band()]
    assert A.recipe_from_card(card) == A.Recipe() and A.recipe_from_card(None) == A.V1_RECIPE


def test_v1_recipe_draws_exactly_the_v1_crops():
    from saemi.train import make_batch

    items = [dict(item(7), target=class_targets(item(7)["labels"]))]
    a = make_batch(items, 3, 48, random.Random(2))
    b = make_batch(items, 3, 48, random.Random(2), recipe=A.V1_RECIPE)
    assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a, b))
