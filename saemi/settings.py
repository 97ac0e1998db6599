"""The analysis settings: one schema that every layer reads.

Each setting is a dataclass field declared once, here, with its type, default,
range or choices, unit, label, help text and *stage*:

* ``"segment"`` — changes what the network sees or what is read before it
  (banner removal, scale-bar reading). Applied when an image is uploaded, part
  of the cache key of its segmentation; a re-analysis by ``image_id`` cannot
  change it.
* ``"split"`` — how probabilities become particles (:mod:`saemi.instances`);
  a change renumbers the particles.
* ``"measure"`` — what is reported about the particles: calibration, summary
  metric, excluded particles.

From the schema come the CLI flags (:func:`add_cli_arguments`), the OpenAPI
properties (:func:`openapi_properties`), the keys a client sends
(:func:`names`), the page's defaults (:func:`defaults`), the page's controls
(each field's ``ui`` metadata) and :meth:`Settings.to_dict`. StarDist's
``Config`` is the model: one object describes the thresholds.

Only plain Python and numpy here: the page and the API import it without torch.
"""

import math
from dataclasses import MISSING, asdict, dataclass, field, fields

import numpy as np

from .errors import SaemiError
from .measure import METRICS

STAGES = ("segment", "split", "measure")
#: More labels than this in one request is not a user clicking particles away.
MAX_REMOVED_LABELS = 100_000


def setting(default, stage, help, label=None, *, range=None, choices=None, unit=None, ui=None, cli=True,
            tune=None):
    """A dataclass field carrying a setting's schema in its metadata.

    Parameters
    ----------
    default
        The built-in default (the model card's ``postprocess`` may override
        ``tuned`` settings).
    stage : {'segment', 'split', 'measure'}
    help : str
        One sentence for CLI help, the OpenAPI description and the page's hint.
    label : str, optional
        The page's label for the control.
    range : tuple (low, high, low_inclusive, high_inclusive), optional
    choices : tuple of str, optional
    unit : str, optional
        Shown after the range in error messages ("px", "nm").
    ui : dict, optional
        How the page shows it: ``{"slider": (min, max, step)}`` (``max`` None:
        twice the default, at least ``floor``), ``"floor"``, ``"percent"``
        (slider in % of a fraction), ``"marks"``; absent: no control.
    cli : bool
        Offer a ``--flag`` in ``saemi analyze``.
    tune : tuple, optional
        The values ``saemi evaluate --tune`` tries; a tuned setting's value is
        stored in the model card (``postprocess``).
    """
    assert stage in STAGES, stage
    meta = {"stage": stage, "help": help, "label": label, "range": range, "choices": choices, "unit": unit,
            "ui": ui, "cli": cli, "tune": tune}
    return field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclass(frozen=True)
class SplitSettings:
    """How probabilities become particles (the ``split`` stage).

    Attributes
    ----------
    watershed : bool
        Split touching particles with a marker-based watershed (True) or keep
        plain connected components (False).
    min_distance_fraction : float
        Minimum distance between two watershed markers, as a fraction of the
        typical particle diameter; larger values split less.
    min_distance : int or None
        The same in pixels of the image, overriding the fraction when given.
    merge_threshold : float
        Merge neighbouring pieces when the mean "not interior" probability along
        their shared border is below this value, i.e. where the network saw no
        boundary between them (see :func:`saemi.instances.merge_weak_borders`);
        0 disables. Only a three-class probability stack carries this evidence.
    threshold : float
        Probability cut in (0, 1) for "particle" (and for the interior markers).
    min_size_fraction : float
        Particles smaller than this fraction of the area of a disc of the typical
        diameter (pi d^2 / 4) are dropped.
    min_size : int or None
        The same in pixels of the image, overriding the fraction when given.
    min_relative_size : float
        Drop particles smaller than this fraction of the image's typical particle
        area (see :func:`saemi.instances.drop_fragments`); 0 disables.
    exclude_edge : bool
        Drop particles that touch the image border.

    The fields are in the order the page shows them. The absolute settings
    (``min_distance``, ``min_size``) have no slider: the page's sliders are the
    fractions, and an absolute value is given by name in the API and the CLI
    (``--min-distance 40``); :meth:`pixel_settings` says what applies.
    """

    watershed: bool = setting(True, "split", "Split touching particles with a marker-based watershed.",
                              "Split touching particles (watershed)", ui={}, tune=(True, False))
    # Pixel distances and areas are fractions of the image's typical particle diameter
    # (saemi.size), so that one set of defaults holds at every magnification; the
    # absolute settings below them override the fractions when they are given.
    min_distance_fraction: float = setting(
        0.6, "split", "Minimum distance between watershed markers as a fraction of the typical particle diameter "
        "(the diameter setting, or its estimate); larger splits less. min_distance overrides it.",
        "Minimum peak distance (% of the typical diameter)", range=(0.0, 10.0, False, True),
        ui={"slider": (1, None, 1), "floor": 150, "percent": True}, tune=(0.4, 0.5, 0.6, 0.7, 0.9))
    # Capped so that no request can buy minutes of work: a 1000 px minimum distance is
    # already wider than any particle the network is meant to see.
    min_distance: int = setting(None, "split", "Absolute minimum distance between watershed markers in pixels of "
                                "the image; given, it overrides min_distance_fraction.",
                                range=(1, 1000, True, True), unit="px")
    merge_threshold: float = setting(
        0.0, "split", "Merge touching pieces whose shared border has a mean non-interior probability below this "
        "(the network saw no boundary there); higher merges more, 0 disables.",
        "Merge pieces across weak borders", range=(0.0, 1.0, True, False),
        ui={"slider": (0, 0.95, 0.01), "marks": {0: "off", 0.5: "0.5", 0.9: "0.9"}}, tune=(0.0, 0.5, 0.6, 0.7))
    threshold: float = setting(0.5, "split", "Particle probability cut.", "Probability threshold",
                               range=(0.0, 1.0, False, False),
                               ui={"slider": (0.05, 0.95, 0.01), "marks": {0.1: "0.1", 0.5: "0.5", 0.9: "0.9"}},
                               tune=(0.5, 0.6))
    min_size_fraction: float = setting(
        0.01, "split", "Drop particles smaller than this fraction of the area of a disc of the typical particle "
        "diameter; min_size overrides it; 0 disables.", "Minimum particle size (% of a typical particle's area)",
        range=(0.0, 1.0, True, False), ui={"slider": (0, None, 0.1), "floor": 5, "percent": True},
        tune=(0.0, 0.01, 0.02))
    min_size: int = setting(None, "split", "Absolute minimum particle area in pixels of the image; given, it "
                            "overrides min_size_fraction.", range=(0, 100_000_000, True, True), unit="px")
    min_relative_size: float = setting(
        0.0, "split", "Drop particles smaller than this fraction of the image's typical (area-weighted median) "
        "particle area; catches fragments, specks and panel letters; 0 disables.",
        "Drop fragments smaller than (% of the typical particle)", range=(0.0, 1.0, True, False),
        ui={"slider": (0, None, 0.5), "floor": 50, "percent": True}, tune=(0.0, 0.1, 0.15, 0.2, 0.25, 0.3))
    exclude_edge: bool = setting(False, "split", "Drop particles touching the image border.",
                                 "Exclude particles cut by the image edge", ui={})

    def validated(self):
        """Return self, or raise :class:`SaemiError` naming the bad value."""
        check_ranges(self)
        return self

    def pixel_settings(self, diameter, scale=1.0):
        """``(min_distance, min_size)`` in pixels of an image resized by ``scale``.

        Parameters
        ----------
        diameter : float or None
            Typical particle diameter in pixels of the full-resolution image
            (unused, and may be None, when both absolute settings are given).
        scale : float
            Pixels of the image being split per full-resolution pixel (the
            network's working scale, see :mod:`saemi.size`).

        Returns
        -------
        min_distance : int
            At least 1.
        min_size : int
            Pixels (area), at least 0.

        Examples
        --------
        >>> SplitSettings(min_distance_fraction=0.5, min_size_fraction=0.01).pixel_settings(40.0, 0.5)
        (10, 3)
        >>> SplitSettings(min_distance=30, min_size=100).pixel_settings(40.0, 0.5)
        (15, 25)
        """
        md = self.min_distance if self.min_distance is not None else self.min_distance_fraction * float(diameter)
        ms = self.min_size if self.min_size is not None else \
            self.min_size_fraction * math.pi * float(diameter) ** 2 / 4
        return max(1, int(round(md * scale))), max(0, int(round(ms * scale * scale)))


@dataclass(frozen=True)
class Settings(SplitSettings):
    """Everything a user can set about one analysis: :class:`SplitSettings` plus

    Attributes
    ----------
    remove_banner : bool
        Detect and fill the instrument data bar before segmentation (``segment``).
    scale_bar : {'auto', 'none'}
        'auto': read the scale bar in the image and, without ``nm_per_pixel``
        and without a calibration in the file, calibrate from it; 'none': do
        not read it (the file's own pixel size still applies) (``segment``).
    nm_per_pixel : float or None
        Calibration typed by the user; it wins over the file's and the scale
        bar's. Sizes are also reported in nm when a calibration is in force.
    metric : str
        Metric of the summary, one of :data:`saemi.measure.METRICS`.
    diameter : float or None
        Typical particle diameter in pixels (``segment``): the size-normalised
        inference of :mod:`saemi.size` rescales the image to it; None: estimated.
        A re-analysis by ``image_id`` may change it (the network is run again on
        the stored image, see :mod:`saemi.service`).
    removed_labels : tuple of int
        Particles the user excluded, by label; ids refer to the labelling made
        under the same splitting settings.
    """

    remove_banner: bool = setting(True, "segment", "Detect and fill the instrument data bar before segmentation.")
    scale_bar: str = setting("auto", "segment", "auto: read the scale bar in the image and, without nm_per_pixel "
                             "or a calibration in the file, calibrate from it; none: do not read it.",
                             choices=("auto", "none"))
    # 1 px to 100 000 px: a particle under a pixel is not measurable, one over 1e5 px fills no image.
    diameter: float = setting(None, "segment", "Typical particle diameter in pixels of the image: the image is "
                              "rescaled so that it spans the same number of pixels at the network, and the pixel "
                              "settings are fractions of it. Empty: estimated per image.",
                              "Typical particle diameter (px)", range=(1.0, 100_000.0, True, True), unit="px")
    # 1e-3 nm (1 pm) to 1e7 nm (1 cm) per pixel spans every microscope there is.
    nm_per_pixel: float = setting(None, "measure", "Calibration in nm per pixel; adds sizes in nm.",
                                  range=(0.0, 1e7, False, True), unit="nm")
    metric: str = setting("equivalent_diameter", "measure", "Metric of the summary statistics.",
                          choices=tuple(METRICS))
    removed_labels: tuple = setting((), "measure", "Particle labels the user excluded (labels of the same "
                                    "splitting settings).", cli=False)

    @classmethod
    def from_dict(cls, values, defaults=None):
        """Build settings from a JSON-like dict, rejecting unknown or mistyped keys.

        Parameters
        ----------
        values : dict or None
        defaults : dict, optional
            Used for keys missing from ``values`` (e.g. the model card's tuned
            post-processing settings); keys that are not settings are ignored.

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
        settings = cls(**{name: coerce(known[name], value) for name, value in merged.items()})
        return settings.validated()

    def validated(self):
        check_ranges(self)
        return self

    def split_settings(self):
        return SplitSettings(**{f.name: getattr(self, f.name) for f in fields(SplitSettings)})

    def segment_settings(self):
        """``{name: value}`` of the ``segment`` stage: what the segmentation's cache key holds."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["stage"] == "segment"}

    def to_dict(self):
        """JSON-ready ``{name: value}`` of every setting (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def names(stage=None, cls=Settings):
    """Setting names in schema order, of one stage (or of all)."""
    return tuple(f.name for f in fields(cls) if stage is None or f.metadata["stage"] == stage)


def tuned_names():
    """The settings ``saemi evaluate --tune`` chooses and the model card's ``postprocess`` holds."""
    return tuple(f.name for f in fields(Settings) if f.metadata.get("tune"))


def tuning_grid():
    """``{name: [values]}`` that ``saemi evaluate --tune`` tries, per tuned setting.

    On the first shipped weights a wider grid (threshold 0.7, min_size 160,
    min_relative_size 0.05) never won, and the best AP moved by < 0.01 across
    min_distance once pieces are merged across weak borders.
    """
    return {f.name: list(f.metadata["tune"]) for f in fields(Settings) if f.metadata.get("tune")}


def defaults(stage=None):
    """The built-in defaults, ``{name: value}`` (JSON-ready), of one stage or of all."""
    built = Settings().to_dict()
    return {k: built[k] for k in names(stage)}


def field_of(name):
    """The dataclass field of a setting (its schema in ``.metadata``); KeyError for an unknown name."""
    return {f.name: f for f in fields(Settings)}[name]


def check_ranges(settings):
    """Raise :class:`SaemiError` for a field outside its declared ``range`` or ``choices``.

    ``None`` values are not checked (an unset optional setting).
    """
    for f in fields(settings):
        value = getattr(settings, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise SaemiError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}", code="bad_parameter")
        bounds = f.metadata.get("range")
        if f.name == "removed_labels" and len(value) > MAX_REMOVED_LABELS:
            raise SaemiError(f"removed_labels lists {len(value)} labels; at most {MAX_REMOVED_LABELS} can be "
                             "removed", code="bad_parameter")
        if bounds is None or value is None:
            continue
        lo, hi, lo_in, hi_in = bounds
        v = float(value)
        ok = (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            unit = f.metadata.get("unit", "")
            raise SaemiError(f"{f.name} must be {'from' if lo_in else 'above'} {lo:g} "
                             f"{'to' if hi_in else 'and below'} {hi:g}{' ' + unit if unit else ''}, got {value}",
                             code="bad_parameter")


def _kind(f):
    """The Python type of a setting: bool, int, float, str or tuple."""
    return {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple}[
        f.type if isinstance(f.type, str) else f.type.__name__]


def coerce(f, value):
    """A JSON, form or command-line value converted to the type of setting ``f``.

    Booleans accept true/false/1/0/yes/no/on/off strings; integers accept whole
    floats; ``removed_labels`` accepts a list or a comma/space separated
    string of whole numbers ≥ 1. ``None`` is accepted only where the default is
    ``None``.

    Raises
    ------
    SaemiError
        Naming the setting and the value.
    """
    name, kind = f.name, _kind(f)
    bad = SaemiError(f"setting {name!r} has an invalid value {value!r}", code="bad_parameter")
    if value is None:
        if f.default is None:
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


# --- what other layers generate from the schema -----------------------------------------------

def cli_flag(name):
    return "--" + name.replace("_", "-")


def add_cli_arguments(parser):
    """Add a ``--flag`` per setting with ``cli`` (default None: the model card's value applies).

    Booleans get ``--flag/--no-flag``; choices are argparse ``choices``; the
    range is checked by :meth:`Settings.from_dict` (exit code 2).
    """
    import argparse

    for f in fields(Settings):
        if not f.metadata.get("cli"):
            continue
        kind = _kind(f)
        default = f.default if f.default is not MISSING else None
        shown = "none" if default is None else str(default).lower() if kind is bool else default
        help_text = f"{f.metadata['help']} (default: {'the model card' if f.metadata.get('tune') else shown})"
        if kind is bool:
            parser.add_argument(cli_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(cli_flag(f.name), dest=f.name, type=kind, default=None,
                                choices=f.metadata.get("choices"), help=help_text,
                                metavar=None if f.metadata.get("choices") else f.name.upper())


def from_cli_arguments(args):
    """The settings given on the command line, ``{name: value}`` (flags left out are absent)."""
    return {name: getattr(args, name) for name in names() if getattr(args, name, None) is not None}


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def openapi_properties(stage=None):
    """JSON-schema properties of the settings (type, description, bounds, choices, default)."""
    out = {}
    for f in fields(Settings):
        if stage is not None and f.metadata["stage"] not in stage:
            continue
        kind = _kind(f)
        if kind is tuple:
            schema = {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": MAX_REMOVED_LABELS}
        else:
            schema = {"type": [_JSON_TYPES[kind], "null"] if f.default is None else _JSON_TYPES[kind]}
        schema["description"] = f.metadata["help"] + f" Stage: {f.metadata['stage']}."
        if "range" in f.metadata:
            lo, hi, lo_in, hi_in = f.metadata["range"]
            schema["minimum" if lo_in else "exclusiveMinimum"] = lo
            schema["maximum" if hi_in else "exclusiveMaximum"] = hi
        if "choices" in f.metadata:
            schema["enum"] = list(f.metadata["choices"])
        if not f.metadata.get("tune"):
            schema["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        out[f.name] = schema
    return out


def slider_range(name, default):
    """``(min, max, step)`` of a setting's slider; a max of None in the schema becomes twice the default.

    The upper end always includes the model's default value, and is at least
    the schema's ``floor``; percent sliders are in % of the fraction.
    """
    ui = field_of(name).metadata["ui"]
    lo, hi, step = ui["slider"]
    if hi is None:
        value = to_control(name, default)
        try:
            hi = max(ui.get("floor", 0), int(math.ceil(float(value) * 2)))
        except (TypeError, ValueError):
            hi = ui.get("floor", 0)
        magnitude = 10 ** max(0, len(str(int(hi))) - 2)  # round ends: 40, 1000, 50
        hi = int(math.ceil(hi / magnitude) * magnitude)
    return lo, hi, step


def to_control(name, value):
    """A setting's value as its page control shows it (a checklist, or % for ``percent`` sliders)."""
    f = field_of(name)
    if _kind(f) is bool:
        return ["on"] if value else []
    if f.metadata.get("ui", {}).get("percent"):
        try:
            v = float(value) * 100
        except (TypeError, ValueError):
            return 0.0
        return round(v, 4) if math.isfinite(v) and v > 0 else 0.0
    return value


def from_controls(values):
    """The settings the page's controls mean, ``{name: value}``, clamped to the schema's ranges.

    Parameters
    ----------
    values : dict
        Control value by setting name: a checklist value (``["on"]`` when
        ticked) or plain bool for booleans, a number or numeric string for
        sliders (in % for ``percent`` ones). Missing or unreadable values fall
        back to the built-in default.

    Examples
    --------
    >>> from_controls({"watershed": ["on"], "min_distance": "9", "threshold": 2.0})["threshold"]
    0.99
    """
    out = {}
    for name, value in values.items():
        f = field_of(name)
        kind = _kind(f)
        if kind is bool:
            out[name] = ("on" in value) if isinstance(value, list) else bool(value)
            continue
        lo, hi, lo_in, hi_in = f.metadata["range"]
        # unreadable means the least filtering: an inclusive low end (0 is "off"), else the default
        fallback = lo if lo_in else f.default
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if f.metadata.get("ui", {}).get("percent"):
            v /= 100
        if not math.isfinite(v):
            v = fallback
        # an open end is kept one slider step inside (0.01 for fractions)
        v = min(max(v, lo if lo_in else lo + 0.01), hi if hi_in else hi - 0.01)
        out[name] = int(v) if kind is int else round(v, 6)
    return out


def markdown_reference():
    """The settings as a Markdown table (docs/settings.md is this text; a test keeps it current)."""
    rows = ["# Analysis settings", "",
            "Generated from `saemi/settings.py` by `python -m saemi.settings > docs/settings.md`; a test "
            "checks that it is current. The same names are the API's JSON keys, the CLI's flags "
            "(`min_distance` is `--min-distance`) and the page's controls.", "",
            "*Stage*: `segment` settings apply when an image is uploaded (they change what the network sees "
            "and are part of the cache key; a re-analysis by `image_id` keeps them); `split` settings renumber "
            "the particles; `measure` settings change only what is reported. *Default*: \"card\" means the "
            "model card's tuned value (`saemi evaluate --tune`), shown with the built-in fallback.", "",
            "| setting | CLI | stage | type | range or choices | default | what it does |",
            "|---|---|---|---|---|---|---|"]
    for f in fields(Settings):
        kind = _kind(f).__name__
        if "range" in f.metadata:
            lo, hi, lo_in, hi_in = f.metadata["range"]
            span = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}" + (
                f" {f.metadata['unit']}" if f.metadata.get("unit") else "")
        elif "choices" in f.metadata:
            span = ", ".join(f"`{c}`" for c in f.metadata["choices"])
        else:
            span = "whole numbers ≥ 1" if kind == "tuple" else ""
        default = "none" if f.default in (None, ()) else \
            f"`{str(f.default).lower() if kind == 'bool' else f.default}`"
        if f.metadata.get("tune"):
            default = f"card ({default})"
        flag = f"`{cli_flag(f.name)}`" if f.metadata.get("cli") else "-"
        rows.append(f"| `{f.name}` | {flag} | {f.metadata['stage']} | {kind if kind != 'tuple' else 'list of int'} "
                    f"| {span} | {default} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
