"""Samples (saemi.sample): zip uploads as hostile input, the combined distribution, filters, session files;
and the service's ``sample`` on real analyses of real EMPS images."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from saemi.cache import DiskStore
from saemi.errors import SaemiError
from saemi.measure import particle_table
from saemi.sample import (MAX_ZIP_RATIO, check_filters, check_session, is_zip, sample_statistics, summary_rows,
                          unique_name, unpack_zip)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # the bytes are only carried here, never decoded


def zip_of(members, compression=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def test_a_zip_gives_its_images_and_names_what_it_skipped():
    data = zip_of([("run1/a.png", PNG), ("run1/notes.txt", b"hello"), ("run2/a.png", PNG + b"x"),
                   ("__MACOSX/run1/._a.png", b"junk"), (".DS_Store", b"junk"), ("b.TIF", PNG)])
    images, skipped = unpack_zip(data)
    assert [n for n, _ in images] == ["a.png", "a (2).png", "b.TIF"]
    assert images[1][1] == PNG + b"x"
    assert skipped == [("run1/notes.txt", "not an image (PNG, JPEG, TIFF, BMP, GIF, DM3/DM4, EMD or MRC expected)")]
    assert is_zip("x.ZIP") and is_zip("x", data) and not is_zip("x.png", PNG)


def test_a_zip_with_path_traversal_names_keeps_nothing_outside():
    data = zip_of([("../../etc/evil.png", PNG), ("/abs.png", PNG), ("ok.png", PNG)])
    images, skipped = unpack_zip(data)
    assert [n for n, _ in images] == ["ok.png"]
    assert {n for n, _ in skipped} == {"../../etc/evil.png", "/abs.png"}
    assert all("unsafe name" in why for _, why in skipped)


@pytest.mark.parametrize("members, limits, message", [
    ([(f"{i}.png", PNG) for i in range(12)], {"max_members": 10}, "holds 12 entries; at most 10"),
    ([(f"{i}.png", PNG) for i in range(6)], {"max_images": 5}, "more than 5 images"),
    ([("big.png", PNG * 40)], {"max_bytes": 1000}, "over 0.000953674 MB uncompressed"),
    ([("notes.txt", b"x"), ("doc.pdf", b"y")], {}, "holds no image: notes.txt (not an image"),
])
def test_a_zip_over_a_limit_is_refused_with_the_reason(members, limits, message):
    with pytest.raises(SaemiError, match="zip archive") as err:
        unpack_zip(zip_of(members), **limits)
    assert message in err.value.message and err.value.code == "bad_upload"


def test_a_zip_bomb_and_garbage_are_refused():
    bomb = zip_of([("bomb.png", b"\x00" * (4 * 2**20))])
    with pytest.raises(SaemiError, match="zip bomb") as err:
        unpack_zip(bomb)
    assert f"{MAX_ZIP_RATIO}" not in err.value.message or "times" in err.value.message
    with pytest.raises(SaemiError, match="cannot be read"):
        unpack_zip(b"PK\x03\x04 not really a zip")


def test_unique_names():
    seen = {}
    assert [unique_name(n, seen) for n in ("a.png", "a.png", "a (2).png", "a.png")] == \
        ["a.png", "a (2).png", "a (2) (2).png", "a (3).png"]


def discs(h, w, radii):
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int32)
    for i, r in enumerate(radii, start=1):
        cy, cx = 20 + (i - 1) // 5 * 40, 20 + (i - 1) % 5 * 40
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


@pytest.fixture
def two_images():
    a = particle_table(discs(200, 200, [5, 6, 7, 8, 9, 10, 11]))
    b = particle_table(discs(200, 200, [12, 13, 14]))
    return {"a.png": a, "b.png": b}


def test_the_combined_distribution_pools_every_image_in_one_unit(two_images):
    stats = sample_statistics(two_images, {"a.png": 2.0, "b.png": 4.0})
    s = stats["summary"]
    assert stats["length_unit"] == "nm" and s["count"] == 10 == len(stats["table"]) == len(stats["values"])
    d = np.concatenate([two_images["a.png"]["equivalent_diameter_px"] * 2, two_images["b.png"]["equivalent_diameter_px"] * 4])
    assert s["mean"] == pytest.approx(d.mean()) and s["d50"] == pytest.approx(np.median(d))
    assert stats["table"]["image"].tolist() == ["a.png"] * 7 + ["b.png"] * 3
    assert [r["counted"] for r in stats["per_image"]] == [7, 3]
    assert stats["lognormal"]["median"] == pytest.approx(np.exp(np.log(d).mean()))
    assert len(stats["lognormal"]["x"]) == 200 and max(stats["lognormal"]["pdf"]) > 0
    assert stats["cumulative"]["f"][-1] == pytest.approx(1.0)


def test_one_uncalibrated_image_puts_the_sample_in_px_and_says_why(two_images):
    stats = sample_statistics(two_images, {"a.png": 2.0, "b.png": None})
    assert stats["length_unit"] == "px" and "1 of 2 images have a calibration" in stats["note"]


def test_filters_drive_statistics_and_list_what_they_leave_out(two_images):
    stats = sample_statistics(two_images, {"a.png": 1.0, "b.png": 1.0},
                              filters={"size": [15, None], "circularity": [0.5, 1.0]})
    kept = stats["table"]["equivalent_diameter_nm"]
    assert (kept >= 15).all() and stats["summary"]["count"] == len(kept) < 10
    left_out = stats["filtered"]["a.png"]
    a = two_images["a.png"]
    assert left_out == a.loc[a["equivalent_diameter_px"] < 15, "label"].tolist() and left_out
    assert sum(r["filtered"] for r in stats["per_image"]) == 10 - len(kept)
    rows = summary_rows(stats, "my sample")
    assert rows[-1]["status"] == "sample" and rows[-1]["counted"] == len(kept) and rows[-1]["found"] == 10


def test_volume_weighting_moves_d50_to_the_big_particles(two_images):
    n = sample_statistics(two_images, {"a.png": 1.0, "b.png": 1.0})["summary"]
    v = sample_statistics(two_images, {"a.png": 1.0, "b.png": 1.0}, weighting="volume")["summary"]
    assert v["d50"] > n["d50"] and v["weighting"] == "volume" and v["count"] == n["count"]


@pytest.mark.parametrize("filters, message", [
    ({"size": [5, 2]}, "low end 5 is above the high end 2"), ({"size": [1]}, "must be [low, high]"),
    ({"colour": [1, 2]}, "unknown filter 'colour'"), ({"circularity": ["x", 1]}, "'x' is not a number"),
])
def test_bad_filters_are_named(filters, message):
    with pytest.raises(SaemiError, match="filter") as err:
        check_filters(filters)
    assert message in err.value.message


def test_session_files_are_checked():
    good = {"format": "saemi-session", "version": 1, "images": [{"image_id": "x" * 24, "filename": "a.png"}],
            "sample": {"filters": {"size": [1, None]}}, "current": 7}
    assert check_session(json.dumps(good))["current"] == 0  # out of range: the first image
    for doc, message in [("{nope", "not JSON"), ({"images": []}, "not a SAEMI session file"),
                         ({**good, "version": 9}, "version 9"), ({**good, "images": []}, "lists no images"),
                         ({**good, "images": [{"filename": "a.png"}]}, "lacks an image_id"),
                         ({**good, "sample": {"filters": {"size": [3, 1]}}}, "low end 3")]:
        with pytest.raises(SaemiError) as err:
            check_session(doc)
        assert message in err.value.message


# --- the service, on the real model and real images ---------------------------------------------

@pytest.fixture
def service(tmp_path, trained_segmenter):
    from saemi.service import AnalysisService

    return AnalysisService(segmenter_factory=lambda: trained_segmenter,
                           store=DiskStore(tmp_path / "cache", 512 * 2**20, 3600))


@pytest.mark.slow
def test_the_service_pools_real_analyses_with_exclusions_and_calibrations(service, emps_images):
    ids = [service.segment(p.read_bytes(), p.name)["image_id"] for p in emps_images[:2]]
    singles = [service.analyze(image_id=i, include_images=False) for i in ids]
    first = singles[0]["particles"]
    gone = [first[0]["label"], first[1]["label"]]
    items = [{"image_id": ids[0], "settings": {"removed_labels": gone}, "nm_per_pixel": 2.0},
             {"image_id": ids[1], "nm_per_pixel": 3.0}]
    stats = service.sample(items)
    counts = [len(s["particles"]) for s in singles]
    assert stats["summary"]["count"] == counts[0] - 2 + counts[1] == len(stats["table"])
    assert [r["counted"] for r in stats["per_image"]] == [counts[0] - 2, counts[1]]
    assert [r["image_id"] for r in stats["per_image"]] == ids
    assert stats["length_unit"] in ("nm", "um")
    again = service.sample(items, filters={"circularity": [0.9, None]})
    assert again["summary"]["count"] < stats["summary"]["count"]
    assert set(again["filtered"]) == set(ids) and sum(map(len, again["filtered"].values())) == \
        stats["summary"]["count"] - again["summary"]["count"]
    preview = service.preview(ids[1])
    assert preview["image_id"] == ids[1] and preview["preview"]["jpeg"] and preview["width"] > 0
    with pytest.raises(SaemiError) as err:
        service.sample([{"image_id": "nope" * 6}])
    assert err.value.code == "not_found"
    with pytest.raises(SaemiError, match="non-empty list"):
        service.sample([])


@pytest.mark.slow
def test_the_api_pools_a_sample_and_writes_its_csvs(tmp_path, emps_images, trained_segmenter):
    """POST /api/v1/sample and GET .../preview through the Flask app, with the real model."""
    from saemi.api import create_app

    app = create_app({"SAEMI_LOAD": "lazy", "SAEMI_CACHE_DIR": str(tmp_path / "cache"), "TESTING": True})
    app.extensions["saemi"]._factory = lambda: trained_segmenter
    c = app.test_client()
    ids = []
    for p in emps_images[:2]:
        r = c.post("/api/v1/segment", data={"file": (io.BytesIO(p.read_bytes()), p.name)})
        assert r.status_code == 200, r.json
        ids.append(r.json["image_id"])
    body = {"images": [{"image_id": ids[0], "nm_per_pixel": 2.0}, {"image_id": ids[1], "nm_per_pixel": 2.0}],
            "filters": {"circularity": [0.5, None]}}
    r = c.post("/api/v1/sample", json=body)
    assert r.status_code == 200, r.json
    stats = r.json
    assert "table" not in stats and stats["summary"]["count"] == len(stats["values"])
    assert [row["image_id"] for row in stats["per_image"]] == ids and stats["lognormal"]["gsd"] > 1
    r = c.post("/api/v1/sample", json={**body, "format": "particles.csv", "name": "run 7"})
    assert r.status_code == 200 and r.headers["Content-Disposition"].endswith('filename="run_7_particles.csv"')
    rows = list(pd.read_csv(io.StringIO(r.get_data(as_text=True)))["image"])
    assert len(rows) == stats["summary"]["count"] and set(rows) == {p.name for p in emps_images[:2]}
    r = c.post("/api/v1/sample", json={**body, "format": "summary.csv"})
    summary = pd.read_csv(io.StringIO(r.get_data(as_text=True)))
    assert list(summary["status"]) == ["image", "image", "sample"] and summary["count"].iloc[-1] == len(rows)
    r = c.get(f"/api/v1/analyses/{ids[0]}/preview")
    assert r.status_code == 200 and r.json["preview"]["jpeg"]
    for bad, code, message in [({"images": []}, 422, "non-empty list"), ({**body, "colour": 1}, 422, "colour"),
                               ({**body, "format": "xls"}, 422, "format"),
                               ({**body, "filters": {"size": [9, 1]}}, 422, "low end 9"),
                               ({"images": [{"image_id": "x" * 24}]}, 404, "unknown image_id")]:
        r = c.post("/api/v1/sample", json=bad)
        assert r.status_code == code and message in r.json["error"]["message"], (bad, r.json)
