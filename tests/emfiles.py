"""Electron-microscopy files written the way the instruments write them, for tests.

* Zeiss SmartSEM TIFF: tag 34118 (``CZ_SEM``), a CR-LF text block of
  ``AP_...``/``DP_...`` parameter names, each followed by ``Label = value unit``.
* FEI/Thermo TIFF: tag 34682 (``FEI_HELIOS``), INI-like text with ``[Scan]``
  ``PixelWidth=`` in metres, ``[Beam] HV=`` in volts, ``[Image] ResolutionX=``.
* Tescan TIFF: tag 50431, BYTE, ``Key=Value\\r\\n`` fields with ``PixelSizeX`` in
  metres (the layout Gwyddion's Tescan reader parses).
* ImageJ and OME-TIFF: written by tifffile's own ImageJ and OME writers.
* DM3/DM4: RosettaSciIO has no DigitalMicrograph writer (nor has any other
  maintained package), so :func:`write_dm` builds a minimal file by the tag
  structure RosettaSciIO's reader parses (header, root tag group, ImageList
  with one image: Calibrations.Dimension Scale/Units/Origin, DataType,
  Dimensions, Data, ImageTags."Microscope Info"). It is a test-made file, not
  one saved by Gatan's software.
* EMD: Berkeley EMD written by RosettaSciIO's own EMD writer.
* MRC: written by ``mrcfile`` (the CCP-EM reference library), voxel size in Å.
"""

import struct

import numpy as np
import tifffile


def zeiss_text(pixel="7.344 nm", mag="50.00 K X", kv="5.00 kV", detector="InLens", store=None):
    lines = ["", "0", "AP_IMAGE_PIXEL_SIZE", f"Image Pixel Size = {pixel}", "AP_MAG", f"Mag = {mag}",
             "AP_ACTUALKV", f"EHT = {kv}", "DP_DETECTOR_CHANNEL", f"Signal A = {detector}",
             "AP_WD", "WD = 5.1 mm"]
    if store:
        lines += ["DP_IMAGE_STORE", f"Store resolution = {store}"]
    return "\r\n".join(lines) + "\r\n"


def fei_text(pixel_m=3.37e-09, resolution_x=None, hv=20000, detector="ETD", system="Quanta FEG 250"):
    text = (f"[User]\r\nDate=10/06/2026\r\nTime=10:12:44 AM\r\n[System]\r\nType=SEM\r\nSystemType={system}\r\n"
            f"[Beam]\r\nHV={hv}\r\nSpot=3\r\n[Scan]\r\nPixelWidth={pixel_m}\r\nPixelHeight={pixel_m}\r\n"
            f"HorFieldsize={pixel_m * (resolution_x or 512)}\r\nDwelltime=3e-06\r\n"
            f"[Detectors]\r\nNumber=1\r\nName={detector}\r\nMode=SE\r\n")
    if resolution_x:
        text += f"[Image]\r\nResolutionX={resolution_x}\r\nResolutionY={resolution_x * 3 // 4}\r\n"
    return text


def tescan_bytes(pixel_m=7.8125e-09, device="MIRA3 TESCAN"):
    body = (f"[MAIN]\r\nDevice={device}\r\nHV=15000.0\r\nPixelSizeX={pixel_m}\r\nPixelSizeY={pixel_m}\r\n"
            "Magnification=20000\r\n")
    return b"\x00\x01binary\x00\r\n" + body.encode("ascii") + b"\x00\x00"


def write_tiff(path, data, tag=None, text=None, **kw):
    """A TIFF with one private text tag (number, text or bytes), written as the instruments store it."""
    extratags = []
    if tag is not None:
        value = text.encode("latin-1") if isinstance(text, str) else bytes(text)
        dtype = 1 if tag == 50431 else 2  # Tescan's tag is BYTE, the others ASCII
        extratags.append((tag, dtype, len(value), value, True))
    tifffile.imwrite(path, data, extratags=extratags, **kw)
    return path


# --------------------------------------------------------------------------- DM3 / DM4

_DM_TYPES = {np.dtype("int16"): (2, 1), np.dtype("float32"): (6, 2), np.dtype("uint8"): (10, 6),
             np.dtype("int32"): (3, 7), np.dtype("uint16"): (4, 10), np.dtype("uint32"): (5, 11)}


class _DM:
    def __init__(self, version):
        self.v = version
        self.lq = ">i" if version == 3 else ">q"  # DM4 widens counts and sizes to 8 bytes

    def name(self, name):
        b = name.encode("latin-1")
        return struct.pack(">h", len(b)) + b

    def group(self, name, entries):
        content = struct.pack(self.lq, len(entries)) + b"".join(entries)
        size = struct.pack(">q", len(content)) if self.v == 4 else b""  # DM4: the group's size
        return b"\x14" + self.name(name) + b"\x00\x01" + size + content

    def _data(self, name, payload):
        pad = b"\x00" * 8 if self.v == 4 else b""  # DM4: the tag's byte size before the delimiter
        return b"\x15" + self.name(name) + pad + b"%%%%" + payload

    def simple(self, name, value, etype):
        fmt = {2: "<h", 3: "<i", 4: "<H", 5: "<I", 6: "<f", 7: "<d", 8: "<B"}[etype]
        return self._data(name, struct.pack(self.lq, 1) + struct.pack(self.lq, etype) + struct.pack(fmt, value))

    def array(self, name, values, etype, raw=None):
        raw = raw if raw is not None else b"".join(struct.pack("<H", v) for v in values)
        n = len(values)
        return self._data(name, struct.pack(self.lq, 3) + struct.pack(self.lq, 20) + struct.pack(self.lq, etype)
                          + struct.pack(self.lq, n) + raw)

    def string(self, name, text):
        return self.array(name, [ord(c) for c in text], 4)


def write_dm(path, data, scale=0.5, units="nm", version=3, magnification=None, voltage=None, microscope=None):
    """A minimal DM3 (or DM4) file holding one 2-D image, calibrated ``scale`` ``units`` per pixel."""
    data = np.ascontiguousarray(data)
    eltype, datatype = _DM_TYPES[data.dtype]
    h, w = data.shape
    dm = _DM(version)
    dims = [dm.group("", [dm.simple("Origin", 0.0, 6), dm.simple("Scale", scale, 6), dm.string("Units", units)])
            for _ in range(2)]
    brightness = dm.group("Brightness", [dm.simple("Origin", 0.0, 6), dm.simple("Scale", 1.0, 6),
                                         dm.string("Units", "")])
    image_data = dm.group("ImageData", [
        dm.group("Calibrations", [brightness, dm.group("Dimension", dims)]),
        dm._data("Data", struct.pack(dm.lq, 3) + struct.pack(dm.lq, 20) + struct.pack(dm.lq, eltype)
                 + struct.pack(dm.lq, data.size) + data.astype(data.dtype.newbyteorder("<")).tobytes()),
        dm.simple("DataType", datatype, 3),
        dm.group("Dimensions", [dm.simple("", w, 3), dm.simple("", h, 3)]),
    ])
    info = []
    if magnification is not None:
        info.append(dm.simple("Indicated Magnification", float(magnification), 7))
    if voltage is not None:
        info.append(dm.simple("Voltage", float(voltage), 7))
    if microscope is not None:
        info.append(dm.string("Name", microscope))
    tags = dm.group("ImageTags", [dm.group("Microscope Info", info)] if info else [])
    image = dm.group("", [image_data, tags, dm.string("Name", "test image")])
    root = b"\x00\x01" + struct.pack(dm.lq, 1) + dm.group("ImageList", [image])
    size = struct.pack(">i" if version == 3 else ">q", len(root) + 16)
    blob = struct.pack(">i", version) + size + struct.pack(">i", 1) + root + b"\x00" * 8
    with open(path, "wb") as fh:
        fh.write(blob)
    return path


def write_emd(path, data, scale=0.25, units="nm"):
    """A Berkeley EMD file written by RosettaSciIO's own EMD writer."""
    from rsciio.emd import file_writer

    h, w = data.shape
    signal = {"data": data, "axes": [
        {"name": "y", "size": h, "scale": scale, "offset": 0.0, "units": units, "navigate": False},
        {"name": "x", "size": w, "scale": scale, "offset": 0.0, "units": units, "navigate": False}],
        "metadata": {"General": {"title": "image"}, "Signal": {"signal_type": ""}}, "original_metadata": {}}
    file_writer(str(path), signal)
    return path


def write_mrc(path, data, voxel_angstrom=None):
    """An MRC file written by ``mrcfile``; ``voxel_angstrom`` None leaves the cell size unset."""
    import mrcfile

    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data))
        if voxel_angstrom is not None:
            m.voxel_size = voxel_angstrom
    return path


def write_velox_emd(path, data, pixel_m=2.5e-10, voltage=200000, magnification=2000000, model="Talos F200X",
                    chunked=True):
    """A Velox EMD file built with h5py in the layout RosettaSciIO's Velox reader parses.

    Velox itself is closed software and RosettaSciIO writes only Berkeley EMD, so
    this is a test-made file: ``Version`` (JSON, format "Velox"), the image in
    ``Data/Image/<uuid>/Data`` as (y, x, frame), and its JSON metadata as bytes in
    ``Data/Image/<uuid>/Metadata`` (``BinaryResult.PixelSize`` in ``PixelUnitX``,
    ``Optics``, ``Instrument``, ``Detectors``).
    """
    import json

    import h5py

    meta = {"BinaryResult": {"PixelSize": {"width": str(pixel_m), "height": str(pixel_m)}, "PixelUnitX": "m",
                             "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}, "DetectorIndex": "0"},
            "Detectors": {"Detector-0": {"DetectorName": "HAADF"}},
            "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1764583200"}},
            "Optics": {"AccelerationVoltage": str(voltage), "NominalMagnification": str(magnification)},
            "Instrument": {"InstrumentModel": model}, "Scan": {}}
    raw = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    block = np.zeros((len(raw) + 64, 1), np.uint8)
    block[:len(raw), 0] = raw
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        group = f.create_group("Data/Image/4b2c8f0e6a1d4e7f9c3b5a2d1e0f6a7b")
        h, w = data.shape
        group.create_dataset("Data", data=np.ascontiguousarray(data)[:, :, None],
                             chunks=(h, w, 1) if chunked else None)  # Velox stores a chunk per frame
        group.create_dataset("Metadata", data=block)
    return path


def write_sis_tiff(path, data, pixel_m=1.25e-08, magnification=40000.0, camera="Veleta"):
    """A TIFF with an Olympus SIS tag (33560) in the binary layout tifffile's ``read_sis`` parses.

    No specification is public; tifffile documents the few known fields
    (``'<10xhdd8xd2x34s32s'`` at the offset the first sub-tag names: exponent,
    x and y calibration, magnification, camera name). The sub-tag offset is
    absolute in the file, so the file is written once, the tag's position read
    back, and the offset patched in.
    """
    import math

    exponent = int(math.floor(math.log10(pixel_m)))
    xcal = pixel_m / 10 ** exponent
    header = struct.pack("<4s6xhhhhh6x32sH", b"SIS0", 0, 12, 1, 11, 126, b"test".ljust(32, b"\x00"), 1)
    general = struct.pack("<10xhdd8xd2x34s32s", exponent, xcal, xcal, magnification,
                          camera.encode().ljust(34, b"\x00"), b"image".ljust(32, b"\x00"))
    blob = header + struct.pack("<hhI", 1, 1, 0) + general
    tifffile.imwrite(path, data, extratags=[(33560, 1, len(blob), blob, True)])
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[0].tags[33560].valueoffset
    with open(path, "r+b") as fh:
        fh.seek(start + len(header) + 4)
        fh.write(struct.pack("<I", start + len(header) + 8))
    return path
