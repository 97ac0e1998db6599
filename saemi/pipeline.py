"""One call from an image to measured particles: the path the CLI, API and UI share.

The work splits in two so that the web layers can cache the expensive half:

* :func:`segment` — load, banner removal, network: the per-pixel probabilities.
* :func:`split_and_measure` — instance splitting, removed particles, table and
  summary; cheap, re-run whenever a slider moves.

:func:`analyze` runs both.
"""

import functools
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from . import budget
from .banner import find_banner, remove_banner
from .calibration import Calibration, effective_calibration
from .card import read_card
from .instances import filter_particles, foreground, remove_labels, split_touching
from .io import check_content, read_micrograph
from .measure import add_physical_columns, kept_particles, particle_table, summarize, with_origin
from .probability import resize_probability
from .scalebar import detect_scale
from .settings import Settings
from .size import (estimate_diameter, fit_to_mask, resize_image, scaled_box, size_normalisation, upsample_labels,
                   working_scale)

#: How :mod:`saemi.cache` restores the Segmentation fields it stores as JSON (``to_dict``).
SEGMENTATION_FIELD_DECODERS = {"calibration": Calibration.from_dict}


@dataclass
class Segmentation:
    """The expensive, settings-independent half of an analysis.

    Attributes
    ----------
    image : ndarray (H, W, 3) uint8
        The image as loaded (banner still in it).
    cleaned : ndarray (H, W, 3) uint8
        What the network saw (banner filled).
    probability : ndarray (C, H, W) float32
        Class probabilities (background first).
    banner_box : tuple (y0, y1, x0, x1) or None
    scale : saemi.scalebar.Scale or None
        The scale bar read in the image (before banner removal), if any.
    timings : dict
        Seconds per stage: load, scale, banner, network.
    network_probability : ndarray (C, h, w) float32 or None
        The same probabilities at the network's working scale, where the network
        has one; ``probability`` is this resized (see :mod:`saemi.probability`).
        What the re-analysis cache stores.
    calibration : saemi.calibration.Calibration
        What the file itself carries (see :func:`saemi.io.read_micrograph`);
        the calibration in force for some settings is :func:`effective_calibration_of`.
    network_scale : float
        Pixels of ``network_probability`` per image pixel (the working scale of
        :mod:`saemi.size`); 1.0 without a network scale.
    diameter : float or None
        The typical particle diameter (px) the image was normalised to; None
        when no particle was found to estimate it.
    diameter_source : {'estimated', 'user'} or None
    """

    image: np.ndarray
    cleaned: np.ndarray
    probability: np.ndarray
    banner_box: tuple = None
    timings: dict = field(default_factory=dict)
    scale: object = None
    network_probability: np.ndarray = None
    calibration: Calibration = field(default_factory=Calibration)
    network_scale: float = 1.0
    diameter: float = None
    diameter_source: str = None


@dataclass
class Analysis:
    """The result of :func:`analyze`: a :class:`Segmentation` plus particles.

    Attributes
    ----------
    labels : ndarray (H, W) int32
        0 = background, 1..N particles. Particles the user removed
        (``settings.removed_labels``) are zeroed without renumbering the rest,
        so a label keeps its id while the user clicks particles away.
    table : pandas.DataFrame
        See :func:`saemi.measure.particle_table`.
    summary : dict
        See :func:`saemi.measure.summarize`.
    settings : Settings
    split_labels : ndarray (H, W) int32
        The labels before the user's exclusions (every particle found).
    """

    segmentation: Segmentation
    labels: np.ndarray
    table: pd.DataFrame
    summary: dict
    settings: Settings
    timings: dict = field(default_factory=dict)
    split_labels: np.ndarray = None

    @property
    def probability(self):
        return self.segmentation.probability

    @property
    def banner_box(self):
        return self.segmentation.banner_box

    @property
    def nm_per_pixel(self):
        """The calibration used: the user's, else the file's, else the scale bar's (auto), else None."""
        return self.calibration.nm_per_pixel

    @property
    def calibration(self):
        """The calibration record in force (:class:`saemi.calibration.Calibration`)."""
        return effective_calibration_of(self.segmentation, self.settings)


def diameter_fields(segmentation):
    """``{"diameter": px or None, "diameter_source": "estimated" | "user" | None}`` of a segmentation.

    What the API's records and the CLI's ``summary.csv`` report: the typical
    particle diameter the image was normalised to and where it came from.
    """
    d = getattr(segmentation, "diameter", None)
    return {"diameter": None if d is None else round(float(d), 2),
            "diameter_source": getattr(segmentation, "diameter_source", None)}


def effective_calibration_of(segmentation, settings):
    """The calibration record for a segmentation under some settings.

    The user's ``nm_per_pixel`` wins; else the file's pixel size; else the
    detected scale bar's when ``scale_bar='auto'``. Disagreements are warnings in
    the record (see :func:`saemi.calibration.effective_calibration`).
    """
    return effective_calibration(getattr(segmentation, "calibration", None), segmentation.scale,
                                 settings.nm_per_pixel, settings.scale_bar)


def effective_nm_per_pixel(segmentation, settings):
    """The nm per pixel in force: the user's, else the file's, else the scale bar's (``scale_bar='auto'``)."""
    return effective_calibration_of(segmentation, settings).nm_per_pixel


@functools.lru_cache(maxsize=4)
def default_segmenter(weights=None, device="auto"):
    """The trained network, loaded once per process and per (weights, device)."""
    from .model import load_segmenter

    return load_segmenter(weights, device)


def segment(image, segmenter=None, remove_banner_first=True, max_pixels=None, detect_scale_bar=True,
            deadline=None, filename=None, diameter=None, full_probability=True):
    """Load an image and its calibration, read its scale bar, remove its data bar and run the network.

    Parameters
    ----------
    image : bytes, path or ndarray
        Anything :func:`saemi.io.read_micrograph` reads.
    segmenter : saemi.model.Segmenter, optional
        Default: the bundled trained weights on the best device.
    detect_scale_bar : bool
        Read the scale bar (before the banner holding it is filled).
    deadline : saemi.budget.Deadline, optional
        Checked between stages and network tiles (code ``timeout`` past it).
    filename : str, optional
        The upload's name, for bytes whose format only the suffix tells (MRC).
    diameter : float, optional
        Typical particle diameter (px); default: estimated (see :func:`network_pass`).
    full_probability : bool
        False: leave ``probability`` None where the network ran at another scale
        (``network_probability`` holds it), for a caller that only stores the
        segmentation and rebuilds it from the store (the service: a 12-megapixel
        image's resize costs about 0.4 s).

    Returns
    -------
    Segmentation
    """
    t = time.perf_counter()
    img, calibration = read_micrograph(image, filename=filename, max_pixels=max_pixels)
    check_content(img)
    t_load = time.perf_counter()
    # the data bar is found once: the scale-bar reader reads around it, and it is then filled
    banner = find_banner(img) if remove_banner_first or detect_scale_bar else None
    budget.check(deadline, "reading the scale bar")
    scale = detect_scale(img, banner=banner) if detect_scale_bar else None
    t_scale = time.perf_counter()
    budget.check(deadline, "removing the data bar")
    cleaned, box = remove_banner(img, banner) if remove_banner_first else (img, None)
    t_banner = time.perf_counter()
    seg = segmenter if segmenter is not None else default_segmenter()
    budget.check(deadline, "the network")
    network_prob, network_scale, d, source = network_pass(seg, cleaned, box, diameter, deadline)
    resized = network_prob.shape[1:] != cleaned.shape[:2]
    prob = resize_probability(network_prob, cleaned.shape[:2]) if full_probability or not resized else None
    t_net = time.perf_counter()
    return Segmentation(img, cleaned, prob, box,
                        {"load": t_load - t, "scale": t_scale - t_load, "banner": t_banner - t_scale,
                         "network": t_net - t_banner}, scale,
                        network_prob if resized else None,
                        calibration=calibration, network_scale=network_scale, diameter=d, diameter_source=source)


def network_pass(segmenter, cleaned, banner_box=None, diameter=None, deadline=None):
    """Size-normalised class probabilities of an image (see :mod:`saemi.size`).

    With ``diameter`` the image is resized once, to :func:`saemi.size.working_scale`.
    Without it the network first runs at the card's ``input_scale`` and the
    typical diameter is estimated there (:func:`saemi.size.estimate_diameter`).
    When no particle is found there it looks once more at ``search_scale``
    (or the largest scale allowed, if smaller); when the typical particle spans
    under ``small_at_network`` pixels it is measured again at the working scale
    of that first estimate. Then the network runs at the working scale of the
    estimate unless the pass it has is within ``scale_tolerance`` of it (most
    images: one pass, as before size normalisation).

    Parameters
    ----------
    segmenter : saemi.model.Segmenter or saemi.engine.EngineSegmenter
        One with ``predict_resized``; another (``predict`` only) runs at full
        resolution, its diameter estimated there.
    cleaned : ndarray, shape (H, W, 3), uint8
    banner_box : tuple (y0, y1, x0, x1), optional
        The filled data bar: no particle is looked for there.
    diameter : float, optional
    deadline : saemi.budget.Deadline, optional

    Returns
    -------
    prob : ndarray, shape (C, h, w), float32
    scale : float
        ``h / H`` (mean of both axes).
    diameter : float or None
        Full-resolution pixels; None when nothing was found to estimate it from.
    source : {'user', 'estimated'}
    """
    shape = cleaned.shape[:2]

    def run(scale):
        small, achieved = resize_image(cleaned, scale)
        return segmenter.predict_resized(small, deadline), achieved

    def estimate(prob, scale):
        valid = None if banner_box is None else _region(prob.shape[1:], scaled_box(banner_box, scale, prob.shape[1:]))
        d = estimate_diameter(prob, scale, valid)
        return d if np.isfinite(d) else None

    if not hasattr(segmenter, "predict_resized"):
        prob = segmenter.predict(cleaned) if deadline is None else segmenter.predict(cleaned, deadline=deadline)
        d = float(diameter) if diameter is not None else estimate(prob, 1.0)
        return prob, 1.0, d, "user" if diameter is not None else "estimated"
    card = segmenter.card
    if diameter is not None:
        prob, scale = run(working_scale(float(diameter), shape, card))
        return prob, scale, float(diameter), "user"
    cfg = size_normalisation(card)
    tolerance = float(cfg["scale_tolerance"])
    prob, scale = run(float(card.get("input_scale", 1.0)))
    d = estimate(prob, scale)
    if d is None:
        # nothing seen at all: particles may be too small for this pass; look once more, larger
        search = min(working_scale(1e-9, shape, card), float(cfg["search_scale"]))
        if search > scale * tolerance:
            prob, scale = run(search)
            d = estimate(prob, scale)
        if d is None:
            return prob, scale, None, "estimated"
    elif d * scale < float(cfg["small_at_network"]):
        # seen, but too small to be measured well here: measure again where they should be large enough
        finer = working_scale(d, shape, card)
        if finer > scale * tolerance:
            prob, scale = run(finer)
            d = estimate(prob, scale) or d
    wanted = working_scale(d, shape, card)
    if abs(np.log(wanted / scale)) > np.log(tolerance):
        prob, scale = run(wanted)
    return prob, scale, d, "estimated"


def resegment(segmentation, segmenter=None, diameter=None, deadline=None):
    """The network run again on a segmentation's image for another typical ``diameter``.

    What a re-analysis by ``image_id`` with a new ``diameter`` needs: the image,
    its data bar, scale bar and calibration are kept; only the network's pass
    (:func:`network_pass`) is redone.

    Returns
    -------
    Segmentation
    """
    seg = segmenter if segmenter is not None else default_segmenter()
    t = time.perf_counter()
    image = np.asarray(segmentation.image)
    cleaned = remove_banner(image, segmentation.banner_box)[0] if segmentation.banner_box is not None else image
    network_prob, network_scale, d, source = network_pass(seg, cleaned, segmentation.banner_box, diameter, deadline)
    prob = resize_probability(network_prob, image.shape[:2])
    timings = {**(segmentation.timings or {}), "network": time.perf_counter() - t}
    return replace(segmentation, cleaned=cleaned, probability=prob, timings=timings,
                   network_probability=network_prob if network_prob.shape[1:] != image.shape[:2] else None,
                   network_scale=network_scale, diameter=d, diameter_source=source)


def _region(shape, box):
    """Everything of ``shape`` but ``box`` (y0, y1, x0, x1), as a bool mask."""
    valid = np.ones(shape, bool)
    y0, y1, x0, x1 = box
    valid[y0:y1, x0:x1] = False
    return valid


def particle_region(segmentation, shape=None, scale=1.0):
    """Where particles may be: everything but the filled data bar, which holds
    mirrored image, not particles. None (the whole image) without a bar.

    Parameters
    ----------
    segmentation : Segmentation
    shape : tuple (h, w), optional
        Of the image at ``scale`` (default: the full resolution).
    scale : float

    Returns
    -------
    ndarray of bool, shape (H, W) or ``shape``, or None
    """
    if segmentation.banner_box is None:
        return None
    shape = tuple(shape) if shape is not None else np.asarray(segmentation.probability).shape[-2:]
    return _region(shape, scaled_box(segmentation.banner_box, scale, shape) if scale != 1.0
                   else segmentation.banner_box)


def working_probability(segmentation):
    """``(probability, scale)`` the splitting runs on: the network's working scale where there is one."""
    network = segmentation.network_probability
    if network is not None:
        return network, float(getattr(segmentation, "network_scale", None) or 1.0)
    return segmentation.probability, 1.0


def split(segmentation, settings, memo=None):
    """The labels :func:`saemi.instances.split_touching` gives a segmentation (data bar excluded), before exclusions.

    The splitting runs at the network's working scale (issue 17: the distance
    transform, h-maxima and watershed on the network's grid, with the pixel
    settings scaled to it) and the labels are mapped back to full resolution by
    nearest neighbour (:func:`saemi.size.upsample_labels`) and fitted to the
    full-resolution particle mask (:func:`saemi.size.fit_to_mask`), so the
    outlines, and the sizes measured from them, keep full resolution.

    ``memo`` (:class:`saemi.instances.StageMemo`, one per segmentation) keeps
    the stage outputs a change of settings does not change, so that a slider
    re-runs only the stages after the first one it affects (the labels are the
    same as without it).
    """
    prob, scale = working_probability(segmentation)
    valid = particle_region(segmentation, prob.shape[-2:], scale)
    diameter = getattr(segmentation, "diameter", None)
    s = settings.split_settings()
    labels = split_touching(prob, s, valid, diameter, scale, memo=memo)
    if scale == 1.0:
        return labels
    labels = upsample_labels(labels, segmentation.image.shape[:2])

    def full_mask():
        mask = foreground(segmentation.probability, s.threshold)
        full_valid = particle_region(segmentation)
        return mask if full_valid is None else mask & full_valid

    mask = full_mask() if memo is None else memo.get(("full-resolution mask", s.threshold), full_mask)
    labels = fit_to_mask(labels, mask, math.ceil(1 / scale))
    # the size and edge filters once more at full resolution, where the particles are measured
    # (fitting moves outlines by up to a working-scale pixel); labels renumbered 1..N
    min_size = s.pixel_settings(diameter if diameter is not None else 1.0)[1] if (
        diameter is not None or s.min_size is not None) else 0
    return filter_particles(labels, min_size, 0.0, s.exclude_edge)


def split_and_measure(segmentation, settings=None, deadline=None, split_labels=None, origins=None, px_table=None):
    """Particles, table and summary of a segmentation under some settings.

    Parameters
    ----------
    segmentation : Segmentation
    settings : Settings, optional
    deadline : saemi.budget.Deadline, optional
        Checked before splitting and before measuring.
    split_labels : ndarray of int, shape (H, W), optional
        The labels :func:`saemi.instances.split_touching` gives for these
        settings, when a cache already holds them (the split is skipped), or
        those labels after the user's edits (:func:`saemi.edits.apply_edits`).
    origins : dict, optional
        Label -> origin of the particles edits made or changed (the table's
        ``origin`` column; every other particle is ``model``).
    px_table : pandas.DataFrame, optional
        ``particle_table(split_labels)`` (pixel units) when a cache holds it.

    Returns
    -------
    Analysis
    """
    settings = settings or Settings.from_dict(None, defaults=read_card()["postprocess"])
    t = time.perf_counter()
    budget.check(deadline, "splitting touching particles")
    if split_labels is None:
        split_labels = split(segmentation, settings)
    t_split = time.perf_counter()
    budget.check(deadline, "measuring the particles")
    nm_per_pixel = effective_nm_per_pixel(segmentation, settings)
    if px_table is None:
        table = particle_table(split_labels, nm_per_pixel)
    else:
        table = add_physical_columns(px_table.copy(), nm_per_pixel) if nm_per_pixel else px_table.copy()
    table = kept_particles(with_origin(table, origins), settings.removed_labels)
    unit = "nm" if nm_per_pixel else "px"
    summary = summarize(table, settings.metric, unit)
    labels = remove_labels(split_labels, settings.removed_labels, renumber=False)
    t_table = time.perf_counter()
    timings = {**segmentation.timings, "watershed": t_split - t, "table": t_table - t_split}
    return Analysis(segmentation, labels, table, summary, settings, timings, split_labels)


def analyze(image, settings=None, segmenter=None, max_pixels=None, filename=None):
    """Analyse one micrograph: load, banner, network, instances, measurements.

    Parameters
    ----------
    image : bytes, path or ndarray
    settings : Settings or dict, optional
        A dict is validated with :meth:`Settings.from_dict`.
    segmenter : saemi.model.Segmenter, optional
        Default: the bundled trained weights.
    max_pixels : int, optional
        Size limit; default ``$SAEMI_MAX_PIXELS`` or 50 megapixels.
    filename : str, optional
        The file's name, for image bytes: its suffix picks the reader where the
        bytes do not tell (see :func:`saemi.io.read_micrograph`).

    Returns
    -------
    Analysis

    Raises
    ------
    SaemiError
        For anything wrong with the image or the settings.
    """
    if settings is None or isinstance(settings, dict):
        settings = Settings.from_dict(settings, defaults=read_card()["postprocess"])
    # a typed calibration makes the scale bar moot: its OCR is skipped
    seg = segment(image, segmenter, settings.remove_banner, max_pixels,
                  detect_scale_bar=settings.scale_bar == "auto" and not settings.nm_per_pixel, filename=filename,
                  diameter=settings.diameter)
    return split_and_measure(seg, settings)
