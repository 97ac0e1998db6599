"""The page's sample pieces (saemi.ui.sample): requests, figure, session files, parking uploads, callbacks."""

import base64
import io
import json
import zipfile

import numpy as np
import pytest

from saemi.sample import check_session
from saemi.ui import controls, sample
from uihelpers import SETTINGS, FakeClient, _upload_inputs, call, micrograph_png

ID_A, ID_B = "a" * 24, "b" * 24


def two_image_sample():
    s = sample.new_sample("run7", SETTINGS, [
        {"image_id": ID_A, "filename": "a.png", "width": 160, "height": 120, "nm": 2.0, "settings": None,
         "removed": {"key": controls.analysis_key(ID_A, SETTINGS), "labels": [3, 4]}},
        {"image_id": ID_B, "filename": "b.png", "width": 160, "height": 120, "nm": None,
         "settings": {**SETTINGS, "min_distance_fraction": 0.8},
         # exclusions made under other settings: they point at other particles now, and are not sent
         "removed": {"key": controls.analysis_key(ID_B, SETTINGS), "labels": [1]}}])
    return s


def test_each_image_is_sent_with_its_own_settings_exclusions_and_calibration():
    req = sample.request_images(two_image_sample())
    assert [r["image_id"] for r in req] == [ID_A, ID_B]
    assert req[0]["settings"]["removed_labels"] == [3, 4] and req[0]["settings"]["min_distance_fraction"] == 0.6
    assert req[0]["nm_per_pixel"] == 2.0 and req[1]["nm_per_pixel"] is None
    assert req[1]["settings"]["min_distance_fraction"] == 0.8 and req[1]["settings"]["removed_labels"] == []


def test_filter_fields_become_open_ended_ranges():
    assert sample.filters_of(None, "", 0.6, None, None, 2) == {"circularity": [0.6, None], "aspect_ratio": [None, 2.0]}
    assert sample.filters_of(None, None, None, None, None, None) == {}


def test_bins_are_log_spaced_on_a_log_axis():
    v = np.random.default_rng(0).lognormal(3, 0.4, 500)
    edges = sample.bin_edges(v, log=True)
    ratios = edges[1:] / edges[:-1]
    assert np.allclose(ratios, ratios[0]) and edges[0] <= v.min() and edges[-1] >= v.max() * (1 - 1e-9)
    lin = sample.bin_edges(v)
    assert np.allclose(np.diff(lin), np.diff(lin)[0]) and 5 <= len(lin) - 1 <= 60
    assert list(sample.bin_edges([])) == [0.0, 1.0] and len(sample.bin_edges([5.0, 5.0])) > 2


def stats_of(values, weighting="number"):
    from saemi.measure import particle_table
    from saemi.sample import public, sample_statistics

    yy, xx = np.mgrid[:300, :300]
    lab = np.zeros((300, 300), np.int32)
    for i, r in enumerate(values, start=1):
        cy, cx = 25 + (i - 1) // 6 * 50, 25 + (i - 1) % 6 * 50
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return public(sample_statistics({"x.png": particle_table(lab)}, {"x.png": 1.5}, weighting=weighting))


def test_the_figure_draws_bars_fits_and_the_cumulative_curve_that_scale_to_the_counts():
    stats = stats_of([6, 7, 8, 8, 9, 9, 10, 10, 11, 12, 14, 16])
    fig = sample.sample_figure(stats, log=True, show=("lognormal", "normal", "cumulative"), name="run7")
    names = [t.name for t in fig.data]
    assert names[0] == "particles" and names[1].startswith("log-normal: median") and "GSD" in names[1]
    assert names[2].startswith("normal: mean") and names[3] == "cumulative (%)"
    assert fig.layout.xaxis.type == "log" and fig.layout.meta["count"] == 12 == sum(fig.data[0].y)
    # the fitted curve stands for the same particles as the bars: its area over the bars is about n
    x, y = np.asarray(fig.data[1].x), np.asarray(fig.data[1].y)
    width = np.log(fig.data[0].x[1] / fig.data[0].x[0])
    assert np.trapezoid(y / x, x) / width == pytest.approx(12, rel=0.05)
    assert fig.data[3].y[-1] == pytest.approx(100)
    volume = sample.sample_figure(stats_of([6, 7, 8, 9, 16], "volume"), show=("lognormal",))
    assert volume.layout.yaxis.title.text == "Volume (%)" and sum(volume.data[0].y) == pytest.approx(100)
    assert len(volume.data) == 1  # fits are of the number distribution: not drawn over volume bars


def test_fit_text_names_the_parameters():
    text = json.dumps(sample.fit_text(stats_of([6, 7, 8, 8, 9, 10, 12])).__repr__())
    assert "median" in text and "geometric SD" in text and "KS distance" in text
    assert "at least 3" in json.dumps(repr(sample.fit_text(stats_of([6, 7]))))


def test_a_session_document_round_trips_through_the_checker():
    s = two_image_sample()
    s["current"] = 1
    view = {"sample-metric": "feret_max", "filter-circularity-min": 0.7}
    doc = check_session(json.dumps(sample.session_document(s, view)))
    assert doc["current"] == 1 and [im["filename"] for im in doc["images"]] == ["a.png", "b.png"]
    assert doc["images"][0]["removed"] == [3, 4] and doc["images"][1]["removed"] == []
    assert doc["images"][1]["settings"]["min_distance_fraction"] == 0.8 and doc["images"][0]["nm_per_pixel_in_force"] == 2.0
    assert doc["sample"]["filters"] == {"circularity": [0.7, None]} and doc["sample"]["view"] == view


def test_parked_uploads_are_taken_once(tmp_path):
    st = sample.Staging(tmp_path)
    token = st.put(b"\x89PNG data", "Größe ünd name.png")
    assert st.take(token) == (b"\x89PNG data", "Größe ünd name.png")
    assert st.take(token) is None
    with pytest.raises(Exception):
        st.take("../../etc/passwd")


def data_url(data, mime="application/zip"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_a_zip_upload_is_parked_and_queued_with_the_junk_named(tmp_path, monkeypatch):
    from saemi.ui import create_dash_app

    monkeypatch.setenv("SAEMI_STAGING_DIR", str(tmp_path / "staging"))
    dash_app = create_dash_app(client=FakeClient())
    buf = io.BytesIO()
    png = micrograph_png()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("run/a.png", png)
        z.writestr("run/b.png", png)
        z.writestr("run/notes.txt", "x")
        z.writestr("../evil.png", png)
    # one callback takes every upload: one image is analysed at once, several or a zip are queued
    out = next(k for k in dash_app.callback_map if "queue-store.data" in k and "image-store.data" in k)
    inputs, state = _upload_inputs([data_url(buf.getvalue())], ["run7.zip"])
    status, body = call(dash_app, out, inputs, state)
    assert status == 200
    resp = body["response"]
    queue = resp["queue-store"]["data"]
    assert [i["filename"] for i in queue["items"]] == ["a.png", "b.png"]
    assert resp["sample-store"]["data"]["name"] == "run7" and resp["sample-store"]["data"]["images"] == []
    assert "image-store" not in resp and resp["sample-progress"]["hidden"] is False
    skipped = resp["sample-skipped"]["children"]
    assert "run7.zip: run/notes.txt (not an image" in skipped and "run7.zip: ../evil.png (unsafe name" in skipped
    # nothing to analyse: said, no queue
    status, body = call(dash_app, out, *_upload_inputs([data_url(b"PK\x03\x04 garbage"), data_url(b"")],
                                                       ["bad.zip", "empty.png"]))
    resp = body["response"]
    assert "queue-store" not in resp and "Nothing to analyse" in resp["upload-error"]["children"]
    assert "bad.zip (the zip archive cannot be read" in resp["upload-error"]["children"]
    assert "empty.png" in resp["upload-error"]["children"]
    # the parked files are on disk under the staging folder, by random token, not by their names
    parked = [p.name for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert len(parked) == 2 and not any("a.png" in p or "evil" in p for p in parked)
