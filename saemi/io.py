"""Loading micrographs: any supported file to an (H, W, 3) uint8 array and its calibration.

:func:`read_micrograph` decodes PNG, JPEG, BMP, GIF, TIFF (8/16/32-bit, float,
multi-page: the first page) and the EM formats DM3/DM4 (Gatan), EMD (Velox and
Berkeley) and MRC, and reads the pixel size the file carries
(:class:`saemi.calibration.Calibration`): Zeiss ``CZ_SEM``, FEI/Thermo
``FEI_HELIOS``/``FEI_SFEG``, Tescan, Olympus SIS, ImageJ and OME-TIFF tags, the
axes of DM/EMD/MRC files (through RosettaSciIO), and Hitachi and JEOL ``.txt``
sidecar files beside an image read from disk. :func:`load_image` is the same
without the record. docs/formats.md lists what is and is not supported.

Every failure raises :class:`saemi.errors.SaemiError` with a message that names
the problem, never a decoder's stack trace. Metadata that cannot be read never
stops an image from opening: the calibration is then unset and its
``warnings`` say why.
"""

import io
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .calibration import Calibration, checked, format_nm, parse_length, unit_to_nm
from .errors import SaemiError

log = logging.getLogger(__name__)

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 50_000_000
#: File-name suffixes (lower case) of every format :func:`read_micrograph` opens.
SUPPORTED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif",
                                ".dm3", ".dm4", ".emd", ".mrc"})
#: Suffixes read through RosettaSciIO, by reader.
EM_SUFFIXES = {".dm3": "dm", ".dm4": "dm", ".emd": "emd", ".mrc": "mrc"}
#: Sidecar text files are read up to this size.
SIDECAR_MAX_BYTES = 1_000_000


def max_pixels_default():
    """The pixel-count limit: ``$SAEMI_MAX_PIXELS`` or 50 megapixels."""
    try:
        return int(os.environ.get("SAEMI_MAX_PIXELS", DEFAULT_MAX_PIXELS))
    except ValueError:
        return DEFAULT_MAX_PIXELS


#: Display mapping of non-8-bit images: this percentile range is stretched to 0..255.
DISPLAY_PERCENTILES = (0.1, 99.9)
#: Percentiles are taken on at most this many pixels (a regular subsample).
_PERCENTILE_SAMPLE = 1_000_000


def to_uint8(array):
    """Map any numeric image to uint8 for display and for the network (uint8 passes through).

    16-bit, 32-bit integer and float images are stretched linearly from their
    0.1th to their 99.9th percentile (:data:`DISPLAY_PERCENTILES`), values
    beyond clipped, so one hot pixel or a dead column cannot squeeze the
    image into a few grey levels, and a 12-bit detector image stored in 16 bits
    is not left nearly black. When those percentiles coincide (an image that is
    almost all one value) the full minimum..maximum range is used instead.
    Non-finite values (NaN, inf) map to black. A constant image maps to zeros.

    Examples
    --------
    >>> a = np.arange(1000, dtype=np.uint16).reshape(20, 50); a[0, 0] = 60000
    >>> out = to_uint8(a)
    >>> int(out[0, 1]), int(out[10, 0]), int(out[0, 0])  # the hot pixel does not flatten the rest
    (0, 120, 255)
    """
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.iscomplexobj(a):
        raise SaemiError("the image holds complex numbers (an FFT?), not a micrograph", code="not_an_image")
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        raise SaemiError("image holds no finite pixel values", code="not_an_image")
    step = max(1, a.size // _PERCENTILE_SAMPLE)
    sample = a.ravel()[::step]
    sample = sample[np.isfinite(sample)]
    lo, hi = (float(v) for v in np.percentile(sample, DISPLAY_PERCENTILES)) if sample.size else (0.0, 0.0)
    if hi <= lo:
        lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round(np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def to_rgb(array):
    """Grey (H, W), grey+alpha, RGB or RGBA (H, W, C) to uint8 RGB (H, W, 3).

    The alpha channel is dropped: micrographs carry no real transparency.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise SaemiError(f"unsupported image layout with shape {a.shape}", code="not_an_image")
    a = a[..., :1] if a.shape[2] == 2 else a[..., :3]
    a = to_uint8(a)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def check_size(height, width, max_pixels=None):
    """Raise :class:`SaemiError` if an image is too small or too large."""
    max_pixels = max_pixels or max_pixels_default()
    if height < MIN_SIDE or width < MIN_SIDE:
        raise SaemiError(f"image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed",
                         code="too_small")
    if height * width > max_pixels:
        raise SaemiError(f"image is {width}x{height} pixels ({height * width / 1e6:.0f} megapixels); "
                         f"the limit is {max_pixels / 1e6:.0f} megapixels", code="too_large")


# --------------------------------------------------------------------------- format detection

def _sniff(data, filename=None):
    """'tiff', 'dm', 'emd', 'mrc' or 'pil' from the magic bytes, else the file-name suffix."""
    head = data[:16]
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "emd"
    flags = (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01")  # DM: version, file size, endianness flag
    if (head[:4] == b"\x00\x00\x00\x03" and head[8:12] in flags) or (
            head[:4] == b"\x00\x00\x00\x04" and head[12:16] in flags):
        return "dm"
    if len(data) >= 1024 and data[208:212] == b"MAP ":
        return "mrc"
    suffix = Path(str(filename or "")).suffix.lower()
    return EM_SUFFIXES.get(suffix, "tiff" if suffix in (".tif", ".tiff") else "pil")


# --------------------------------------------------------------------------- TIFF

def _pixel_sizes(value):
    """A tuple like ('Image Pixel Size', 7.344, 'nm') from tifffile's CZ_SEM parser -> nm, or None."""
    if not isinstance(value, tuple) or len(value) < 3:
        return None
    per = unit_to_nm(value[2])
    try:
        return float(value[1]) * per if per is not None else None
    except (TypeError, ValueError):
        return None


def _number(text):
    m = re.search(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", str(text or ""))
    return float(m.group(0)) if m else None


def _magnification(text):
    """'50.00 K X' -> 50000.0; '1.20 M X' -> 1.2e6; '500 X' -> 500.0; else None."""
    m = re.search(r"([\d.]+)\s*([kKmM]?)\s*[xX]?", str(text or ""))
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v * {"k": 1e3, "m": 1e6}.get(m.group(2).lower(), 1.0)


def _mag_text(mag):
    if not mag:
        return ""
    if mag >= 1e6:
        return f"{mag / 1e6:.2f} MX"
    if mag >= 1e3:
        return f"{mag / 1e3:.2f} kX"
    return f"{mag:g} X"


def _width_check(record, stated_width, width, what):
    """Withdraw a file value whose metadata describes an image of another width (resized or cropped)."""
    try:
        stated = int(round(float(stated_width)))
    except (TypeError, ValueError):
        return record
    if record.nm_per_pixel and stated > 0 and stated != width:
        record.warnings.append(
            f"{what} describes an image {stated} px wide but this one is {width} px wide (resized or cropped "
            f"since?); its {format_nm(record.nm_per_pixel)} nm/px is not applied")
        record.nm_per_pixel, record.source, record.confidence = None, None, None
    return record


def _zeiss(md, width):
    rec = Calibration(reader="zeiss_cz_sem", instrument="Zeiss SEM")
    pixel = None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        if key in md:
            pixel = _pixel_sizes(md[key])
            if pixel is None:
                rec.warnings.append(f"Zeiss CZ_SEM {key.upper()} could not be read ({md[key]!r}); "
                                    "the file's calibration is not applied")
                return rec
            break
    else:
        rec.warnings.append("the Zeiss CZ_SEM tag holds no AP_IMAGE_PIXEL_SIZE; the file gives no calibration")
        return rec
    mag = md.get("ap_mag")
    rec.magnification = _magnification(mag[1]) if isinstance(mag, tuple) and len(mag) > 1 else None
    kv = md.get("ap_actualkv") or md.get("ap_manualkv")
    if isinstance(kv, tuple) and len(kv) > 1:
        v = _number(kv[1])
        rec.high_voltage_kv = v * (1e-3 if len(kv) > 2 and str(kv[2]).lower() == "v" else 1.0) if v else None
    det = md.get("dp_detector_channel") or md.get("dp_detector_type")
    rec.detector = str(det[1]) if isinstance(det, tuple) and len(det) > 1 else None
    rec.details = ", ".join(t for t in ("Zeiss CZ_SEM", _mag_text(rec.magnification)) if t)
    checked(rec, pixel, "Zeiss CZ_SEM AP_IMAGE_PIXEL_SIZE")
    store = md.get("dp_image_store")
    if isinstance(store, tuple) and len(store) > 1:
        m = re.match(r"\s*(\d+)\s*\*\s*(\d+)", str(store[1]))
        if m:
            _width_check(rec, m.group(1), width, "the Zeiss CZ_SEM tag (DP_IMAGE_STORE)")
    return rec


def _fei(md, width, tag_name):
    rec = Calibration(reader="fei", instrument="FEI/Thermo SEM")
    label = f"FEI/Thermo {tag_name}"
    system = md.get("System") or {}
    rec.instrument = str(system.get("SystemType") or "").strip() or rec.instrument
    beam = md.get("Beam") or {}
    hv = beam.get("HV")
    rec.high_voltage_kv = float(hv) / 1000 if isinstance(hv, (int, float)) and hv > 0 else None
    det = md.get("Detectors") or {}
    rec.detector = str(det.get("Name")).strip() if det.get("Name") else None
    value, what = None, None
    for section in ("Scan", "EScan"):
        if "PixelWidth" in (md.get(section) or {}):
            value, what = md[section]["PixelWidth"], f"{label} [{section}] PixelWidth"
            break
    else:
        ir, image = md.get("IRBeam") or {}, md.get("Image") or {}
        if "HFW" in ir and "ResolutionX" in image:
            try:
                value = float(ir["HFW"]) / float(image["ResolutionX"])
            except (TypeError, ValueError, ZeroDivisionError):
                value = ir["HFW"]
            what = f"{label} [IRBeam] HFW / [Image] ResolutionX"
    if what is None:
        rec.warnings.append(f"the {label} tag holds no [Scan] PixelWidth; the file gives no calibration")
        return rec
    hfw = (md.get("Scan") or {}).get("HorFieldsize") or (md.get("EBeam") or {}).get("HFW")
    rec.details = label + (f", HFW {format_nm(float(hfw) * 1e9)} nm" if isinstance(hfw, (int, float)) and hfw > 0
                           else "")
    try:
        nm = float(value) * 1e9
    except (TypeError, ValueError):
        nm = value
    checked(rec, nm, what)
    _width_check(rec, (md.get("Image") or {}).get("ResolutionX"), width, f"the {label} tag ([Image] ResolutionX)")
    return rec


def _tescan(raw, width):
    """Tescan tag 50431: binary with ``Key=Value\\r\\n`` fields; PixelSizeX in metres (as Gwyddion's reader)."""
    text = bytes(raw).decode("latin-1", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    fields = dict(re.findall(r"([A-Za-z][\w ]*?)=([^\r\n=]*)\r?\n", text))
    rec = Calibration(reader="tescan", instrument=(fields.get("Device") or "Tescan SEM").strip())
    if "PixelSizeX" not in fields:
        rec.warnings.append("the Tescan tag holds no PixelSizeX; the file gives no calibration")
        return rec
    rec.details = "Tescan" + (f" {fields['Device'].strip()}" if fields.get("Device") else "")
    try:
        nm = float(fields["PixelSizeX"]) * 1e9
    except ValueError:
        nm = fields["PixelSizeX"]
    return checked(rec, nm, "Tescan PixelSizeX")


def _sis(md):
    """Olympus SIS: tifffile gives ``pixelsizex`` in metres (xcal * 10**lenexp, as RosettaSciIO reads it)."""
    rec = Calibration(reader="olympus_sis", instrument="Olympus SIS")
    if "pixelsizex" not in md:
        rec.warnings.append("the Olympus SIS tag holds no pixel size; the file gives no calibration")
        return rec
    mag = md.get("magnification")
    rec.magnification = float(mag) if isinstance(mag, (int, float)) and mag > 0 else None
    rec.instrument = str(md.get("cameraname") or "").strip() or rec.instrument
    rec.details = ", ".join(t for t in ("Olympus SIS", _mag_text(rec.magnification)) if t)
    try:
        nm = float(md["pixelsizex"]) * 1e9
    except (TypeError, ValueError):
        nm = md["pixelsizex"]
    return checked(rec, nm, "Olympus SIS pixel size")


def _ome(xml):
    import xml.etree.ElementTree as ET

    rec = Calibration(reader="ome", instrument=None)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        rec.warnings.append(f"the OME-XML description could not be parsed ({exc}); the file gives no calibration")
        return rec
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None  # an OME-TIFF without physical sizes: simply uncalibrated
    unit = pixels.get("PhysicalSizeXUnit", "µm")  # the OME schema's default unit
    per = unit_to_nm(unit)
    rec.details = f"OME-TIFF PhysicalSizeX {pixels.get('PhysicalSizeX')} {unit}"
    if per is None:
        rec.warnings.append(f"OME-TIFF PhysicalSizeXUnit {unit!r} is not a length unit SAEMI knows; "
                            "the file's calibration is not applied")
        return rec
    try:
        nm = float(pixels.get("PhysicalSizeX")) * per
    except ValueError:
        nm = pixels.get("PhysicalSizeX")
    return checked(rec, nm, "OME-TIFF PhysicalSizeX")


def _imagej(md, page):
    unit = str(md.get("unit") or "").strip()
    if not unit or unit.lower() in ("pixel", "pixels", "inch"):
        return None
    rec = Calibration(reader="imagej")
    per = unit_to_nm(unit)
    tag = page.tags.get("XResolution")
    if per is None or tag is None:
        rec.warnings.append(f"ImageJ unit {unit!r} is not a length unit SAEMI knows, or XResolution is missing; "
                            "the file's calibration is not applied")
        return rec
    num, den = tag.value
    if not num:
        rec.warnings.append("ImageJ XResolution is 0; the file's calibration is not applied")
        return rec
    size = den / num
    rec.details = f"ImageJ, {size:.6g} {unit.replace(chr(92) + 'u00B5', 'µ')} per pixel"
    return checked(rec, size * per, "ImageJ XResolution")


def _tiff_calibration(tif, page, width):
    """The calibration in a TIFF's tags: the first instrument tag found wins; None when there is none."""
    readers = (
        ("Zeiss CZ_SEM", lambda: page.is_sem and _zeiss(tif.sem_metadata or {}, width)),
        ("FEI/Thermo", lambda: page.is_fei and _fei(tif.fei_metadata or {}, width,
                                                    "FEI_HELIOS" if 34682 in page.tags else "FEI_SFEG")),
        ("Tescan", lambda: 50431 in page.tags and _tescan(page.tags[50431].value, width)),
        ("Olympus SIS", lambda: page.is_sis and _sis(tif.sis_metadata or {})),
        ("OME-TIFF", lambda: tif.is_ome and _ome(tif.ome_metadata or "")),
        ("ImageJ", lambda: tif.is_imagej and _imagej(tif.imagej_metadata or {}, page)),
    )
    for name, read in readers:
        try:
            rec = read()
        except Exception as exc:  # metadata is never a reason not to open the image
            log.info("%s metadata unreadable: %r", name, exc)
            return Calibration(warnings=[f"the {name} metadata could not be read ({type(exc).__name__}: {exc}); "
                                         "the file's calibration is not applied"])
        if rec:
            return rec
    return None


def _read_tiff(data, max_pixels):
    import tifffile

    record = None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            shape = page.shape
            h, w = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0])
            if page.samplesperpixel > 1 and page.planarconfig == 2 and len(shape) == 3:  # planar: (C, H, W)
                h, w = shape[1], shape[2]
            check_size(h, w, max_pixels)
            a = page.asarray()
            record = _tiff_calibration(tif, page, w) or Calibration()
            n_pages = len(tif.pages)
            if n_pages > 1:
                others = []
                for i in range(1, min(n_pages, 6)):
                    p = tif.pages[i]
                    others.append(f"{i + 1}: {'x'.join(str(s) for s in p.shape[::-1])} {p.dtype}")
                more = f", and {n_pages - 6} more" if n_pages > 6 else ""
                record.notes.append(f"the TIFF has {n_pages} pages; page 1 is analysed (others: "
                                    f"{'; '.join(others)}{more})")
    except SaemiError:
        raise
    except Exception as exc:
        raise SaemiError(f"TIFF file could not be decoded (truncated or corrupt?): {exc}", code="not_an_image") from exc
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[2] not in (3, 4):
        a = np.moveaxis(a, 0, 2)
    return a, record


# --------------------------------------------------------------------------- DM3/DM4, EMD, MRC (RosettaSciIO)

_RSCIIO_NAMES = {"dm": "DM3/DM4 (Gatan DigitalMicrograph)", "emd": "EMD", "mrc": "MRC"}


def _rsciio_reader(kind):
    try:
        if kind == "dm":
            from rsciio.digitalmicrograph import file_reader
        elif kind == "emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.mrc import file_reader
    except ImportError as exc:
        raise SaemiError(f"reading {_RSCIIO_NAMES[kind]} files needs the package RosettaSciIO "
                         f"(pip install -r requirements.txt): {exc}", code="not_an_image") from exc
    return file_reader


def _get(tree, *path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _pick_image(signals, kind):
    """The first 2-D image (or the first frame of an image stack) among RosettaSciIO's signals."""
    notes = []
    for i, sig in enumerate(signals):
        data = sig.get("data")
        axes = sig.get("axes") or []
        shape = tuple(getattr(data, "shape", ()))
        if len(shape) < 2:
            continue
        signal_axes = [ax for ax in axes if not ax.get("navigate")]
        if len(shape) > 2 and len(signal_axes) != 2:
            continue  # a spectrum image or a diffraction stack, not a micrograph
        if len(signals) > 1:
            notes.append(f"the file holds {len(signals)} datasets; dataset {i + 1} "
                         f"({'x'.join(str(s) for s in shape[::-1])}) is analysed")
        return sig, notes
    raise SaemiError(f"the {_RSCIIO_NAMES[kind]} file holds no 2-D image (only spectra or other data)",
                     code="not_an_image")


def _em_metadata(rec, kind, sig):
    om = sig.get("original_metadata") or {}
    if kind == "dm":
        tags = _get(om, "ImageList", "TagGroup0", "ImageTags") or {}
        mi = tags.get("Microscope Info") or {}
        rec.instrument = next((str(mi[k]) for k in ("Name", "Microscope") if mi.get(k)), None)
        if isinstance(mi.get("Indicated Magnification"), (int, float)) and mi["Indicated Magnification"] > 0:
            rec.magnification = float(mi["Indicated Magnification"])
        if isinstance(mi.get("Voltage"), (int, float)) and mi["Voltage"] > 0:
            rec.high_voltage_kv = float(mi["Voltage"]) / 1000
        rec.details = ", ".join(t for t in ("Gatan DigitalMicrograph", _mag_text(rec.magnification)) if t)
    elif kind == "emd":
        hv = _get(om, "Optics", "AccelerationVoltage")
        mag = _get(om, "Optics", "NominalMagnification")
        try:
            rec.high_voltage_kv = float(hv) / 1000 if hv else None
            rec.magnification = float(mag) if mag else None
        except (TypeError, ValueError):
            pass
        rec.instrument = _get(om, "Instrument", "InstrumentModel") or None
        velox = _get(om, "Instrument") is not None or _get(om, "Optics") is not None
        rec.details = ", ".join(t for t in ("Velox EMD" if velox else "EMD", _mag_text(rec.magnification)) if t)
    else:
        mag = _get(om, "fei_header", "magnification")
        try:
            m = float(np.ravel(mag)[0]) if mag is not None else None
            rec.magnification = m if m and m > 0 else None
        except (TypeError, ValueError, IndexError):
            pass
        rec.details = "MRC" + (" (FEI extended header)" if "fei_header" in om else " header")
    return rec


def _em_calibration(kind, sig, width):
    rec = Calibration(reader={"dm": "digitalmicrograph", "emd": "emd", "mrc": "mrc"}[kind])
    _em_metadata(rec, kind, sig)
    axes = sig.get("axes") or []
    ndim = len(getattr(sig["data"], "shape", ()))
    by_index = {int(ax.get("index_in_array", i)): ax for i, ax in enumerate(axes)}
    x, y = by_index.get(ndim - 1), by_index.get(ndim - 2)
    if x is None:
        rec.warnings.append("the file describes no image axes; it gives no calibration")
        return rec
    om = sig.get("original_metadata") or {}
    if kind == "mrc" and "fei_header" not in om:
        header = om.get("std_header") or {}
        xlen, mx = _number(np.ravel(header.get("Xlen", [0]))[0]), _number(np.ravel(header.get("MX", [0]))[0])
        if not xlen or not mx:
            rec.notes.append("the MRC header gives no cell size (Xlen/MX); the file carries no calibration")
            return rec
    scale, units = x.get("scale"), x.get("units")
    per = unit_to_nm(units)
    if per is None:
        if units in (None, "", "<undefined>") and scale in (None, 1, 1.0):
            rec.notes.append("the file's image axes carry no physical unit; the file carries no calibration")
        else:
            rec.warnings.append(f"the image axis unit {units!r} is not a length (a diffraction pattern?); "
                                "the file's calibration is not applied")
        return rec
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = scale
    if kind in ("dm", "mrc") and isinstance(value, float):
        value = float(f"{value:.7g}")  # both store float32: 0.7344 must not read as 0.73439998
    checked(rec, value * per if isinstance(value, float) else value, f"the {_RSCIIO_NAMES[kind]} x axis scale")
    if rec.nm_per_pixel and y is not None and unit_to_nm(y.get("units")):
        try:
            y_nm = float(f"{float(y['scale']):.7g}") * unit_to_nm(y.get("units"))
            if abs(y_nm - rec.nm_per_pixel) > 1e-3 * rec.nm_per_pixel:
                rec.warnings.append(f"pixels are not square (x {format_nm(rec.nm_per_pixel)} nm, y "
                                    f"{format_nm(y_nm)} nm); sizes use the x value")
        except (TypeError, ValueError):
            pass
    return rec


def _as_image_array(data):
    """RosettaSciIO data (numpy or dask, maybe an RGBA record array) as a plain ndarray."""
    a = data.compute() if hasattr(data, "compute") else np.asarray(data)
    a = np.asarray(a)
    if a.dtype.names:  # DM RGB(A): fields R, G, B, A
        a = np.stack([a[c] for c in ("R", "G", "B") if c in a.dtype.names], axis=-1)
    return a


def _read_em(kind, data, path, filename, max_pixels):
    """A DM3/DM4, EMD or MRC file through RosettaSciIO: (array, Calibration)."""
    reader = _rsciio_reader(kind)
    tmpdir = None
    try:
        if path is None:  # uploads arrive as bytes; the readers want a file name
            tmpdir = tempfile.TemporaryDirectory(prefix="saemi-")
            suffix = Path(str(filename or "")).suffix.lower()
            suffix = suffix if EM_SUFFIXES.get(suffix) == kind else {"dm": ".dm4", "emd": ".emd", "mrc": ".mrc"}[kind]
            path = Path(tmpdir.name) / f"upload{suffix}"
            path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:  # lazily first: the shape is known before any pixel is read
                    signals = reader(str(path), lazy=True)
                except (ValueError, NotImplementedError) as exc:
                    # DM colour images and contiguous (unchunked) EMD datasets cannot be read lazily;
                    # their size is then checked after reading (an upload is bounded by its byte limit)
                    log.info("%s: lazy read failed (%s); reading at once", _RSCIIO_NAMES[kind], exc)
                    signals = reader(str(path))
                sig, notes = _pick_image(signals, kind)
                shape = tuple(sig["data"].shape)
                check_size(shape[-2], shape[-1], max_pixels)
                if len(shape) > 2:
                    n = int(np.prod(shape[:-2]))
                    notes.append(f"the image is a stack of {n} frames; frame 1 is analysed")
                    sig = {**sig, "data": sig["data"][(0,) * (len(shape) - 2)]}
                record = _em_calibration(kind, sig, shape[-1])
                a = _as_image_array(sig["data"])
        except SaemiError:
            raise
        except Exception as exc:
            raise SaemiError(f"not a readable {_RSCIIO_NAMES[kind]} file ({type(exc).__name__}: {exc})",
                             code="not_an_image") from exc
        finally:
            signals = sig = None  # drop dask arrays that hold the file open before it is deleted
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    record.notes.extend(notes)
    return a, record


# --------------------------------------------------------------------------- sidecar text files

def _text_of(raw):
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def sidecar_of(path):
    """The ``.txt`` beside an image (same stem), or None."""
    path = Path(path)
    for suffix in (".txt", ".TXT", ".Txt"):
        side = path.with_suffix(suffix)
        if side != path and side.is_file():
            return side
    return None


def _hitachi(text, width):
    """Hitachi ``[SemImageFile]``: PixelSize in nm (as Bio-Formats' HitachiReader reads it)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    rec = Calibration(reader="hitachi_txt", instrument=fields.get("InstructName") or "Hitachi SEM")
    rec.magnification = _number(fields.get("Magnification")) or None
    hv = fields.get("AcceleratingVoltage") or fields.get("AcceleratingVoltage(V)")
    v = _number(hv)
    if v:
        rec.high_voltage_kv = v / 1000 if "kv" not in str(hv).lower() else v
    rec.detector = fields.get("SignalName") or None
    rec.details = ", ".join(t for t in (f"Hitachi {rec.instrument}".replace("Hitachi Hitachi", "Hitachi")
                                        + " .txt", _mag_text(rec.magnification)) if t)
    if "PixelSize" not in fields:
        rec.warnings.append("the Hitachi .txt file holds no PixelSize; it gives no calibration")
        return rec
    checked(rec, _number(fields["PixelSize"]) if _number(fields["PixelSize"]) is not None else fields["PixelSize"],
            "Hitachi PixelSize")
    size = re.match(r"\s*(\d+)\s*[xX*]\s*(\d+)", fields.get("DataSize", ""))
    if size:
        _width_check(rec, size.group(1), width, "the Hitachi .txt file (DataSize)")
    return rec


def _jeol(text, width):
    """JEOL ``$$SM_MICRON_BAR`` (bar length, px) and ``$$SM_MICRON_MARKER`` (its length): nm per pixel."""
    fields = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0].startswith("$"):
            fields[parts[0].lstrip("$")] = parts[1].strip() if len(parts) > 1 else ""
    rec = Calibration(reader="jeol_txt", instrument=fields.get("CM_INSTRUMENT") or "JEOL SEM")
    rec.magnification = _number(fields.get("CM_MAG")) or None
    rec.high_voltage_kv = _number(fields.get("CM_ACCEL_VOLT")) or None
    rec.detector = fields.get("CM_SIGNAL") or None
    rec.details = ", ".join(t for t in (f"JEOL {rec.instrument}".replace("JEOL JEOL", "JEOL") + " .txt",
                                        _mag_text(rec.magnification)) if t)
    bar, marker = _number(fields.get("SM_MICRON_BAR")), parse_length(fields.get("SM_MICRON_MARKER"))
    if not bar or marker is None:
        rec.warnings.append("the JEOL .txt file lacks a readable $$SM_MICRON_BAR / $$SM_MICRON_MARKER pair "
                            f"({fields.get('SM_MICRON_BAR')!r}, {fields.get('SM_MICRON_MARKER')!r}); "
                            "it gives no calibration")
        return rec
    rec.details += f", bar {fields['SM_MICRON_MARKER']} = {bar:g} px"
    checked(rec, marker / bar, "the JEOL $$SM_MICRON_MARKER / $$SM_MICRON_BAR")
    size = re.match(r"\s*(\d+)\s+(\d+)", fields.get("CM_FULL_SIZE", ""))
    if size:
        _width_check(rec, size.group(1), width, "the JEOL .txt file ($CM_FULL_SIZE)")
    return rec


def read_sidecar(path, width):
    """The calibration in a Hitachi or JEOL ``.txt`` file beside an image, or None.

    Parameters
    ----------
    path : Path
        The image; its sidecar is the same name with ``.txt``.
    width : int
        The image's width, checked against the size the sidecar states.
    """
    side = sidecar_of(path)
    if side is None:
        return None
    try:
        with open(side, "rb") as fh:
            text = _text_of(fh.read(SIDECAR_MAX_BYTES))
    except OSError as exc:
        return Calibration(warnings=[f"the sidecar {side.name} could not be read ({exc})"])
    try:
        if "[SemImageFile]" in text or "[TemImageFile]" in text:
            rec = _hitachi(text, width)
        elif "$$SM_MICRON_BAR" in text or "$CM_FORMAT" in text:
            rec = _jeol(text, width)
        else:
            return Calibration(notes=[f"{side.name} is neither a Hitachi nor a JEOL sidecar; it is ignored"])
    except Exception as exc:  # never a reason not to open the image
        return Calibration(warnings=[f"the sidecar {side.name} could not be read ({type(exc).__name__}: {exc})"])
    rec.details = rec.details.replace(" .txt", f" {side.name}")
    return rec


# --------------------------------------------------------------------------- entry points

def _read_pil(data, max_pixels):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(img.height, img.width, max_pixels)
            img.seek(0)
            img.load()
    except SaemiError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise SaemiError("not an image file (PNG, JPEG, TIFF, BMP, DM3/DM4, EMD or MRC expected)",
                             code="not_an_image") from exc
        limit = (max_pixels or max_pixels_default()) / 1e6
        raise SaemiError(f"image is too large to decode safely (over {Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                         f"megapixels); the limit is {limit:.0f} megapixels", code="too_large") from exc
    except Exception as exc:  # truncated streams and broken chunks surface as many types
        raise SaemiError(f"image file is truncated or corrupt: {exc}", code="not_an_image") from exc
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB" if img.mode != "1" else "L")
    return np.asarray(img)


def read_micrograph(source, filename=None, max_pixels=None, sidecar=True):
    """Decode an image and read the calibration it carries.

    Parameters
    ----------
    source : bytes, str, Path or ndarray
        Encoded file contents, a file path, or an already decoded array (which
        carries no calibration).
    filename : str, optional
        The name an upload had: its suffix picks the reader when the magic
        bytes do not (MRC files without the ``MAP`` stamp). Default: the
        path's name.
    max_pixels : int, optional
        Reject images with more pixels than this, checked before the pixels
        are decoded. Default ``$SAEMI_MAX_PIXELS`` or 50 megapixels.
    sidecar : bool
        For a path: read a Hitachi or JEOL ``.txt`` beside the image when the
        file itself carries no calibration.

    Returns
    -------
    image : ndarray, shape (H, W, 3), dtype uint8
        See :func:`to_uint8` for how 16-bit, 32-bit and float data are mapped.
    calibration : saemi.calibration.Calibration
        ``source='file'`` with the value, or ``nm_per_pixel`` None with the
        reason in ``warnings`` (unreadable or implausible metadata) or nothing
        (the file carries none).

    Raises
    ------
    SaemiError
        With code ``not_an_image``, ``too_small``, ``too_large``, ``empty`` or ``not_found``.

    Examples
    --------
    >>> image, cal = read_micrograph(np.zeros((40, 50), np.uint16))
    >>> image.shape, cal.nm_per_pixel
    ((40, 50, 3), None)
    """
    if isinstance(source, np.ndarray):
        check_size(source.shape[0], source.shape[1] if source.ndim > 1 else 1, max_pixels)
        return to_rgb(source), Calibration()
    path = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise SaemiError(f"no such file: {path}", code="not_found")
        data = path.read_bytes()
        filename = filename or path.name
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise SaemiError(f"cannot read an image from a {type(source).__name__}", code="not_an_image")
    if len(data) == 0:
        raise SaemiError("the file is empty (0 bytes)", code="empty")
    kind = _sniff(data, filename)
    if kind == "tiff":
        array, record = _read_tiff(data, max_pixels)
    elif kind in ("dm", "emd", "mrc"):
        array, record = _read_em(kind, data, path, filename, max_pixels)
    else:
        array, record = _read_pil(data, max_pixels), Calibration()
    image = to_rgb(array)
    if path is not None and sidecar and not record.nm_per_pixel:
        side = read_sidecar(path, image.shape[1])
        if side is not None:
            side.warnings[:0] = record.warnings
            side.notes[:0] = record.notes
            record = side
    return image, record


def load_image(source, max_pixels=None):
    """Decode an image to an RGB uint8 array at its original resolution.

    :func:`read_micrograph` without the calibration record.

    Parameters
    ----------
    source : bytes, str, Path or ndarray
        Encoded file contents, a file path, or an already decoded array.
        PNG, JPEG, TIFF (8/16/32-bit and float, multi-page: the first page),
        BMP, GIF, DM3/DM4, EMD, MRC; grey, grey+alpha, RGB, RGBA and palette images.
    max_pixels : int, optional
        Reject images with more pixels than this (decompression bombs).
        Default ``$SAEMI_MAX_PIXELS`` or 50 megapixels.

    Returns
    -------
    ndarray, shape (H, W, 3), dtype uint8

    Raises
    ------
    SaemiError
        With code ``not_an_image``, ``too_small``, ``too_large`` or ``empty``.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((40, 50), np.uint16)).shape
    (40, 50, 3)
    """
    return read_micrograph(source, max_pixels=max_pixels, sidecar=False)[0]


def check_content(image):
    """Raise :class:`SaemiError` if an image holds nothing to analyse (one flat value).

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    """
    if int(image.max()) == int(image.min()):
        shade = "black" if image.max() == 0 else ("white" if image.max() == 255 else f"the single value {int(image.max())}")
        raise SaemiError(f"image is uniformly {shade}; there is nothing to analyse", code="blank_image")
