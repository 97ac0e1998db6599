"""The calibration a file carries: every reader on files written the instruments' way (tests/emfiles.py).

Each reader's value is asserted exactly; garbage metadata opens the image with
the calibration unset and the reason in the record; precedence and
disagreement warnings; and the CLI over a folder of mixed formats, in-process.
"""

import base64
import csv
import io
import math

import numpy as np
import pytest
import tifffile
from PIL import Image

from emfiles import (fei_text, tescan_bytes, write_dm, write_emd, write_mrc, write_sis_tiff, write_tiff,
                     write_velox_emd, zeiss_text)
from saemi.calibration import Calibration, effective_calibration
from saemi.errors import SaemiError
from saemi.io import SUPPORTED_SUFFIXES, load_image, read_micrograph, to_uint8
from saemi.scalebar import Scale


def ramp(h=64, w=80, dtype=np.uint16, top=4000):
    return (np.arange(h * w) % top).astype(dtype).reshape(h, w)


# --------------------------------------------------------------------------- each reader, exact values

def test_zeiss_cz_sem(tmp_path):
    path = write_tiff(tmp_path / "zeiss.tif", ramp(), 34118, zeiss_text(store="80 * 64"))
    with tifffile.TiffFile(path) as tif:  # the fixture is what tifffile's CZ_SEM parser expects
        assert tif.sem_metadata["ap_image_pixel_size"] == ("Image Pixel Size", 7.344, "nm")
    image, cal = read_micrograph(path)
    assert image.shape == (64, 80, 3)
    assert cal.nm_per_pixel == 7.344 and cal.source == "file" and cal.reader == "zeiss_cz_sem"
    assert cal.magnification == 50000.0 and cal.high_voltage_kv == 5.0 and cal.detector == "InLens"
    assert cal.describe() == "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)"
    assert not cal.warnings


def test_zeiss_picometres_and_micrometres(tmp_path):
    _, pm = read_micrograph(write_tiff(tmp_path / "pm.tif", ramp(), 34118, zeiss_text(pixel="558.2 pm")))
    _, um = read_micrograph(write_tiff(tmp_path / "um.tif", ramp(), 34118, zeiss_text(pixel="1.25 µm")))
    assert pm.nm_per_pixel == 0.5582 and um.nm_per_pixel == 1250.0


def test_fei_helios(tmp_path):
    path = write_tiff(tmp_path / "fei.tif", ramp(), 34682, fei_text(3.37e-09, resolution_x=80))
    with tifffile.TiffFile(path) as tif:
        assert tif.fei_metadata["Scan"]["PixelWidth"] == 3.37e-09
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 3.37 and cal.reader == "fei"
    assert cal.high_voltage_kv == 20.0 and cal.detector == "ETD" and cal.instrument == "Quanta FEG 250"
    assert cal.details.startswith("FEI/Thermo FEI_HELIOS")


def test_fei_metadata_of_a_resized_image_is_not_applied(tmp_path):
    path = write_tiff(tmp_path / "fei.tif", ramp(), 34682, fei_text(3.37e-09, resolution_x=1024))
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel is None
    assert "1024 px wide" in cal.warnings[0] and "80 px wide" in cal.warnings[0]


def test_tescan(tmp_path):
    _, cal = read_micrograph(write_tiff(tmp_path / "tescan.tif", ramp(), 50431, tescan_bytes(7.8125e-09)))
    assert cal.nm_per_pixel == 7.8125 and cal.reader == "tescan" and cal.instrument == "MIRA3 TESCAN"


def test_imagej_resolution_and_unit(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, ramp(), imagej=True, resolution=(1 / 2.5, 1 / 2.5), metadata={"unit": "nm"})
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 2.5 and cal.reader == "imagej"
    tifffile.imwrite(path, ramp(), imagej=True, resolution=(1 / 0.0125, 1 / 0.0125), metadata={"unit": "micron"})
    assert read_micrograph(path)[1].nm_per_pixel == 12.5


def test_ome_physical_size(tmp_path):
    path = tmp_path / "ome.tif"
    tifffile.imwrite(path, ramp(), ome=True, metadata={"PhysicalSizeX": 1.5, "PhysicalSizeXUnit": "nm"})
    assert read_micrograph(path)[1].nm_per_pixel == 1.5
    tifffile.imwrite(path, ramp(), ome=True, metadata={"PhysicalSizeX": 0.02})  # OME's default unit: µm
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 20.0 and cal.reader == "ome"


@pytest.mark.parametrize("version", [3, 4])
def test_digitalmicrograph(tmp_path, version):
    path = write_dm(tmp_path / f"image.dm{version}", ramp(), scale=0.7344, units="nm", version=version,
                    magnification=50000, voltage=200000, microscope="JEM-2100")
    image, cal = read_micrograph(path)
    assert image.shape == (64, 80, 3)
    assert cal.nm_per_pixel == 0.7344 and cal.reader == "digitalmicrograph"  # float32 in the file, not 0.73439997
    assert cal.magnification == 50000 and cal.high_voltage_kv == 200 and cal.instrument == "JEM-2100"
    # an upload arrives as bytes without a usable name: the magic bytes pick the reader
    _, from_bytes = read_micrograph(path.read_bytes(), filename="upload")
    assert from_bytes.nm_per_pixel == 0.7344


def test_dm_in_micrometres_and_uncalibrated(tmp_path):
    _, um = read_micrograph(write_dm(tmp_path / "um.dm3", ramp(), scale=0.005, units="µm"))
    assert um.nm_per_pixel == 5.0
    _, none = read_micrograph(write_dm(tmp_path / "none.dm3", ramp(), scale=1.0, units=""))
    assert none.nm_per_pixel is None and "no physical unit" in none.notes[0]
    _, diff = read_micrograph(write_dm(tmp_path / "diff.dm3", ramp(), scale=0.01, units="1/nm"))
    assert diff.nm_per_pixel is None and "not a length" in diff.warnings[0]


def test_emd_written_by_rosettasciio(tmp_path):
    path = write_emd(tmp_path / "image.emd", ramp(dtype=np.float32), scale=0.25, units="nm")
    image, cal = read_micrograph(path.read_bytes(), filename="image.emd")
    assert image.shape == (64, 80, 3) and cal.nm_per_pixel == 0.25 and cal.reader == "emd"


@pytest.mark.parametrize("chunked", [True, False])
def test_velox_emd(tmp_path, chunked):
    path = write_velox_emd(tmp_path / "talos.emd", ramp(dtype=np.float32), pixel_m=2.5e-10, chunked=chunked)
    image, cal = read_micrograph(path.read_bytes(), filename="talos.emd")
    assert image.shape == (64, 80, 3) and cal.nm_per_pixel == 0.25 and cal.reader == "emd"
    assert cal.instrument == "Talos F200X" and cal.high_voltage_kv == 200 and cal.magnification == 2e6
    assert cal.details == "Velox EMD, 2.00 MX"


def test_olympus_sis(tmp_path):
    path = write_sis_tiff(tmp_path / "sis.tif", ramp(), pixel_m=1.25e-08, magnification=40000.0)
    with tifffile.TiffFile(path) as tif:  # the fixture is what tifffile's SIS parser reads
        assert tif.sis_metadata["pixelsizex"] == pytest.approx(1.25e-08, rel=1e-12)
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 12.5 and cal.reader == "olympus_sis" and cal.magnification == 40000


def test_mrc_written_by_mrcfile(tmp_path):
    path = write_mrc(tmp_path / "image.mrc", ramp(dtype=np.int16), voxel_angstrom=12.5)
    _, cal = read_micrograph(path.read_bytes(), filename="image.mrc")
    assert cal.nm_per_pixel == 1.25 and cal.reader == "mrc"
    _, none = read_micrograph(write_mrc(tmp_path / "bare.mrc", ramp(dtype=np.int16)))
    assert none.nm_per_pixel is None and "no cell size" in none.notes[0]


def test_hitachi_sidecar(tmp_path):
    path = tmp_path / "hitachi.tif"
    tifffile.imwrite(path, ramp(dtype=np.uint8, top=250))
    path.with_suffix(".txt").write_text("[SemImageFile]\r\nInstructName=S-4800\r\nDataSize=80x64\r\n"
                                        "Magnification=5000\r\nPixelSize=24.8\r\nAcceleratingVoltage=15000 Volt\r\n",
                                        encoding="latin-1")
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 24.8 and cal.reader == "hitachi_txt" and cal.instrument == "S-4800"
    assert cal.magnification == 5000 and cal.high_voltage_kv == 15.0 and "hitachi.txt" in cal.details
    # a sidecar is found only beside a file on disk: the same bytes alone carry no calibration
    assert read_micrograph(path.read_bytes())[1].nm_per_pixel is None


def test_jeol_sidecar(tmp_path):
    path = tmp_path / "jeol.tif"
    tifffile.imwrite(path, ramp(dtype=np.uint8, top=250))
    path.with_suffix(".txt").write_text("$CM_FORMAT JEOL/SEM\n$CM_INSTRUMENT JSM-7600F\n$CM_MAG 5000\n"
                                        "$CM_ACCEL_VOLT 15.00\n$CM_FULL_SIZE 80 64\n$$SM_MICRON_BAR 160\n"
                                        "$$SM_MICRON_MARKER 5um\n")
    _, cal = read_micrograph(path)
    assert cal.nm_per_pixel == 5000 / 160 and cal.reader == "jeol_txt" and cal.instrument == "JSM-7600F"
    assert cal.high_voltage_kv == 15.0


def test_plain_files_carry_no_calibration(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, ramp(), resolution=(300, 300), resolutionunit="INCH")  # print dpi is no calibration
    image, cal = read_micrograph(path)
    assert cal.nm_per_pixel is None and not cal.warnings
    assert (load_image(path) == image).all()


# --------------------------------------------------------------------------- garbage metadata

@pytest.mark.parametrize("tag, text, reason", [
    (34682, "[Scan]\r\nPixelWidth=not-a-number\r\n", "not a number"),
    (34682, "[Scan]\r\nPixelWidth=3.0\r\n", "implausible"),          # 3 m per pixel
    (34682, "[Beam]\r\nHV=5000\r\n", "no [Scan] PixelWidth"),
    (34118, "\r\n0\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = lots\r\n", "could not be read"),
    (34118, "\x00\x07\xff garbage \x01\x02", "no AP_IMAGE_PIXEL_SIZE"),
    (50431, b"\x00\x01\x02\x03 nothing here", "no PixelSizeX"),
])
def test_garbage_metadata_opens_uncalibrated_with_the_reason(tmp_path, tag, text, reason):
    path = write_tiff(tmp_path / "bad.tif", ramp(), tag, text)
    image, cal = read_micrograph(path)
    assert image.shape == (64, 80, 3)
    assert cal.nm_per_pixel is None and cal.source is None
    assert any(reason in w for w in cal.warnings), cal.warnings


def test_corrupt_em_files_are_saemi_errors(tmp_path):
    good = write_dm(tmp_path / "good.dm3", ramp()).read_bytes()
    with pytest.raises(SaemiError, match="DM3/DM4"):
        read_micrograph(good[:200], filename="cut.dm3")
    with pytest.raises(SaemiError, match="EMD"):
        read_micrograph(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, filename="x.emd")
    with pytest.raises(SaemiError):
        read_micrograph(b"no mrc at all" * 100, filename="x.mrc")


def test_size_limit_is_checked_before_the_em_pixels_are_read(tmp_path):
    path = write_dm(tmp_path / "big.dm3", ramp(200, 300))
    with pytest.raises(SaemiError, match="limit") as err:
        read_micrograph(path, max_pixels=10_000)
    assert err.value.code == "too_large"


# --------------------------------------------------------------------------- pages, bit depths, display

def test_multipage_tiff_analyses_page_one_and_lists_the_others(tmp_path):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(ramp(), extratags=[(34118, 2, 0, zeiss_text(), True)])
        tw.write(np.zeros((32, 40), np.float32))
    image, cal = read_micrograph(path)
    assert image.shape == (64, 80, 3) and cal.nm_per_pixel == 7.344
    assert "2 pages" in cal.notes[0] and "40x32 float32" in cal.notes[0]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_deep_images_survive_a_hot_pixel(tmp_path, dtype):
    a = ramp(dtype=dtype).astype(dtype)
    a[0, 0] = 2_000_000_000 if dtype == np.int32 else (65535 if dtype == np.uint16 else 1e30)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, a)
    grey = read_micrograph(path)[0][..., 0]
    assert grey[0, 0] == 255
    # without the percentile stretch everything but the hot pixel would be 0..15
    assert np.percentile(grey, 90) > 200 and np.unique(grey).size > 200


def test_float_nan_maps_to_black():
    a = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    a[5, 5] = np.nan
    out = to_uint8(a)
    assert out[5, 5] == 0 and out.max() == 255


def test_supported_suffixes_include_the_em_formats():
    assert {".dm3", ".dm4", ".emd", ".mrc", ".tif", ".tiff", ".png"} <= SUPPORTED_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)


# --------------------------------------------------------------------------- precedence

def test_precedence_and_disagreement():
    file = Calibration(7.344, "file", "Zeiss CZ_SEM, 50.00 kX", 1.0)
    bar = Scale(100.0, 800.0, "nm", 8.0, (1, 2, 3, 4), None, 0.8, "800 nm")  # 8.0 nm/px: 9 % off
    agree = Scale(100.0, 740.0, "nm", 7.4, (1, 2, 3, 4), None, 0.8, "740 nm")  # 0.8 % off
    r = effective_calibration(file, bar)
    assert r.nm_per_pixel == 7.344 and r.source == "file" and r.scale_bar_nm_per_pixel == 8.0
    assert len(r.warnings) == 1 and "differ by 9 %" in r.warnings[0]
    assert not effective_calibration(file, agree).warnings
    user = effective_calibration(file, bar, user_nm_per_pixel=7.0)
    assert user.nm_per_pixel == 7.0 and user.source == "user" and "7.344" in user.warnings[0]
    assert effective_calibration(None, bar).source == "scale_bar"
    assert effective_calibration(None, bar, scale_mode="none").nm_per_pixel is None
    assert effective_calibration(file, bar, scale_mode="none").nm_per_pixel == 7.344
    assert effective_calibration(None, None).nm_per_pixel is None


def test_record_is_json_safe():
    import json

    d = json.loads(json.dumps(Calibration(7.344, "file", "x", 1.0, magnification=5e4,
                                          warnings=["w"]).to_dict()))
    assert d["nm_per_pixel"] == 7.344 and d["text"].startswith("7.344 nm/px from the file") and d["warnings"] == ["w"]


# --------------------------------------------------------------------------- the CLI over a mixed folder

def test_cli_folder_of_mixed_formats(tmp_path):
    """The real CLI, in-process, with the bundled weights, over a folder of every kind of file."""
    from saemi import cli
    from synth import disc_labels, micrograph

    folder = tmp_path / "in"
    folder.mkdir()
    discs = [(30 + 40 * (i // 4), 25 + 36 * (i % 4), 11) for i in range(12)]
    grey = micrograph(disc_labels((128, 160), discs), seed=3)[..., 0]
    img = grey.astype(np.uint16) * 200 + 1000  # a 16-bit detector image
    write_dm(folder / "tem.dm3", img, scale=0.7344, units="nm")
    with tifffile.TiffWriter(folder / "stack.tif") as tw:
        tw.write(img, extratags=[(34118, 2, 0, zeiss_text(store="160 * 128"), True)])
        tw.write(img)
    tifffile.imwrite(folder / "float.tif", img.astype(np.float32) / 7.0)
    tifffile.imwrite(folder / "hitachi.tif", grey)
    (folder / "hitachi.txt").write_text("[SemImageFile]\nPixelSize=24.8\nDataSize=160x128\n")
    write_emd(folder / "velox.emd", img.astype(np.float32), scale=0.25)
    write_mrc(folder / "cryo.mrc", img.astype(np.int16), voxel_angstrom=12.5)
    out = tmp_path / "out"
    rc = cli.main(["analyze", str(folder), "--out", str(out), "--quiet", "--device", "cpu", "--scale-bar", "none"])
    assert rc == 0
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(out / "summary.csv"))}
    check_sample_row(rows)
    assert set(rows) == {"tem.dm3", "stack.tif", "float.tif", "hitachi.tif", "velox.emd", "cryo.mrc", "hitachi.txt"}
    assert rows.pop("hitachi.txt")["status"] == "skipped"  # the sidecar is read with its image, not analysed
    expect = {"tem.dm3": ("0.7344", "file"), "stack.tif": ("7.344", "file"), "hitachi.tif": ("24.8", "file"),
              "velox.emd": ("0.25", "file"), "cryo.mrc": ("1.25", "file"), "float.tif": ("", "")}
    for name, (nm, source) in expect.items():
        r = rows[name]
        assert r["status"] == "ok", r
        assert (r["nm_per_pixel"], r["calibration_source"]) == (nm, source), (name, r)
        assert r["unit"] == ("nm" if nm else "px")
    assert "2 pages" in rows["stack.tif"]["calibration_notes"]
    assert rows["tem.dm3"]["calibration_details"] == "Gatan DigitalMicrograph"
    assert int(rows["tem.dm3"]["count"]) >= 8  # the twelve discs are found
    with open(out / "tem_particles.csv") as fh:
        particles = list(csv.DictReader(fh))
    assert len(particles) == int(rows["tem.dm3"]["count"])
    for p in particles:
        assert p["nm_per_pixel"] == "0.7344" and p["calibration_source"] == "file"
        assert math.isclose(float(p["equivalent_diameter_nm"]), float(p["equivalent_diameter_px"]) * 0.7344,
                            rel_tol=1e-9)


# --------------------------------------------------------------------------- no path loses the calibration

def _grey16():
    from synth import disc_labels, micrograph

    discs = [(30 + 40 * (i // 4), 25 + 36 * (i % 4), 11) for i in range(12)]
    return micrograph(disc_labels((128, 160), discs), seed=5)[..., 0].astype(np.uint16) * 200 + 1000


def _imagej(path, a):
    tifffile.imwrite(path, a, imagej=True, resolution=(1 / 2.5, 1 / 2.5), metadata={"unit": "nm"})
    return path


def _ome(path, a):
    tifffile.imwrite(path, a, ome=True, metadata={"PhysicalSizeX": 1.5, "PhysicalSizeXUnit": "nm"})
    return path


#: name -> (writer(path, 16-bit image) -> path, expected nm per pixel)
FORMATS = {
    "zeiss.tif": (lambda p, a: write_tiff(p, a, 34118, zeiss_text(store="160 * 128")), 7.344),
    "fei.tif": (lambda p, a: write_tiff(p, a, 34682, fei_text(3.37e-09, resolution_x=160)), 3.37),
    "tescan.tif": (lambda p, a: write_tiff(p, a, 50431, tescan_bytes(7.8125e-09)), 7.8125),
    "sis.tif": (lambda p, a: write_sis_tiff(p, a, 1.25e-08), 12.5),
    "talos.emd": (lambda p, a: write_velox_emd(p, a.astype(np.float32), 2.5e-10), 0.25),
    "imagej.tif": (_imagej, 2.5),
    "ome.tif": (_ome, 1.5),
    "tem.dm3": (lambda p, a: write_dm(p, a, scale=0.7344), 0.7344),
    "tem.dm4": (lambda p, a: write_dm(p, a.astype(np.float32), scale=0.002, units="µm", version=4), 2.0),
    "velox.emd": (lambda p, a: write_emd(p, a.astype(np.float32), scale=0.25), 0.25),
    "cryo.mrc": (lambda p, a: write_mrc(p, a.astype(np.int16), voxel_angstrom=12.5), 1.25),
}


@pytest.fixture(scope="module")
def service(trained_segmenter):
    from saemi.service import AnalysisService

    return AnalysisService(lambda: trained_segmenter)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_no_path_loses_the_calibration(tmp_path, service, name):
    """The same file through the service (what the API answers), the page's upload handler, and a path."""
    from saemi.ui import calibration, upload
    from saemi.ui.client import InProcessClient

    write, nm = FORMATS[name]
    path = write(tmp_path / name, _grey16())
    assert read_micrograph(path)[1].nm_per_pixel == nm
    data = path.read_bytes()
    seg = service.segment(data, name)
    assert seg["calibration"]["nm_per_pixel"] == nm and seg["calibration"]["source"] == "file"
    out = service.analyze(image_id=seg["image_id"], include_images=False)
    assert out["nm_per_pixel"] == nm and out["calibration"]["source"] == "file" and out["summary"]["unit"] == "nm"
    csv_text, _ = service.particles_csv(seg["image_id"])
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows and all(float(r["nm_per_pixel"]) == nm and r["calibration_source"] == "file" for r in rows)
    image, _, status = upload.handle_upload(InProcessClient(service), data, name)
    assert image["nm_per_pixel"] == nm and "from the file" in status
    assert calibration.page_calibration(image["nm_per_pixel"], image)["source"] == "file"
    preview = service.segment(data, name, preview=True)["preview"]  # the page can show it too
    assert preview["stride"] == 1 and Image.open(io.BytesIO(base64.b64decode(preview["jpeg"]))).size[0] == 160


def test_cli_reads_every_format(tmp_path):
    from saemi import cli

    folder = tmp_path / "in"
    folder.mkdir()
    for name, (write, _) in FORMATS.items():
        write(folder / name, _grey16())
    out = tmp_path / "out"
    assert cli.main(["analyze", str(folder), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(out / "summary.csv"))}
    check_sample_row(rows)
    assert set(rows) == set(FORMATS)
    for name, (_, nm) in FORMATS.items():
        assert float(rows[name]["nm_per_pixel"]) == nm and rows[name]["calibration_source"] == "file", rows[name]


# --------------------------------------------------------------------------- the page's calibration line

def test_page_calibration_line():
    import pandas as pd

    from saemi.ui import calibration, particles

    bar = Scale(150.0, 200.0, "nm", 200 / 150, (1, 2, 3, 4), None, 0.8, "200 nm")
    file = Calibration(7.344, "file", "Zeiss CZ_SEM, 50.00 kX", 1.0)
    image = {"calibration": effective_calibration(file, bar).to_dict()}
    line = calibration.page_calibration(7.344, image)
    assert line["text"] == "Calibration: 7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)"
    assert line["source"] == "file" and "differ by" in line["warnings"][0]  # the scale bar disagrees
    typed = calibration.page_calibration("7.3", image)
    assert typed["source"] == "user" and not typed["warnings"]  # within 3 % of the file: nothing to say
    assert calibration.page_calibration(None, image)["text"].startswith("Calibration: none")
    only_bar = {"calibration": effective_calibration(None, bar).to_dict()}
    assert calibration.page_calibration(200 / 150, only_bar)["text"] == (
        "Calibration: 1.333 nm/px from the scale bar read automatically (scale bar 200 nm = 150.0 px)")
    unusable = {"calibration": effective_calibration(Calibration(warnings=["FEI ... implausible"]), None).to_dict()}
    assert calibration.page_calibration(None, unusable)["warnings"] == ["FEI ... implausible"]
    cols = calibration.calibration_csv_columns(7.344, image)
    assert cols == {"nm_per_pixel": 7.344, "calibration_source": "file", "calibration_details": "Zeiss CZ_SEM, 50.00 kX"}
    text = particles.particles_csv(pd.DataFrame({"label": [1, 2], "area_px": [10, 20]}), cols)
    assert text.splitlines()[0] == "label,area_px,nm_per_pixel,calibration_source"
    assert text.splitlines()[1] == "1,10,7.344,file"


def test_upload_accepts_the_em_formats():
    from saemi.ui import upload

    accept = upload.ACCEPT.split(",")
    assert {s for s in SUPPORTED_SUFFIXES} <= set(accept)


def test_calibration_survives_the_shared_cache(tmp_path, trained_segmenter):
    """A segmentation read back from the re-analysis store (another worker) keeps its calibration."""
    from saemi.cache import decode_segmentation, encode_segmentation
    from saemi.pipeline import Settings, segment, split_and_measure

    path = write_tiff(tmp_path / "zeiss.tif", _grey16(), 34118, zeiss_text(store="160 * 128"))
    seg = segment(path, trained_segmenter)
    again = decode_segmentation(encode_segmentation(seg))
    assert again.calibration == seg.calibration and again.calibration.nm_per_pixel == 7.344
    assert split_and_measure(again, Settings()).nm_per_pixel == 7.344


def check_sample_row(rows):
    """Pop the folder's pooled row: every particle of the images analysed, in nm when all are calibrated."""
    name, sample = next((k, r) for k, r in rows.items() if r["status"] == "sample")
    rows.pop(name)
    done = [r for r in rows.values() if r["status"] == "ok"]
    assert name == f"sample of {len(done)} images"
    assert int(sample["count"]) == sum(int(r["count"]) for r in done)
    assert sample["unit"] == ("nm" if all(r["unit"] == "nm" for r in done) else "px")
