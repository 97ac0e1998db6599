"""One call from an image to measured particles: the path the CLI, API and UI share.

The work splits in two so that the web layers can cache the expensive half:

* :func:`segment` — load, banner removal, network: the per-pixel probabilities.
* :func:`split_and_measure` — instance splitting, removed particles, table and
  summary; cheap, re-run whenever a slider moves.

:func:`analyze` runs both.
"""

import functools
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import budget
from .banner import find_banner, remove_banner
from .calibration import Calibration, effective_calibration
from .card import read_card
from .instances import remove_labels, split_touching
from .io import check_content, read_micrograph
from .measure import add_physical_columns, kept_particles, particle_table, summarize, with_origin
from .probability import resize_probability
from .scalebar import detect_scale
from .settings import Settings

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
    """

    image: np.ndarray
    cleaned: np.ndarray
    probability: np.ndarray
    banner_box: tuple = None
    timings: dict = field(default_factory=dict)
    scale: object = None
    network_probability: np.ndarray = None
    calibration: Calibration = field(default_factory=Calibration)


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
            deadline=None, filename=None):
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
    network_prob = None
    if hasattr(seg, "predict_at_network_scale"):
        network_prob = seg.predict_at_network_scale(cleaned, deadline=deadline)
        prob = resize_probability(network_prob, cleaned.shape[:2])
    else:
        prob = seg.predict(cleaned) if deadline is None else seg.predict(cleaned, deadline=deadline)
    t_net = time.perf_counter()
    return Segmentation(img, cleaned, prob, box,
                        {"load": t_load - t, "scale": t_scale - t_load, "banner": t_banner - t_scale,
                         "network": t_net - t_banner}, scale, network_prob, calibration=calibration)


def particle_region(segmentation):
    """Where particles may be: everything but the filled data bar, which holds
    mirrored image, not particles. None (the whole image) without a bar.

    Returns
    -------
    ndarray of bool, shape (H, W), or None
    """
    if segmentation.banner_box is None:
        return None
    y0, y1, x0, x1 = segmentation.banner_box
    valid = np.ones(np.asarray(segmentation.probability).shape[-2:], bool)
    valid[y0:y1, x0:x1] = False
    return valid


def split(segmentation, settings):
    """The labels :func:`saemi.instances.split_touching` gives a segmentation (data bar excluded), before exclusions."""
    return split_touching(segmentation.probability, settings.split_settings(), particle_region(segmentation))


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
                  detect_scale_bar=settings.scale_bar == "auto" and not settings.nm_per_pixel, filename=filename)
    return split_and_measure(seg, settings)
