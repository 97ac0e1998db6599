import numpy as np
import pytest

from saemi.banner import fill_by_reflection, find_banner, remove_banner
from synth import add_banner, disc_labels, micrograph


def scene(bright_particles=True, seed=0):
    discs = [(60, 60, 25), (70, 140, 30), (150, 220, 20), (160, 90, 35), (110, 300, 28)]
    return micrograph(disc_labels((260, 360), discs), bright_particles, seed=seed)


@pytest.mark.parametrize("where", ["bottom", "top"])
@pytest.mark.parametrize("bright_bar", [True, False])
@pytest.mark.parametrize("bright_particles", [True, False])
def test_bar_is_found_and_only_it_changes(where, bright_bar, bright_particles):
    clean = scene(bright_particles)
    img, box = add_banner(clean, height=36, where=where, bright=bright_bar)
    cleaned, found = remove_banner(img)
    assert found == box
    y0, y1 = box[:2]
    outside = np.ones(img.shape[0], bool)
    outside[y0:y1] = False
    assert (cleaned[outside] == img[outside]).all()
    # the bar's flat shade is gone: the fill looks like the micrograph around it
    assert abs(float(cleaned[y0:y1].mean()) - float(clean.mean())) < 40
    assert cleaned.shape == img.shape


@pytest.mark.parametrize("bright_particles", [True, False])
def test_no_bar_means_no_change(bright_particles):
    img = scene(bright_particles)
    cleaned, box = remove_banner(img)
    assert box is None and cleaned is img


def test_dark_background_without_marks_is_not_a_bar():
    img = scene(True)
    img[200:] = 0  # an empty dark region at the bottom, e.g. a TEM grid edge
    assert find_banner(img) is None


def test_fill_mirrors_half_from_below_and_half_from_above():
    rows = np.arange(20, dtype=np.uint8)[:, None].repeat(4, axis=1)
    out = fill_by_reflection(rows, (8, 12, 0, 4))
    assert out[8:12, 0].tolist() == [7, 6, 13, 12]
    assert (out[:8] == rows[:8]).all() and (out[12:] == rows[12:]).all()


def test_fill_at_the_image_edge_uses_one_side():
    rows = np.arange(10, dtype=np.uint8)[:, None].repeat(3, axis=1)
    out = fill_by_reflection(rows, (7, 10, 0, 3))
    assert out[7:, 0].tolist() == [6, 5, 4]


def test_real_sem_image_with_banner_keeps_size():
    from samples import real_image
    from saemi.io import load_image

    img = load_image(real_image("2ee0518d7a"))  # the demo image without ../shared
    cleaned, box = remove_banner(img)
    assert cleaned.shape == img.shape
    if box is None:
        assert cleaned is img
