"""Training augmentations of the v2 recipe (issue 20, items 4 and 5): pure functions on arrays.

Four pieces, each switched by one field of :class:`Recipe` (the one list of the
recipe's settings: ``saemi train``'s flags, :func:`saemi.train.train`'s
``recipe`` and the model card's ``training.recipe`` are all made from it):

* **intensity** (:func:`intensity_augment`): gamma, contrast/brightness,
  inversion, Gaussian and Poisson-like (shot) noise, blur and a smooth
  charging-like brightness field, on the image only;
* **scale** (:func:`draw_scale`, :func:`scaled_crop`): each crop is cut at a
  scale that brings the image's typical particle to a diameter drawn
  log-uniformly over the network's size-normalisation band
  (:data:`saemi.size.DEFAULT_SIZE_NORMALISATION`'s ``network_diameter``)
  widened by :data:`SCALE_BEYOND` on both sides; images are resized with area
  averaging (down) or bilinear interpolation (up) as inference resizes them,
  labels by nearest neighbour so instance labels stay exact;
* **copy-paste** (:func:`particle_bank`, :func:`copy_paste`): real particles
  (image patch and instance mask) cut from the training images are pasted into
  a crop as a dense cluster of touching and overlapping particles; a later
  paste occludes an earlier one and the instance labels stay exact;
* **hard-image sampling** (:func:`hard_factors`, :func:`hard_weights`,
  :func:`update_losses`): images whose recent training loss is high are drawn
  more often.

Every random function takes a seeded :class:`numpy.random.Generator`; none
changes its inputs. Only numpy, OpenCV and SciPy (no torch).

Nothing here has been measured by a training run yet (no GPU was lent to the
session that wrote it, and a CPU run takes hours); the probabilities and
ranges below are starting points, not tuned values.
"""

import argparse
import math
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np

# --------------------------------------------------------------------------- the recipe (one place)

#: The scale augmentation reaches this factor beyond each end of the network's size band.
SCALE_BEYOND = 1.5
#: The v1 recipe's scale jitter (also used for an image without particles).
V1_SCALE_JITTER = (0.7, 1.4)



def _probability(text):
    """An argparse type: a number in [0, 1]."""
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return p


@dataclass(frozen=True)
class Recipe:
    """The training-recipe switches of issue 20; defaults are the v2 recipe.

    Each field is one ``saemi train`` flag (``intensity_aug`` is
    ``--intensity-aug`` / ``--no-intensity-aug``; ``copy_paste`` is
    ``--copy-paste P``), its help text is the field's ``help`` metadata, and
    :meth:`card` is what the model card records. :data:`V1_RECIPE` (all off)
    is the recipe of the shipped weights: with it a run draws exactly the crops
    of a run made before this module existed.
    """

    intensity_aug: bool = field(default=True, metadata={"help": (
        "strong intensity augmentation of each crop (gamma, contrast/brightness, inversion, Gaussian and shot "
        "noise, blur, a smooth charging-like gradient; saemi.augment.intensity_augment); off: the v1 jitter")})
    scale_aug: bool = field(default=True, metadata={"help": (
        "cut each crop at a scale that brings the image's typical particle to a diameter drawn log-uniformly "
        f"over the network's size band widened {SCALE_BEYOND:g}x each side (saemi.augment.draw_scale); off: the "
        f"v1 x{V1_SCALE_JITTER[0]:g}-x{V1_SCALE_JITTER[1]:g} jitter")})
    copy_paste: float = field(default=0.5, metadata={"help": (
        "probability that a crop gets a dense cluster of real training particles pasted into it, touching and "
        "overlapping, with exact labels (saemi.augment.copy_paste); 0 turns it off"), "type": _probability,
        "metavar": "P"})
    hard_sampling: bool = field(default=True, metadata={"help": (
        "draw training images in proportion to their recent training loss (saemi.augment.hard_factors); "
        "off: uniform (times --extra-weight)")})

    def __post_init__(self):
        if not 0.0 <= float(self.copy_paste) <= 1.0:
            raise ValueError(f"copy_paste must be a probability in [0, 1], got {self.copy_paste!r}")

    def crop_path(self):
        """True when crops go through the v2 crop (:func:`saemi.train.recipe_crop`) rather than v1's."""
        return self.intensity_aug or self.scale_aug or self.copy_paste > 0

    def card(self, band=None):
        """The recipe as the model card records it: the switches, and the fixed rules they stand for."""
        out = asdict(self)
        if self.scale_aug:
            out["scale_target_diameter_px"] = [round(float(v), 2) for v in (band or scale_band())]
        if self.hard_sampling:
            out["hard_sampling_rule"] = dict(HARD_SAMPLING)
        return out


#: The recipe the shipped weights were trained with (every v2 augmentation off).
V1_RECIPE = Recipe(intensity_aug=False, scale_aug=False, copy_paste=0.0, hard_sampling=False)


def add_recipe_arguments(parser):
    """Add one flag per :class:`Recipe` field to an argparse parser (defaults: the v2 recipe)."""
    default = Recipe()
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(default, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value,
                                help=f.metadata["help"] + f" (default: {'on' if value else 'off'})")
        else:
            parser.add_argument(flag, type=f.metadata["type"], default=value, metavar=f.metadata["metavar"],
                                help=f.metadata["help"] + f" (default {value:g})")


def recipe_from_args(args):
    """The :class:`Recipe` of parsed ``saemi train`` arguments."""
    return Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})


def recipe_from_card(values):
    """A :class:`Recipe` from a card's or a checkpoint's ``recipe`` dict (unknown keys ignored).

    A checkpoint or card without a recipe was written before the recipe existed: :data:`V1_RECIPE`.
    """
    if not values:
        return V1_RECIPE
    names = {f.name for f in fields(Recipe)}
    return Recipe(**{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------- intensity

#: Probabilities and ranges of :func:`intensity_augment` (fractions of the image's full range).
INTENSITY = {
    "invert_p": 0.3,            # bright particles on dark and dark on bright
    "log_gamma": 0.5,           # gamma = exp(U(-0.5, 0.5)): 0.61 to 1.65
    "contrast": (0.25, 1.6),    # log-uniform; 0.25 is a dark, narrow-band frame (the Au frames of issue 20)
    "brightness": 0.2,          # U(-0.2, 0.2)
    "charging_p": 0.3,
    "charging_amplitude": (0.05, 0.25),
    "blur_p": 0.25,
    "blur_sigma": (0.5, 2.0),   # px
    "gauss_p": 0.3,
    "gauss_sigma": (0.01, 0.1),
    "shot_p": 0.2,
    "shot_photons": (10.0, 300.0),  # log-uniform: counts at full brightness
}


def _full_scale(dtype):
    """The value of full brightness for an image dtype: 255, 65535, or 1.0 (float images in [0, 1])."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype.kind == "f":
        return 1.0
    raise TypeError(f"images must be uint8, uint16 or float in [0, 1], not {dtype}")


def to_unit(image):
    """``image`` as float32 in [0, 1] (uint8 / 255, uint16 / 65535, float as it is)."""
    return np.asarray(image, np.float32) / np.float32(_full_scale(image.dtype))


def from_unit(x, dtype):
    """Float values in [0, 1] (clipped) back to ``dtype``'s range (rounded for integer types)."""
    top = _full_scale(dtype)
    x = np.clip(x, 0.0, 1.0) * top
    return (np.rint(x) if np.dtype(dtype).kind == "u" else x).astype(dtype)


def invert(image):
    """Contrast inversion: ``full - image`` (exact for integer images, ``1 - image`` for float).

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, C), uint8, uint16 or float in [0, 1]

    Returns
    -------
    ndarray, same shape and dtype
    """
    top = _full_scale(image.dtype)
    return (np.asarray(top, image.dtype) - image).astype(image.dtype)


def adjust_gamma(image, gamma):
    """``image ** gamma`` on the unit range; same shape and dtype (gamma > 1 darkens the mid-tones)."""
    return from_unit(to_unit(image) ** np.float32(gamma), image.dtype)


def adjust_contrast(image, contrast, brightness=0.0):
    """Stretch about the image's mean by ``contrast`` and shift by ``brightness`` (a fraction of the range).

    Returns an image of the same shape and dtype, clipped to its range.
    """
    x = to_unit(image)
    m = np.float32(x.mean())
    return from_unit((x - m) * np.float32(contrast) + m + np.float32(brightness), image.dtype)


def blur(image, sigma):
    """Gaussian blur of ``sigma`` pixels (each channel); same shape and dtype."""
    x = cv2.GaussianBlur(to_unit(image), (0, 0), float(sigma))
    return from_unit(x.reshape(image.shape), image.dtype)


def gaussian_noise(image, sigma, rng):
    """Additive Gaussian noise of ``sigma`` (a fraction of the range), one draw per pixel and channel."""
    x = to_unit(image)
    return from_unit(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), image.dtype)


def shot_noise(image, photons, rng):
    """Poisson-like (shot) noise: each value becomes ``Poisson(value * photons) / photons``.

    ``photons`` is the count at full brightness: fewer counts, more noise, and
    more noise in bright pixels than in dark ones (as in a low-dose frame).
    """
    x = to_unit(image)
    return from_unit(rng.poisson(x * float(photons)).astype(np.float32) / np.float32(photons), image.dtype)


def charging_field(shape, amplitude, rng, cells=3):
    """A smooth brightness field like the charging of an insulating sample: a ramp plus broad bumps.

    A random linear ramp across the frame plus random values on a coarse grid of
    ``cells + 1`` nodes a side, interpolated bicubically, scaled so that its
    largest absolute value is ``amplitude``. Its steepest step between
    neighbouring pixels is a few times ``amplitude / min(H, W)``.

    Parameters
    ----------
    shape : tuple (H, W)
    amplitude : float
        Peak brightness change, a fraction of the range.
    rng : numpy.random.Generator
    cells : int
        How many bumps fit across the frame (about).

    Returns
    -------
    ndarray float32 (H, W), values in [-amplitude, amplitude]
    """
    h, w = int(shape[0]), int(shape[1])
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    bumps = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(theta) * (xx / max(w - 1, 1) - 0.5) + math.sin(theta) * (yy / max(h - 1, 1) - 0.5)) * 2
    f = bumps + ramp.astype(np.float32)
    peak = float(np.abs(f).max())
    return (f * np.float32(amplitude / peak)) if peak > 0 else np.zeros((h, w), np.float32)


def add_field(image, field_):
    """``image`` plus a brightness field (H, W) in units of the range, on every channel; same dtype."""
    x = to_unit(image)
    return from_unit(x + (field_[..., None] if x.ndim == 3 else field_), image.dtype)


def _log_uniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def intensity_augment(image, rng, cfg=None):
    """Strong random intensity augmentation of one image (labels are not touched: pass them on as they are).

    In this order, each with the probability and range of :data:`INTENSITY`
    (``cfg`` overrides entries): inversion, gamma, contrast and brightness
    (always), a charging field (:func:`charging_field`), blur, Gaussian noise,
    shot noise.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, C), uint8, uint16 or float in [0, 1]
    rng : numpy.random.Generator
    cfg : dict, optional

    Returns
    -------
    ndarray, same shape and dtype, values within the dtype's range
    """
    c = {**INTENSITY, **(cfg or {})}
    out = image
    if rng.random() < c["invert_p"]:
        out = invert(out)
    out = adjust_gamma(out, math.exp(rng.uniform(-c["log_gamma"], c["log_gamma"])))
    out = adjust_contrast(out, _log_uniform(rng, *c["contrast"]), rng.uniform(-c["brightness"], c["brightness"]))
    if rng.random() < c["charging_p"]:
        out = add_field(out, charging_field(out.shape[:2], rng.uniform(*c["charging_amplitude"]), rng))
    if rng.random() < c["blur_p"]:
        out = blur(out, rng.uniform(*c["blur_sigma"]))
    if rng.random() < c["gauss_p"]:
        out = gaussian_noise(out, rng.uniform(*c["gauss_sigma"]), rng)
    if rng.random() < c["shot_p"]:
        out = shot_noise(out, _log_uniform(rng, *c["shot_photons"]), rng)
    return out


# --------------------------------------------------------------------------- scale

def scale_band(card=None, beyond=SCALE_BEYOND):
    """Typical particle diameters (px at the network) the scale augmentation draws from.

    The card's ``size_normalisation`` band (:func:`saemi.size.size_normalisation`:
    the range inference brings every image's typical particle into), widened by
    ``beyond`` at both ends: [16, 256] px -> [10.7, 384] px.
    """
    from .size import size_normalisation

    low, high = (float(v) for v in size_normalisation(card)["network_diameter"])
    return low / beyond, high * beyond


def draw_scale(diameter, rng, band=None):
    """A crop's scale factor: brings ``diameter`` to a log-uniform draw over ``band``.

    Parameters
    ----------
    diameter : float
        The image's typical particle diameter in its own pixels
        (:func:`saemi.size.typical_diameter`, the estimate inference works with).
    rng : numpy.random.Generator
    band : (float, float), optional
        Target diameters in pixels after scaling (default :func:`scale_band`).

    Returns
    -------
    float
        ``target / diameter``; for an image without particles (``diameter`` not
        above 0, or NaN) the v1 jitter, log-uniform in :data:`V1_SCALE_JITTER`.
    """
    if not (diameter and diameter > 0 and math.isfinite(diameter)):
        return _log_uniform(rng, *V1_SCALE_JITTER)
    lo, hi = band or scale_band()
    return _log_uniform(rng, lo, hi) / float(diameter)


def resize_labels(labels, shape):
    """Instance labels resized to ``shape`` (H, W) by nearest neighbour at pixel centres (no new values)."""
    from .size import upsample_labels  # nearest at pixel centres, in either direction

    return upsample_labels(labels, shape)


def resize_image(image, shape):
    """``image`` resized to ``shape`` (H, W): area averaging when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == tuple(shape):
        return image
    interp = cv2.INTER_AREA if shape[0] * shape[1] < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (int(shape[1]), int(shape[0])), interpolation=interp)


def rescale_pair(image, labels, s):
    """An image and its instance labels resized by ``s``.

    Parameters
    ----------
    image : ndarray (H, W) or (H, W, C)
    labels : ndarray of int (H, W)
    s : float
        Scale factor (> 0); the output is ``max(1, round(H s)) x max(1, round(W s))``.

    Returns
    -------
    image : ndarray, the input's dtype
    labels : ndarray int32
        Every value is one of the input's: a particle's area scales by about
        ``s**2``; one narrower than about ``1 / s`` pixels can vanish.
    """
    h, w = labels.shape
    shape = (max(1, round(h * s)), max(1, round(w * s)))
    return resize_image(image, shape), resize_labels(labels, shape)


def scaled_crop(image, labels, crop, s, rng):
    """A random ``crop`` x ``crop`` window of the pair at scale ``s``.

    A window of ``round(crop / s)`` pixels is cut (the pair padded by
    reflection at the bottom and right when smaller), then resized to ``crop``
    with :func:`resize_image` and :func:`resize_labels`.

    Returns
    -------
    image : ndarray (crop, crop[, C]), the input's dtype
    labels : ndarray int32 (crop, crop)
    scale : float
        The scale achieved, ``crop / window``.
    """
    side = max(1, int(round(crop / s)))
    h, w = labels.shape
    if h < side or w < side:
        ph, pw = max(0, side - h), max(0, side - w)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        labels = cv2.copyMakeBorder(labels.astype(np.int32), 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        h, w = labels.shape
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    win_i, win_l = image[y0:y0 + side, x0:x0 + side], labels[y0:y0 + side, x0:x0 + side]
    return resize_image(win_i, (crop, crop)), resize_labels(win_l, (crop, crop)), crop / side


# --------------------------------------------------------------------------- copy-paste

#: The copy-paste recipe: how many particles a cluster holds at most, how far apart neighbours are
#: (centre distance as a fraction of the sum of their radii: under 1 overlaps), the size jitter of
#: a pasted particle about the crop's typical diameter, the share of the crop a cluster covers, and
#: how often a cluster is made of the crop's own image's particles (same kind, same contrast).
COPY_PASTE = {"max_particles": 12, "min_particles": 3, "gap": (0.55, 0.95), "size_jitter": (0.8, 1.25),
              "cover": 0.4, "per_image": 48, "min_area": 16, "own_p": 0.5}


def _grey(image):
    return image.mean(axis=2) if image.ndim == 3 else image.astype(np.float64)


def _contrast_stats(image, labels):
    """(background mean, particle mean or NaN, std) of an image's grey values, for intensity matching."""
    g = _grey(image)
    bg = labels == 0
    bg_mean = float(g[bg].mean()) if bg.any() else float(g.mean())
    fg_mean = float(g[~bg].mean()) if (~bg).sum() >= 16 else float("nan")
    return bg_mean, fg_mean, float(g.std())


def particle_bank(items, rng, per_image=None, min_area=None):
    """Real particles to paste: image patch and mask of up to ``per_image`` whole particles per image.

    A particle is left out when it touches the image's border (cut by it) or
    covers under ``min_area`` pixels.

    Parameters
    ----------
    items : list of dict
        Training items with ``image`` (H, W, 3) uint8, ``labels`` (H, W) int
        and ``name`` (:func:`saemi.dataset.load_dataset`); training images only.
    rng : numpy.random.Generator
        Picks the particles of an image that has more than ``per_image``.

    Returns
    -------
    list of dict
        ``image`` (h, w, 3) uint8 (the bounding box), ``mask`` (h, w) bool,
        ``diameter`` (px, equivalent circular), ``source`` (the image's name)
        and ``stats`` (the source's background mean, particle mean, std; see
        :func:`match_intensity`).
    """
    from scipy import ndimage as ndi

    per_image = COPY_PASTE["per_image"] if per_image is None else per_image
    min_area = COPY_PASTE["min_area"] if min_area is None else min_area
    bank = []
    for it in items:
        img, lab = it["image"], np.asarray(it["labels"])
        h, w = lab.shape
        stats = _contrast_stats(img, lab)
        ok = []
        for i, sl in enumerate(ndi.find_objects(lab)):
            if sl is None or sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w:
                continue
            mask = lab[sl] == i + 1
            if mask.sum() >= min_area:
                ok.append((sl, mask))
        if len(ok) > per_image:
            ok = [ok[j] for j in sorted(rng.choice(len(ok), per_image, replace=False))]
        for sl, mask in ok:
            bank.append({"image": img[sl].copy(), "mask": mask, "diameter": math.sqrt(4 * mask.sum() / math.pi),
                         "source": it.get("name"), "stats": stats})
    return bank


def match_intensity(patch, src, dst):
    """A patch's grey levels mapped from its source image's contrast to the destination's.

    ``value -> dst_bg + sign * (value - src_bg) * clip(dst_std / src_std, 0.5, 2)``,
    where ``sign`` is -1 when the particles are dark on bright in one image and
    bright on dark in the other (both known), else +1.

    Parameters
    ----------
    patch : ndarray (h, w[, C]) uint8
    src, dst : tuple (background mean, particle mean or NaN, std)

    Returns
    -------
    ndarray, patch's shape, uint8
    """
    sign = 1.0
    if math.isfinite(src[1]) and math.isfinite(dst[1]) and (src[1] - src[0]) * (dst[1] - dst[0]) < 0:
        sign = -1.0
    ratio = float(np.clip(dst[2] / src[2], 0.5, 2.0)) if src[2] > 1e-6 and dst[2] > 1e-6 else 1.0
    out = dst[0] + sign * (patch.astype(np.float32) - src[0]) * ratio
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paste(image, labels, patch, mask, y0, x0, label):
    """Paste one particle with its top-left corner at (y0, x0), clipped to the frame; returns new arrays.

    Pixels under ``mask`` take the patch's values and the label ``label``
    (occluding whatever was there); the rest is unchanged.

    Returns
    -------
    image : ndarray, the input's shape and dtype
    labels : ndarray int32
    visible : int
        How many of the particle's pixels landed inside the frame.
    """
    image, labels = image.copy(), labels.astype(np.int32, copy=True)
    h, w = labels.shape
    ph, pw = mask.shape
    ya, yb, xa, xb = max(0, y0), min(h, y0 + ph), max(0, x0), min(w, x0 + pw)
    if ya >= yb or xa >= xb:
        return image, labels, 0
    m = mask[ya - y0:yb - y0, xa - x0:xb - x0]
    image[ya:yb, xa:xb][m] = patch[ya - y0:yb - y0, xa - x0:xb - x0][m]
    labels[ya:yb, xa:xb][m] = label
    return image, labels, int(m.sum())


def copy_paste(image, labels, bank, rng, diameter=None, n=None, match=True, source=None):
    """Paste a dense cluster of real particles into a crop, with exact instance labels.

    The first particle lands at a uniform random centre; each next one beside a
    randomly chosen earlier one, at a centre distance of ``U(gap)`` times the sum
    of their radii (:data:`COPY_PASTE`: under 1, so they overlap), in a random
    direction. Each is first resized to ``diameter`` times a log-uniform
    ``size_jitter`` (when ``diameter`` is given), rotated by a multiple of 90
    degrees and maybe mirrored (the mask of a resized particle is its mask resized
    bilinearly and thresholded at 0.5), and with ``match`` its grey levels are mapped to
    the crop's (:func:`match_intensity`). A later paste occludes an earlier one
    and the crop's own particles. With ``source`` (the crop's image's name), a
    cluster is made with probability ``own_p`` of that image's particles alone
    (when the bank holds any), else of the whole bank's.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
    labels : ndarray of int (H, W)
    bank : list of dict
        :func:`particle_bank`.
    rng : numpy.random.Generator
    diameter : float, optional
        Typical particle diameter in the crop (px); None keeps each particle's size.
    source : str, optional
        The name of the crop's image (``source`` of its bank particles).
    n : int, optional
        How many particles; default a uniform draw from ``min_particles`` to
        ``max_particles``, fewer for large particles (the cluster covers at most
        about ``cover`` of the crop, at least 2 particles).

    Returns
    -------
    image : ndarray (H, W, 3) uint8
    labels : ndarray int32 (H, W)
        Pasted particles get the labels ``labels.max() + 1``, ``+ 2``, ... in
        pasting order; recompute class targets from these
        (:func:`saemi.dataset.class_targets`).
    placements : list of dict
        Per pasted particle in order: ``label``, ``y0``, ``x0``, the
        ``mask`` (h, w) bool as pasted and ``particle`` (its index in
        ``bank``), so that every pixel can be checked.
    """
    cfg = COPY_PASTE
    out_i, out_l = image, np.asarray(labels).astype(np.int32)
    h, w = out_l.shape
    if not bank:
        return out_i, out_l, []
    pool = range(len(bank))
    if source is not None and rng.random() < cfg["own_p"]:
        own = [i for i, p in enumerate(bank) if p["source"] == source]
        pool = own or pool
    if n is None:
        d = diameter or float(np.median([bank[i]["diameter"] for i in pool]))
        most = int(np.clip(cfg["cover"] * h * w / max(d * d, 1.0), 2, cfg["max_particles"]))
        n = int(rng.integers(min(cfg["min_particles"], most), most + 1))
    dst = _contrast_stats(out_i, out_l)
    next_label = int(out_l.max()) + 1
    placed, placements = [], []
    for _ in range(n):
        index = int(pool[int(rng.integers(len(pool)))])
        p = bank[index]
        patch, mask = p["image"], p["mask"]
        if diameter:
            f = diameter * _log_uniform(rng, *cfg["size_jitter"]) / p["diameter"]
            shape = (max(1, round(mask.shape[0] * f)), max(1, round(mask.shape[1] * f)))
            # the one particle's mask resized smoothly and thresholded (no staircase when enlarged);
            # the labels are then made from this mask, so they stay exact
            patch, mask = resize_image(patch, shape), resize_image(mask.astype(np.float32), shape) > 0.5
        if not mask.any():
            continue
        k = int(rng.integers(4))
        patch, mask = np.rot90(patch, k), np.rot90(mask, k)
        if rng.random() < 0.5:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        if match:
            patch = match_intensity(patch, p["stats"], dst)
        ph, pw = mask.shape
        r = math.sqrt(mask.sum() / math.pi)
        if not placed:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        else:
            ay, ax, ar = placed[int(rng.integers(len(placed)))]
            theta, dist = rng.uniform(0, 2 * math.pi), (ar + r) * rng.uniform(*cfg["gap"])
            cy, cx = ay + dist * math.sin(theta), ax + dist * math.cos(theta)
        y0, x0 = int(round(cy - ph / 2)), int(round(cx - pw / 2))
        out_i, out_l, visible = paste(out_i, out_l, patch, mask, y0, x0, next_label)
        if visible == 0:
            continue
        placements.append({"label": next_label, "y0": y0, "x0": x0, "mask": np.ascontiguousarray(mask),
                           "particle": index})
        placed.append((cy, cx, r))
        next_label += 1
    return out_i, out_l, placements


# --------------------------------------------------------------------------- hard-image sampling

#: The hard-sampling rule: each image's loss is an exponential moving average (``momentum``: the
#: weight of the newest crop's loss); its sampling factor is ``clip((loss / mean loss) ** power,
#: floor, cap)``; an image not drawn yet counts as average (factor 1).
HARD_SAMPLING = {"momentum": 0.3, "power": 1.0, "floor": 0.25, "cap": 4.0}


def update_losses(losses, picks, values, momentum=None):
    """Per-image running losses after one batch.

    Parameters
    ----------
    losses : ndarray float (N,)
        Running loss per training image; NaN where an image was never drawn.
    picks : sequence of int
        The image index of each crop of the batch.
    values : sequence of float
        Each crop's loss (per-pixel cross-entropy, averaged over the crop).
    momentum : float, optional
        Weight of a new value (default ``HARD_SAMPLING["momentum"]``); a first value is taken as it is.

    Returns
    -------
    ndarray float64 (N,), a new array
    """
    m = HARD_SAMPLING["momentum"] if momentum is None else momentum
    out = np.array(losses, dtype=np.float64, copy=True)
    for i, v in zip(picks, values):
        v = float(v)
        if not math.isfinite(v):
            continue
        out[i] = v if not math.isfinite(out[i]) else (1 - m) * out[i] + m * v
    return out


def hard_factors(losses, power=None, floor=None, cap=None):
    """Sampling factor per image from its running loss (:data:`HARD_SAMPLING`'s rule).

    ``clip((loss_i / mean) ** power, floor, cap)`` with ``mean`` over the images
    with a loss; 1 for an image without one (NaN), and 1 for all when none has
    one or the mean is not above 0. Non-decreasing in the loss.

    Returns
    -------
    ndarray float64 (N,), each in [floor, cap]
    """
    rule = HARD_SAMPLING
    power = rule["power"] if power is None else power
    floor = rule["floor"] if floor is None else floor
    cap = rule["cap"] if cap is None else cap
    losses = np.asarray(losses, dtype=np.float64)
    known = np.isfinite(losses)
    out = np.ones(losses.shape)
    if not known.any():
        return out
    mean = float(losses[known].mean())
    if not mean > 0:
        return out
    out[known] = np.clip(np.maximum(losses[known], 0.0) / mean, 0.0, None) ** power
    return np.clip(out, floor, cap)


def hard_weights(losses, base=None, **rule):
    """The probability of drawing each image: ``base * hard_factors(losses)``, normalised to sum 1.

    Parameters
    ----------
    losses : ndarray float (N,)
        Running losses (NaN: not drawn yet).
    base : sequence of float (N,), optional
        Prior weights (``--extra-weight``); default all 1.

    Returns
    -------
    ndarray float64 (N,), non-negative, summing to 1
    """
    f = hard_factors(losses, **rule)
    w = f * (np.ones_like(f) if base is None else np.asarray(base, dtype=np.float64))
    return w / w.sum()
