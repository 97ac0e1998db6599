"""One call from an image to measured particles: the path the CLI, API and UI share.

The work splits in two so that the web layers can cache the expensive half:

* :func:`segment` — load, banner removal, network: the per-pixel probabilities.
* :func:`measure` — instance splitting, removed particles, table and summary;
  cheap, re-run whenever a slider moves.

:func:`analyze` runs both.
"""

import functools
import time
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from . import budget
from .banner import remove_banner
from .calibration import Calibration, effective_calibration
from .card import read_card
from .errors import SaemiError
from .instances import SplitSettings, remove_labels, split_touching
from .io import check_content, read_micrograph
from .measure import METRICS, particle_table, summarize
from .probability import resize_probability
from .scalebar import detect_scale

#: More labels than this in one request is not a user clicking particles away.
MAX_REMOVED_LABELS = 100_000


@dataclass(frozen=True)
class Settings(SplitSettings):
    """Everything a user can set about one analysis.

    Adds to :class:`saemi.instances.SplitSettings`:

    Attributes
    ----------
    nm_per_pixel : float or None
        Calibration typed by the user; it wins over the file's and the scale
        bar's. Sizes are also reported in nm when a calibration is in force.
    metric : str
        Metric of the summary: area, equivalent_diameter, feret_max, feret_min
        or perimeter.
    removed_labels : tuple of int
        Particles the user excluded, by label; ids refer to the labelling made
        under the same splitting settings.
    remove_banner : bool
        Detect and fill the instrument data bar before segmentation.
    scale : {'auto', 'none'}
        'auto': without ``nm_per_pixel`` and without a calibration in the file,
        calibrate from the scale bar read in the image (when one is found and
        its label read); 'none': never from the scale bar (the file's own pixel
        size still applies).
    """

    # 1e-3 nm (1 pm) to 1e7 nm (1 cm) per pixel spans every microscope there is.
    nm_per_pixel: float = field(default=None, metadata={"range": (0.0, 1e7, False, True), "unit": "nm"})
    metric: str = field(default="equivalent_diameter", metadata={"choices": tuple(METRICS)})
    removed_labels: tuple = ()
    remove_banner: bool = True
    scale: str = field(default="auto", metadata={"choices": ("auto", "none")})

    @classmethod
    def from_dict(cls, values, defaults=None):
        """Build settings from a JSON-like dict, rejecting unknown or mistyped keys.

        Parameters
        ----------
        values : dict or None
        defaults : dict, optional
            Used for keys missing from ``values`` (e.g. the model card's tuned
            post-processing settings).

        Raises
        ------
        SaemiError
            Naming the offending key and value.
        """
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SaemiError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(known)}",
                             code="bad_parameter")
        merged = {**{k: v for k, v in (defaults or {}).items() if k in known}, **values}
        out = {}
        for name, value in merged.items():
            out[name] = _coerce(name, value, type(getattr(cls, name, None)) if name != "nm_per_pixel" else float)
        settings = cls(**out)
        settings.validated()
        for f in fields(cls):
            choices = f.metadata.get("choices")
            if choices and getattr(settings, f.name) not in choices:
                raise SaemiError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(settings, f.name)!r}",
                                 code="bad_parameter")
        if len(settings.removed_labels) > MAX_REMOVED_LABELS:
            raise SaemiError(f"removed_labels lists {len(settings.removed_labels)} labels; at most "
                             f"{MAX_REMOVED_LABELS} can be removed", code="bad_parameter")
        return settings

    def split_settings(self):
        return SplitSettings(**{f.name: getattr(self, f.name) for f in fields(SplitSettings)})


def _coerce(name, value, kind):
    bad = SaemiError(f"setting {name!r} has an invalid value {value!r}", code="bad_parameter")
    if value is None:
        if name == "nm_per_pixel":
            return None
        raise bad
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise bad
    if kind is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        try:
            labels = [_whole_number(v) for v in value]
        except (TypeError, ValueError):
            raise bad from None
        if any(v < 1 for v in labels):
            raise bad
        return tuple(sorted(set(labels)))
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if not np.isfinite(number):
        raise bad
    if kind is int:
        if number != int(number):
            raise bad
        return int(number)
    return number


def _whole_number(v):
    """An int from an int, a whole float or a digit string; ValueError for 1.5, True or 'x'."""
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, str):
        return int(v.strip())
    number = float(v)
    if not np.isfinite(number) or number != int(number):
        raise ValueError(v)
    return int(number)


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
    """

    segmentation: Segmentation
    labels: np.ndarray
    table: pd.DataFrame
    summary: dict
    settings: Settings
    timings: dict = field(default_factory=dict)

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
    detected scale bar's when ``scale='auto'``. Disagreements are warnings in
    the record (see :func:`saemi.calibration.effective_calibration`).
    """
    return effective_calibration(getattr(segmentation, "calibration", None), segmentation.scale,
                                 settings.nm_per_pixel, settings.scale)


def effective_nm_per_pixel(segmentation, settings):
    """The nm per pixel in force: the user's, else the file's, else the scale bar's (``scale='auto'``)."""
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
    budget.check(deadline, "reading the scale bar")
    scale = detect_scale(img) if detect_scale_bar else None
    t_scale = time.perf_counter()
    budget.check(deadline, "removing the data bar")
    cleaned, box = remove_banner(img) if remove_banner_first else (img, None)
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


def measure(segmentation, settings=None, deadline=None):
    """Particles, table and summary of a segmentation under some settings.

    Parameters
    ----------
    segmentation : Segmentation
    settings : Settings, optional
    deadline : saemi.budget.Deadline, optional
        Checked before splitting and before measuring.

    Returns
    -------
    Analysis
    """
    settings = settings or Settings.from_dict(None, defaults=read_card()["postprocess"])
    t = time.perf_counter()
    budget.check(deadline, "splitting touching particles")
    labels = split_touching(segmentation.probability, settings.split_settings(), particle_region(segmentation))
    labels = remove_labels(labels, settings.removed_labels, renumber=False)
    t_split = time.perf_counter()
    budget.check(deadline, "measuring the particles")
    nm_per_pixel = effective_nm_per_pixel(segmentation, settings)
    table = particle_table(labels, nm_per_pixel)
    unit = "nm" if nm_per_pixel else "px"
    summary = summarize(table, settings.metric, unit)
    t_table = time.perf_counter()
    timings = {**segmentation.timings, "watershed": t_split - t, "table": t_table - t_split}
    return Analysis(segmentation, labels, table, summary, settings, timings)


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
    seg = segment(image, segmenter, settings.remove_banner, max_pixels,
                  detect_scale_bar=settings.scale == "auto" and not settings.nm_per_pixel, filename=filename)
    return measure(seg, settings)
