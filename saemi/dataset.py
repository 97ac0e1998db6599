"""Labelled data on disk: ``images/<name>.png`` with instance masks in ``segmaps/<name>.png`` (no torch).

Shared by training (:mod:`saemi.train`) and evaluation (:mod:`saemi.evaluate`),
which reads PNGs without importing torch.

A *training folder* is the EMPS layout, which is also what the page writes for a
corrected image (and what ``saemi analyze`` writes as ``<name>_labels.png``):

* ``images/<name>.png`` (or ``.tif`` / ``.tiff``): 8-bit grey or RGB, or 16-bit
  grey, read by :func:`saemi.io.load_image` -- deeper images are mapped to 8 bits
  exactly as the analysis maps them before the network sees them;
* ``segmaps/<name>.png``: the instance labels of that image, same height and
  width, 8- or 16-bit grey integers, 0 = background, one value per particle.

:func:`list_pairs` lists a folder's pairs; with ``strict=True`` (what ``saemi
train`` uses for ``--data`` and every ``--extra`` folder) every image must have
its mask and every mask its image, else :class:`DatasetError` names the file.
:func:`load_dataset` reads the pairs and refuses a mask that is not an integer
label image or whose shape is not its image's.
"""

from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from .errors import SaemiError

#: Image file suffixes a training folder's ``images/`` may hold (masks are always ``.png``).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
#: What a training folder is, for error messages.
LAYOUT = "images/<name>.png|.tif|.tiff with 16-bit label masks segmaps/<name>.png"


class DatasetError(SaemiError):
    """A training folder that cannot be used as it is; the message names the file and the problem."""

    def __init__(self, message):
        super().__init__(message, code="bad_data")


def read_label_image(path):
    """Read a 16-bit instance label PNG as int32 (H, W)."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise FileNotFoundError(path)
    if lab.ndim == 3:
        lab = lab[..., 0]
    return lab.astype(np.int32)


def check_label_image(path):
    """Read an instance label PNG as int32 (H, W), or raise :class:`DatasetError` saying why it is not one.

    Accepted: 8- or 16-bit grey (also stored as RGB/RGBA with equal colour
    channels). Refused: unreadable files, colour images (an overlay, a
    colour-coded label picture) and non-integer pixels.
    """
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise DatasetError(f"{path}: not a readable PNG label image")
    if lab.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: not an integer label image (pixels are {lab.dtype}; "
                           "a mask holds 8- or 16-bit whole numbers, 0 = background, one value per particle)")
    if lab.ndim == 3:
        colour = lab[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise DatasetError(f"{path}: a colour image, not an integer label image "
                               "(a mask is one grey channel, 0 = background, one value per particle)")
        lab = lab[..., 0]
    return lab.astype(np.int32)


def image_file(data_dir, name):
    """The image of pair ``name``: ``images/<name>`` with the first of :data:`IMAGE_SUFFIXES` that exists."""
    images = Path(data_dir) / "images"
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{name}{suffix}"
        if path.is_file():
            return path
    return images / f"{name}.png"


def _check_folder(data_dir):
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DatasetError(f"{data_dir}: no such folder")
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir} is a file, not a folder ({LAYOUT})")
    for sub in ("images", "segmaps"):
        if not (data_dir / sub).is_dir():
            raise DatasetError(f"{data_dir} has no {sub}/ folder (a training folder holds {LAYOUT})")


def _entries(folder, suffixes):
    """Visible files in ``folder`` whose suffix (lower case) is one of ``suffixes``."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in suffixes and p.is_file())


def list_pairs(data_dir, strict=False):
    """Names (stems) of the images in ``data_dir/images`` that have a ``segmaps`` twin, sorted.

    Parameters
    ----------
    data_dir : path
    strict : bool
        False (evaluation): images without a mask are passed over. True
        (training): the folder must exist with ``images/`` and ``segmaps/``,
        hold at least one image, every image must have ``segmaps/<name>.png``,
        every mask its image, and no two images may share a name
        (``a.png`` and ``a.tif``); otherwise :class:`DatasetError`. Files of
        other types (``.txt`` notes, hidden files) are ignored either way.

    Raises
    ------
    DatasetError
        With ``strict``, naming the first problem.
    FileNotFoundError
        Without ``strict``, when there is no pair at all.
    """
    data_dir = Path(data_dir)
    if strict:
        _check_folder(data_dir)
    images = _entries(data_dir / "images", IMAGE_SUFFIXES) if (data_dir / "images").is_dir() else []
    segmaps = data_dir / "segmaps"
    stems = {}
    for p in images:
        if strict and p.stem in stems:
            raise DatasetError(f"{data_dir}/images holds two images named {p.stem!r} "
                               f"({stems[p.stem].name} and {p.name}); keep one")
        stems.setdefault(p.stem, p)
    if not strict:
        names = sorted(s for s in stems if (segmaps / f"{s}.png").is_file())
        if not names:
            raise FileNotFoundError(f"no images/*.png with matching segmaps/*.png under {data_dir}")
        return names
    if not stems:
        raise DatasetError(f"{data_dir}/images holds no images (.png, .tif or .tiff); "
                           f"a training folder holds {LAYOUT}")
    for stem, p in sorted(stems.items()):
        if not (segmaps / f"{stem}.png").is_file():
            hint = ""
            for alt in (f"{stem}_labels.png", f"{stem}{p.suffix}", f"{stem}.tif", f"{stem}.tiff"):
                if alt != f"{stem}.png" and (segmaps / alt).is_file():
                    hint = f" (found segmaps/{alt}: rename it {stem}.png)"
                    break
            raise DatasetError(f"{p}: no mask segmaps/{stem}.png{hint}")
    for m in _entries(segmaps, (".png",)):
        if m.stem not in stems:
            raise DatasetError(f"{m}: a mask without its image images/{m.stem}.png (or .tif, .tiff)")
    return sorted(stems)


def class_targets(labels, boundary_width=2):
    """Background (0) / interior (1) / boundary (2) targets from instance labels.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
    boundary_width : int
        Width in pixels of the boundary ring inside each particle.

    Returns
    -------
    ndarray of uint8, shape (H, W)
    """
    size = 2 * boundary_width + 1
    hi = ndi.maximum_filter(labels, size=size, mode="nearest")
    lo = ndi.minimum_filter(labels, size=size, mode="nearest")
    target = (labels > 0).astype(np.uint8)
    target[(labels > 0) & ((hi != labels) | (lo != labels))] = 2
    return target


def read_training_image(path):
    """A training image as uint8 RGB (H, W, 3), read the way the analysis reads it (:func:`saemi.io.load_image`)."""
    from .io import load_image

    try:
        return load_image(path)
    except SaemiError as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def load_dataset(data_dir, names, scale=0.5, boundary_width=2):
    """Images (uint8 RGB) and class targets of the pairs ``names``, resized by ``scale``; plus the labels.

    Each item is ``{"name", "image", "labels", "target"}`` at the network's scale.

    Raises
    ------
    DatasetError
        A mask that is not an integer label image, or whose height and width
        are not its image's (naming both files).
    """
    data_dir = Path(data_dir)
    items = []
    for name in names:
        path = image_file(data_dir, name)
        img = read_training_image(path)
        mask = data_dir / "segmaps" / f"{name}.png"
        lab = check_label_image(mask)
        if lab.shape != img.shape[:2]:
            raise DatasetError(f"{mask}: the mask is {lab.shape[1]}x{lab.shape[0]} pixels but its image "
                               f"{path.name} is {img.shape[1]}x{img.shape[0]}")
        h, w = lab.shape
        sh, sw = max(32, round(h * scale)), max(32, round(w * scale))
        img_s = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        lab_s = cv2.resize(lab, (sw, sh), interpolation=cv2.INTER_NEAREST)
        items.append({"name": name, "image": img_s, "labels": lab_s,
                      "target": class_targets(lab_s, boundary_width)})
    return items


#: Share of the held-out images (``split.json``'s ``val`` of a train/validation split) that
#: :func:`carve_test` moves into ``test``: 35 of EMPS's 55.
TEST_SHARE = 0.64
#: A held-out set smaller than this keeps every image for validation (no test).
MIN_HELD_OUT_FOR_TEST = 10


def typical_diameter(labels):
    """Median equivalent circular diameter (px) of a label image's particles; 0 when it has none."""
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else 0.0


def carve_test(split, data_dir, share=TEST_SHARE, min_held_out=MIN_HELD_OUT_FOR_TEST):
    """Move part of a split's held-out ``val`` images into a ``test`` list, balanced in particle size.

    Deterministic and made from the labels alone (no network): the held-out
    images are sorted by their typical (median) true particle diameter, cut into
    ``n_val = n - round(share * n)`` consecutive groups of near-equal size, and
    in each group the image whose name has the smallest SHA-1 stays in ``val``;
    the others go to ``test``. Every size range thus keeps about the same share
    in both lists. With fewer than ``min_held_out`` held-out images nothing is
    carved (``test`` is empty). ``train`` is untouched.

    Nothing may train, choose checkpoints or tune on ``test``: ``saemi train``
    validates on ``val`` only and ``saemi evaluate --tune`` refuses ``test``.

    Returns
    -------
    dict
        ``split`` with ``val`` and ``test`` (sorted) and ``test_share``.
    """
    import hashlib

    held = sorted(split["val"])
    out = {**split, "test_share": share}
    if len(held) < min_held_out:
        return {**out, "val": held, "test": []}
    size = {n: typical_diameter(read_label_image(Path(data_dir) / "segmaps" / f"{n}.png")) for n in held}
    ordered = sorted(held, key=lambda n: (size[n], n))
    n_val = max(1, len(held) - round(share * len(held)))
    val = [min(group, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
           for group in np.array_split(np.array(ordered, dtype=object), n_val)]
    return {**out, "val": sorted(val), "test": sorted(set(held) - set(val))}
