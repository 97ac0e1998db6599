"""The REST backend through the real HTTP stack: gunicorn on loopback, ``requests`` as client.

One gunicorn (1 worker, 3 threads) serves the whole module with the bundled
weights (``$SAEMI_WEIGHTS`` overrides). Every endpoint's happy path uses real
EMPS images; every bad input of the error table gets the documented status and
the one JSON error shape; every response is checked against the OpenAPI
document the server itself publishes. A few in-process tests (Flask test
client, no model) cover configuration and failure modes that need another app.
"""

import base64
import concurrent.futures
import io
import struct
import time
import zlib

import jsonschema
import numpy as np
import pytest
import requests
from openapi_spec_validator import validate as validate_spec
from PIL import Image

from livesrv import start_backend, weights_available
from samples import real_image

API = "/api/v1"
MAX_UPLOAD_MB = 8  # small, so the 413 tests send little
IMAGES = ["2ee0518d7a", "70f9f13af4", "aa309f6cec", "7fabcfe23f"]


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images():
    """Bytes of a few real EMPS micrographs (PNG, 256-634 px): shared, else committed stand-ins (samples.py)."""
    return {n: real_image(n).read_bytes() for n in IMAGES}


def size_of(data):
    """(width, height) of an image file's bytes."""
    return Image.open(io.BytesIO(data)).size


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not weights_available():
        pytest.fail("model weights missing: saemi/model_weights/saemi_unet_resnet18.pt (or $SAEMI_WEIGHTS) "
                    "must exist; the API tests run the real network")
    log = tmp_path_factory.mktemp("gunicorn") / "api.log"
    srv = start_backend(env={"SAEMI_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
                             "SAEMI_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
                             "SAEMI_DEVICE": "cpu", "SAEMI_ALLOWED_ORIGINS": "https://lab.example"},
                        threads=3, log_path=log)
    try:
        srv.wait("/api/v1/ready", timeout=240)
        srv.initial_workers = srv.worker_pids()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def spec(server):
    r = requests.get(server.url + API + "/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    validate_spec(doc)  # raises if the document is not valid OpenAPI 3.1
    return doc


def url(server, path):
    return server.url + API + path


def check(spec, resp, path, method="post"):
    """Assert ``resp`` is documented for (path, method, status) and matches its schema."""
    op = spec["paths"][path][method]
    entry = op["responses"].get(str(resp.status_code))
    assert entry is not None, f"{method.upper()} {path} answered undocumented {resp.status_code}: {resp.text[:300]}"
    ctype = resp.headers.get("Content-Type", "").split(";")[0]
    assert ctype in entry["content"], f"{ctype!r} not documented for {resp.status_code} of {path}"
    if ctype == "application/json":
        schema = {"components": spec["components"], **entry["content"][ctype]["schema"]}
        jsonschema.validate(resp.json(), schema, cls=jsonschema.Draft202012Validator)
    return resp


def check_error(spec, resp, status, code=None):
    """The one error shape, with ``status`` (and ``code`` when given); never HTML."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:300]}"
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text[:200]
    schema = {"components": spec["components"], "$ref": "#/components/schemas/Error"}
    body = resp.json()
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    if code:
        assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


def png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def huge_png_header(width=30000, height=30000):
    """A valid, ~110 kB 1-bit PNG of width x height: tiny on the wire, 900 megapixels decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- health, readiness, model, OpenAPI ---------------------------------------------------------

def test_openapi_document_is_valid(spec):
    assert spec["openapi"].startswith("3.")
    for path in ("/health", "/ready", "/model", "/segment", "/analyze", "/analyses/{image_id}/particles.csv"):
        assert path in spec["paths"]


def test_health(server, spec):
    r = check(spec, requests.get(url(server, "/health"), timeout=10), "/health", "get")
    body = r.json()
    assert body["status"] == "ok" and body["model_loaded"] is True and body["device"] == "cpu"
    assert body["load_error"] is None
    assert body["engine"].split()[0] in ("openvino", "onnxruntime", "torch")  # what runs the network


def test_ready(server, spec):
    r = check(spec, requests.get(url(server, "/ready"), timeout=10), "/ready", "get")
    assert r.json()["ready"] is True


def test_model_card(server, spec):
    r = check(spec, requests.get(url(server, "/model"), timeout=10), "/model", "get")
    card = r.json()
    assert card["classes"][0] == "background"
    assert {"threshold", "min_distance_fraction", "min_size_fraction"} <= set(card["postprocess"])
    assert card["size_normalisation"]["network_diameter"] == [16.0, 256.0]


# --- happy paths ----------------------------------------------------------------------------

def test_segment_multipart_then_reanalyse_and_csv(server, spec, images):
    data = images["2ee0518d7a"]
    r = check(spec, requests.post(url(server, "/segment"), files={"file": ("../../etc/passwd sample.png", data)},
                                  timeout=120), "/segment")
    seg = r.json()
    assert (seg["width"], seg["height"]) == size_of(data) == (630, 512)  # the demo image is this one
    assert seg["filename"] == "passwd sample.png"  # a label: the directories are gone, never opened
    assert "network" in seg["timings"]

    t0 = time.perf_counter()
    r = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "min_size": 10, "settings": {"min_distance": 5, "watershed": True},
        "overlay": "filled"}), "/analyze")
    elapsed = time.perf_counter() - t0
    out = r.json()
    assert out["cached"] is True and "network" not in out["timings"]  # the network did not run again
    assert out["settings"]["min_size"] == 10 and out["settings"]["min_distance"] == 5
    assert out["summary"]["count"] == len(out["particles"])
    overlay = Image.open(io.BytesIO(base64.b64decode(out["overlay_png"])))
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["labels_png"]))))
    assert overlay.size == (630, 512) and labels.shape == (512, 630)
    assert labels.max() >= max((p["label"] for p in out["particles"]), default=0)
    assert elapsed < 30

    r = check(spec, requests.get(url(server, f"/analyses/{seg['image_id']}/particles.csv"), timeout=30),
              "/analyses/{image_id}/particles.csv", "get")
    assert r.headers["Content-Disposition"] == 'attachment; filename="passwd_sample_particles.csv"'
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("label,area_px,equivalent_diameter_px")
    assert len(lines) - 1 == out["summary"]["count"]


def test_diameter_is_honoured_over_http(server, spec, images):
    """Issue 20: ``diameter`` at upload and at a re-analysis by image_id; records say which was used."""
    data = images["70f9f13af4"]
    assert "diameter" in spec["components"]["schemas"]["Settings"]["properties"]
    auto = check(spec, requests.post(url(server, "/segment"), files={"file": ("a.png", data)}, timeout=120),
                 "/segment").json()
    assert auto["diameter_source"] == "estimated" and auto["diameter"] > 0
    given = check(spec, requests.post(url(server, "/segment"), files={"file": ("a.png", data)},
                                      data={"diameter": "12"}, timeout=120), "/segment").json()
    assert (given["diameter"], given["diameter_source"]) == (12, "user") and not given["cached"]
    # the same image re-analysed by id with that diameter: the network runs again at its working scale
    out = check(spec, requests.post(url(server, "/analyze"), json={
        "image_id": auto["image_id"], "diameter": 12, "include_images": False}, timeout=120), "/analyze").json()
    assert (out["diameter"], out["diameter_source"]) == (12, "user") and out["settings"]["diameter"] == 12
    same = check(spec, requests.post(url(server, "/analyze"), json={
        "image_id": given["image_id"], "include_images": False}, timeout=120), "/analyze").json()
    assert same["summary"]["count"] == out["summary"]["count"]
    check_error(spec, requests.post(url(server, "/analyze"), json={"image_id": auto["image_id"], "diameter": 0},
                                    timeout=60), 422, "bad_parameter")


def test_analyze_json_base64_with_calibration(server, spec, images):
    data = images["aa309f6cec"]
    body = {"image": base64.b64encode(data).decode(), "filename": "sample.png",
            "settings": {"nm_per_pixel": 2.5, "metric": "feret_max", "exclude_edge": True}}
    out = check(spec, requests.post(url(server, "/analyze"), json=body, timeout=120), "/analyze").json()
    assert out["summary"]["unit"] == "nm" and out["summary"]["metric"] == "feret_max"
    assert out["nm_per_pixel"] == 2.5  # the user's calibration wins over any scale bar
    assert all("feret_max_nm" in p and not p["touches_edge"] for p in out["particles"])
    # removing a particle by label: the rest keep their labels
    if out["particles"]:
        gone = out["particles"][0]["label"]
        again = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
            "image_id": out["image_id"], "settings": {**body["settings"], "removed_labels": [gone]},
            "include_images": False}), "/analyze").json()
        assert gone not in {p["label"] for p in again["particles"]}
        assert again["summary"]["count"] == out["summary"]["count"] - 1
        assert "overlay_png" not in again


def test_data_url_and_raw_body_reuse_the_cache(server, spec, images):
    data = images["2ee0518d7a"]  # segmented by an earlier test
    r = requests.post(url(server, "/segment"), timeout=120,
                      json={"image": "data:image/png;base64," + base64.b64encode(data).decode()})
    first = check(spec, r, "/segment").json()
    r = requests.post(url(server, "/segment") + "?filename=raw.png", data=data,
                      headers={"Content-Type": "image/png"}, timeout=120)
    second = check(spec, r, "/segment").json()
    # the network ran once for both, but each upload gets its own unguessable id and keeps its name
    assert second["cached"] is True and second["image_id"] != first["image_id"]
    assert second["filename"] == "raw.png" and first["filename"] == "image"
    for image_id, name in ((first["image_id"], "image"), (second["image_id"], "raw.png")):
        r = requests.post(url(server, "/analyze"), json={"image_id": image_id, "include_images": False},
                          timeout=60)
        assert check(spec, r, "/analyze").json()["filename"] == name


def test_16bit_tiff_works(server, spec, images):
    import tifffile

    grey = np.asarray(Image.open(io.BytesIO(images["70f9f13af4"])).convert("L")).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, grey * 64 + 100)  # a 14-bit detector range in a 16-bit file
    r = requests.post(url(server, "/analyze"), files={"file": ("scan.tif", buf.getvalue())},
                      data={"min_size": "15", "settings": '{"watershed": true}'}, timeout=120)
    out = check(spec, r, "/analyze").json()
    assert (out["width"], out["height"]) == size_of(images["70f9f13af4"]) and out["settings"]["min_size"] == 15
    assert out["summary"]["count"] >= 0


def _zeiss_tiff(png_bytes):
    """A real EMPS micrograph saved as a 16-bit Zeiss SmartSEM TIFF (CZ_SEM tag, 7.344 nm per pixel)."""
    import tifffile
    from emfiles import zeiss_text

    grey = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("L")).astype(np.uint16) * 257
    h, w = grey.shape
    buf = io.BytesIO()
    tifffile.imwrite(buf, grey, extratags=[(34118, 2, 0, zeiss_text(store=f"{w} * {h}"), True)])
    return buf.getvalue()


def test_zeiss_tiff_upload_returns_the_calibration_record(server, spec, images):
    data = _zeiss_tiff(images["2ee0518d7a"])
    seg = check(spec, requests.post(url(server, "/segment"), files={"file": ("zeiss.tif", data)}, timeout=120),
                "/segment").json()
    cal = seg["calibration"]
    assert cal["nm_per_pixel"] == 7.344 and cal["source"] == "file" and cal["reader"] == "zeiss_cz_sem"
    assert cal["text"] == "7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)"
    assert cal["magnification"] == 50000 and cal["high_voltage_kv"] == 5.0 and cal["detector"] == "InLens"
    out = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "include_images": False}), "/analyze").json()
    assert out["nm_per_pixel"] == 7.344 and out["calibration"]["source"] == "file"
    assert out["summary"]["unit"] == "nm" and out["particles"]
    for p in out["particles"]:
        assert p["equivalent_diameter_nm"] == pytest.approx(p["equivalent_diameter_px"] * 7.344)
    typed = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "nm_per_pixel": 8.0, "include_images": False}), "/analyze").json()
    assert typed["nm_per_pixel"] == 8.0 and typed["calibration"]["source"] == "user"
    assert any("7.344" in w for w in typed["calibration"]["warnings"])  # the file's value is not hidden
    csv_text = requests.get(url(server, f"/analyses/{seg['image_id']}/particles.csv"), timeout=30).text
    header, first = csv_text.splitlines()[:2]
    assert header.endswith(",nm_per_pixel,calibration_source") and first.endswith(",8.0,user")


def test_dm3_upload_keeps_its_calibration(server, spec, images):
    import tempfile
    from pathlib import Path

    from emfiles import write_dm

    grey = np.asarray(Image.open(io.BytesIO(images["aa309f6cec"])).convert("L")).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        data = write_dm(Path(d) / "tem.dm3", grey, scale=0.0021, units="µm").read_bytes()
    out = check(spec, requests.post(url(server, "/analyze"), files={"file": ("tem.dm3", data)},
                                    data={"include_images": "false"}, timeout=120), "/analyze").json()
    assert out["calibration"]["nm_per_pixel"] == 2.1 and out["calibration"]["reader"] == "digitalmicrograph"
    assert out["nm_per_pixel"] == 2.1 and out["summary"]["unit"] == "nm"


def test_rgba_png_works(server, spec, images):
    rgb = np.asarray(Image.open(io.BytesIO(images["7fabcfe23f"])).convert("RGB"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    r = requests.post(url(server, "/segment"), files={"file": ("alpha.png", png(rgba))}, timeout=120)
    seg = check(spec, r, "/segment").json()
    assert (seg["width"], seg["height"]) == size_of(images["7fabcfe23f"])


def test_concurrent_reanalyses(server, spec, images):
    seg = requests.post(url(server, "/segment"), files={"file": ("a.png", images["aa309f6cec"])}, timeout=120).json()

    def one(k):
        return requests.post(url(server, "/analyze"), timeout=120, json={
            "image_id": seg["image_id"], "min_distance": 3 + k, "include_images": k % 2 == 0})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(12)))
    for k, r in enumerate(results):
        check(spec, r, "/analyze")
        assert r.json()["settings"]["min_distance"] == 3 + k


def test_cors_for_allowed_origin_only(server):
    r = requests.options(url(server, "/analyze"), timeout=10, headers={
        "Origin": "https://lab.example", "Access-Control-Request-Method": "POST"})
    assert r.headers.get("Access-Control-Allow-Origin") == "https://lab.example"
    r = requests.get(url(server, "/health"), headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


# --- error paths ------------------------------------------------------------------------------

def _bad_images(images):
    real = images["aa309f6cec"]
    return {
        "not an image": (b"This is a text file, not a micrograph.\n" * 20, 415, "not_an_image"),
        "truncated png": (real[: len(real) // 2], 415, "not_an_image"),
        "zero bytes": (b"", 400, "empty"),
        "1x1 image": (png(np.zeros((1, 1), np.uint8)), 422, "too_small"),
        "all black": (png(np.zeros((256, 256, 3), np.uint8)), 422, "blank_image"),
        "30000x30000": (huge_png_header(), 413, "too_large"),
    }


@pytest.mark.parametrize("case", ["not an image", "truncated png", "zero bytes", "1x1 image", "all black",
                                  "30000x30000"])
def test_bad_images_segment(server, spec, images, case):
    data, status, code = _bad_images(images)[case]
    t0 = time.perf_counter()
    r = requests.post(url(server, "/segment"), files={"file": ("x.png", data)}, timeout=60)
    check(spec, r, "/segment")
    check_error(spec, r, status, code)
    if case == "30000x30000":
        assert time.perf_counter() - t0 < 5, "a 900-megapixel header must be rejected before decoding"


@pytest.mark.parametrize("case", ["not an image", "zero bytes", "30000x30000"])
def test_bad_images_analyze_json(server, spec, images, case):
    data, status, code = _bad_images(images)[case]
    r = requests.post(url(server, "/analyze"), json={"image": base64.b64encode(data).decode()}, timeout=60)
    check(spec, r, "/analyze")
    check_error(spec, r, status, code)


@pytest.mark.parametrize("body, headers", [
    (b"{not json", {"Content-Type": "application/json"}),
    (b"[1, 2, 3]", {"Content-Type": "application/json"}),
    (b"", {"Content-Type": "application/json"}),
    (b'{"image": "***not base64***"}', {"Content-Type": "application/json"}),
    (b'{"filename": "x.png"}', {"Content-Type": "application/json"}),
    (b'{"image": 42}', {"Content-Type": "application/json"}),
    (b"", {}),
])
def test_wrong_json_is_400(server, spec, body, headers):
    for path in ("/segment", "/analyze"):
        r = requests.post(url(server, path), data=body, headers=headers, timeout=30)
        check(spec, r, path)
        check_error(spec, r, 400, "bad_request")


def test_analyze_needs_exactly_one_of_image_and_id(server, spec, images):
    body = {"image": base64.b64encode(images["aa309f6cec"]).decode(), "image_id": "abc"}
    check_error(spec, requests.post(url(server, "/analyze"), json=body, timeout=30), 400, "bad_request")
    check_error(spec, requests.post(url(server, "/analyze"), json={"image_id": 7}, timeout=30), 400, "bad_request")


def test_unsupported_content_type_is_415(server, spec):
    r = requests.post(url(server, "/segment"), data=b"a=1", headers={"Content-Type": "text/plain"}, timeout=30)
    check_error(spec, r, 415, "unsupported_media_type")


def test_unknown_image_id_is_404(server, spec):
    r = requests.post(url(server, "/analyze"), json={"image_id": "0123456789abcdef01234567"}, timeout=30)
    check(spec, r, "/analyze")
    check_error(spec, r, 404, "not_found")
    r = requests.get(url(server, "/analyses/nope/particles.csv"), timeout=30)
    check(spec, r, "/analyses/{image_id}/particles.csv", "get")
    check_error(spec, r, 404, "not_found")
    r = requests.get(url(server, "/analyses/..%2F..%2Fetc%2Fpasswd/particles.csv"), timeout=30)
    check_error(spec, r, 404, "not_found")


@pytest.fixture(scope="module")
def segmented(server, images):
    r = requests.post(url(server, "/segment"), files={"file": ("s.png", images["aa309f6cec"])}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


@pytest.mark.parametrize("extra", [
    {"threshold": 2}, {"threshold": "high"}, {"min_distance": 0}, {"min_size": -1}, {"min_size": 2.5},
    {"watershed": "maybe"}, {"nm_per_pixel": -1}, {"metric": "volume"}, {"removed_labels": "a,b"},
    {"settings": {"threshold": 0}}, {"min_sise": 3}, {"overlay": "sparkles"}, {"overlay_alpha": 3},
    {"include_images": "yes please"}, {"exclude_edge": None}, {"scale_bar": "maybe"},
])
def test_bad_settings_are_422(server, spec, segmented, extra):
    r = requests.post(url(server, "/analyze"), json={"image_id": segmented, **extra}, timeout=30)
    check(spec, r, "/analyze")
    body = check_error(spec, r, 422, "bad_parameter")
    name = next(iter(extra.get("settings", extra)))
    assert name in body["error"]["message"] or name == "metric" and "metric" in body["error"]["message"]


def test_settings_not_an_object_is_400(server, spec, segmented):
    r = requests.post(url(server, "/analyze"), json={"image_id": segmented, "settings": [1]}, timeout=30)
    check_error(spec, r, 400, "bad_request")


def test_oversized_upload_is_413(server, spec):
    # a file over SAEMI_MAX_UPLOAD_MB inside a body the server still reads ...
    blob = b"\x89PNG\r\n\x1a\n" + bytes(int((MAX_UPLOAD_MB + 0.5) * 2**20))
    r = requests.post(url(server, "/segment"), files={"file": ("big.png", blob)}, timeout=60)
    check(spec, r, "/segment")
    check_error(spec, r, 413, "too_large")
    # ... and a body over MAX_CONTENT_LENGTH, refused from its Content-Length alone
    blob = bytes(int(MAX_UPLOAD_MB * 1.5 * 2**20))
    r = requests.post(url(server, "/segment"), data=blob, headers={"Content-Type": "image/png"}, timeout=60)
    check_error(spec, r, 413, "too_large")


def test_flask_errors_are_json(server, spec):
    check_error(spec, requests.get(url(server, "/nothing-here"), timeout=10), 404, "not_found")
    check_error(spec, requests.get(server.url + "/", timeout=10), 404, "not_found")
    r = requests.get(url(server, "/segment"), timeout=10)
    check_error(spec, r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    check_error(spec, requests.delete(url(server, "/health"), timeout=10), 405, "method_not_allowed")


def test_server_survived_everything(server, spec):
    """Runs last in this module: the same worker still answers; nothing crashed or timed out."""
    r = check(spec, requests.get(url(server, "/health"), timeout=10), "/health", "get")
    assert r.json()["model_loaded"] is True
    assert server.worker_pids() == server.initial_workers
    log = server.log()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log and "Worker exiting" not in log, log[-3000:]


# --- in-process: configuration and failure modes (Flask test client, no model) -----------------

def test_create_app_stores_the_service_and_loads_nothing_when_lazy():
    from saemi.api import create_app
    from saemi.service import AnalysisService

    app = create_app({"SAEMI_LOAD": "lazy", "SAEMI_CACHE_BYTES": 3 * 2**20, "TESTING": True})
    service = app.extensions["saemi"]
    assert isinstance(service, AnalysisService) and not service.loaded
    assert app.config["TESTING"] is True
    c = app.test_client()
    assert c.get(API + "/health").json["model_loaded"] is False
    r = c.get(API + "/ready")
    assert r.status_code == 503 and r.json["error"]["code"] == "not_ready"
    # two apps are independent: nothing is shared at module level
    assert create_app({"SAEMI_LOAD": "lazy"}).extensions["saemi"] is not service


def test_missing_weights_report_503_and_keep_serving(images):
    from saemi.api import create_app

    app = create_app({"SAEMI_WEIGHTS": "/nonexistent/weights.pt"})
    c = app.test_client()
    h = c.get(API + "/health")
    # said, but without the weights' path: /health answers anyone (the path is in the log)
    assert h.status_code == 200 and "could not be loaded" in h.json["load_error"]
    r = c.get(API + "/ready")
    assert r.status_code == 503 and r.json["error"]["code"] == "no_model"
    r = c.post(API + "/segment", data={"file": (io.BytesIO(images["aa309f6cec"]), "a.png")})
    assert r.status_code == 503 and r.json["error"]["code"] == "no_model"
    for resp in (h, c.get(API + "/ready"), r):
        assert "/nonexistent" not in resp.get_data(as_text=True)


def test_background_loading_turns_ready():
    """SAEMI_LOAD=background: /health answers at once, /ready is 503 until the model is in."""
    from saemi.api import create_app

    if not weights_available():
        pytest.fail("model weights missing")
    app = create_app({"SAEMI_LOAD": "background", "SAEMI_DEVICE": "cpu"})
    c = app.test_client()
    assert c.get(API + "/health").status_code == 200
    first = c.get(API + "/ready")
    if first.status_code == 503:  # (instant if this process already holds the network)
        assert first.json["error"]["code"] == "not_ready" and first.headers["Retry-After"]
    app.extensions["saemi_api"].loader.join(timeout=300)
    r = c.get(API + "/ready")
    assert r.status_code == 200 and r.json == {"ready": True, "device": "cpu"}


@pytest.mark.parametrize("bad", [{"SAEMI_DEVICE": "tpu"}, {"SAEMI_MAX_UPLOAD_MB": "lots"},
                                 {"SAEMI_CACHE_BYTES": 0}, {"SAEMI_LOAD": "sometimes"}])
def test_bad_configuration_refuses_to_start(bad):
    from saemi.api import create_app

    with pytest.raises(ValueError):
        create_app({"SAEMI_LOAD": "lazy", **bad})


def test_configuration_from_environment(monkeypatch):
    from saemi.api import create_app

    monkeypatch.setenv("SAEMI_MAX_UPLOAD_MB", "3")
    monkeypatch.setenv("SAEMI_CACHE_BYTES", "2000000")
    monkeypatch.setenv("SAEMI_ALLOWED_ORIGINS", "*")
    app = create_app({"SAEMI_LOAD": "lazy"})
    assert app.config["SAEMI_MAX_UPLOAD_MB"] == 3.0
    assert app.config["MAX_CONTENT_LENGTH"] >= 3 * 2**20 * 4 // 3
    assert app.extensions["saemi"].store.max_bytes == 2_000_000
    r = app.test_client().get(API + "/health", headers={"Origin": "http://x.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_unexpected_exception_is_a_generic_json_500(caplog):
    from saemi.api import create_app

    app = create_app({"SAEMI_LOAD": "lazy"})

    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    app.extensions["saemi"].segment = boom
    r = app.test_client().post(API + "/segment", data=b"\x89PNG....", content_type="image/png")
    assert r.status_code == 500 and r.json["error"]["code"] == "internal_error"
    assert "secret" not in r.get_data(as_text=True)
    assert any("secret internal detail" in (rec.exc_text or str(rec.exc_info)) for rec in caplog.records)


@pytest.mark.slow
def test_importing_the_api_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, saemi.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- segmentation settings, the layer, the preview ------------------------------------------------

def test_segment_settings_belong_to_the_upload(server, spec, images):
    """remove_banner changes what the network saw: a re-analysis by image_id cannot change it."""
    data = images["2ee0518d7a"]
    seg = check(spec, requests.post(url(server, "/segment"), files={"file": ("a.png", data)},
                                    data={"remove_banner": "false", "preview": "true"}, timeout=120),
                "/segment").json()
    assert seg["banner_box"] is None and seg["preview"]["stride"] == 1
    assert Image.open(io.BytesIO(base64.b64decode(seg["preview"]["jpeg"]))).size == (seg["width"], seg["height"])
    out = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "include_images": False}), "/analyze").json()
    assert out["settings"]["remove_banner"] is False  # what it was segmented with, not the default
    same = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "remove_banner": False, "include_images": False}), "/analyze").json()
    assert same["summary"]["count"] == out["summary"]["count"]
    body = check_error(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "remove_banner": True}), 422, "bad_parameter")
    assert "remove_banner" in body["error"]["message"] and "upload it again" in body["error"]["message"]
    check_error(spec, requests.post(url(server, "/segment"), files={"file": ("a.png", data)},
                                    data={"min_size": "5"}, timeout=60), 422, "bad_parameter")


def test_layer_draws_the_cached_labels(server, spec, images):
    seg = requests.post(url(server, "/segment"), files={"file": ("a.png", images["2ee0518d7a"])}, timeout=120).json()
    out = requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": seg["image_id"], "min_distance": 20, "include_images": True}).json()
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["labels_png"]))))
    first = out["particles"][0]["label"]
    layer = check(spec, requests.post(url(server, "/layer"), timeout=60, json={
        "image_id": seg["image_id"], "min_distance": 20, "removed_labels": [first], "overlay": "filled"}),
        "/layer").json()
    assert layer["count"] == len(out["particles"]) and (layer["width"], layer["height"]) == labels.shape[::-1]
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(layer["layer_png"]))))
    assert (rgba[labels == 0, 3] == 0).all() and (rgba[labels > 0, 3] > 0).all()
    grid = np.frombuffer(base64.b64decode(layer["grid"]["z"]), dtype="<" + np.dtype(layer["grid"]["dtype"]).str[1:])
    grid = grid.reshape(layer["grid"]["shape"])
    assert set(np.unique(grid)) <= set(np.unique(labels))
    no_grid = check(spec, requests.post(url(server, "/layer"), timeout=60, json={
        "image_id": seg["image_id"], "min_distance": 20, "grid": False}), "/layer").json()
    assert "grid" not in no_grid
    check_error(spec, requests.post(url(server, "/layer"), timeout=30, json={"image_id": "x" * 30}), 404,
                "not_found")


# --- manual corrections ----------------------------------------------------------------------

def labels_of(server, spec, image_id, **query):
    r = check(spec, requests.get(url(server, f"/analyses/{image_id}/labels.png"), params=query, timeout=60),
              "/analyses/{image_id}/labels.png", "get")
    assert r.headers["Content-Disposition"].endswith('_labels.png"')
    im = Image.open(io.BytesIO(r.content))
    assert im.mode.startswith("I;16") or im.mode == "I"  # 16-bit grey, the CLI's contract
    return np.asarray(im).astype(np.int64)


def background_square(labels, side=14):
    """Top-left (x, y) of a side x side square of background with a 3-pixel background margin."""
    from scipy import ndimage as ndi

    free = ndi.minimum_filter((labels == 0).astype(np.uint8), size=side + 6, mode="constant") > 0
    ys, xs = np.nonzero(free)
    assert len(ys), "no free background square to draw in"
    return int(xs[0]) - side // 2, int(ys[0]) - side // 2


def test_edits_through_http_each_leave_exactly_the_expected_labels(server, spec, images):
    from scipy import ndimage as ndi

    seg = requests.post(url(server, "/segment"), files={"file": ("edit me.png", images["2ee0518d7a"])},
                        timeout=120).json()
    iid = seg["image_id"]
    first = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": iid, "include_images": False}), "/analyze").json()
    assert first["edits"] == {"count": 0, "applied": 0, "dropped": [], "can_undo": False, "can_redo": False}
    n = first["summary"]["count"]
    l0 = labels_of(server, spec, iid)
    assert len(np.unique(l0)) - 1 == n

    def post(body, status=201):
        r = requests.post(url(server, f"/analyses/{iid}/edits"), json=body, timeout=60)
        if status != 201:
            return check_error(spec, r, status)
        return check(spec, r, "/analyses/{image_id}/edits").json()

    # add: a square drawn on background is a new particle of exactly its pixels
    x, y = background_square(l0)
    out = post({"op": "add", "polygon": [[x, y], [x + 13, y], [x + 13, y + 13], [x, y + 13]]})
    l1 = labels_of(server, spec, iid)
    new = int(l0.max()) + 1
    assert out["count"] == n + 1 and out["changed_labels"] == [new]
    square = np.zeros_like(l0, bool)
    square[y:y + 14, x:x + 14] = True
    assert np.array_equal(l1 == new, square) and np.array_equal(l1[~square], l0[~square])

    # erase by label: that particle's pixels become background, nothing else changes
    areas = np.bincount(l1.ravel())
    erased = next(int(k) + 1 for k in np.argsort(areas[1:])[len(areas) // 2:] if k + 1 != new and areas[k + 1])
    out = post({"op": "erase", "labels": [erased]})
    l2 = labels_of(server, spec, iid)
    assert out["count"] == n and out["changed_labels"] == [erased]
    assert (l2[l1 == erased] == 0).all() and np.array_equal(l2[l1 != erased], l1[l1 != erased])

    # split: a line across the roundest large particle cuts it into two labels covering its pixels
    table = {p["label"]: p for p in check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": iid, "include_images": False}), "/analyze").json()["particles"]}
    big = max((p for p in table.values() if p["area_px"] > 200 and not p["touches_edge"]),
              key=lambda p: p["circularity"])
    target = big["label"]
    ys, xs = np.nonzero(l2 == target)
    cx = int(round(big["centroid_x_px"]))
    out = post({"op": "split", "line": [[cx, int(ys.min()) - 3], [cx, int(ys.max()) + 3]]})
    l3 = labels_of(server, spec, iid)
    piece = int(l2.max()) + 1
    assert out["count"] == n + 1 and out["changed_labels"] == [target, piece]
    assert set(np.unique(l3[l2 == target])) == {target, piece} and np.array_equal(l3 > 0, l2 > 0)
    assert np.array_equal(l3[l2 != target], l2[l2 != target])
    left = l3[:, :cx][l2[:, :cx] == target]
    right = l3[:, cx + 1:][l2[:, cx + 1:] == target]
    assert len(set(left)) == 1 and len(set(right)) == 1 and set(left) != set(right)

    # merge two particles by points: the smaller label takes both
    a, b = sorted(k for k in table if k not in (target, new))[:2]
    pa = [int(np.nonzero(l3 == a)[1][0]), int(np.nonzero(l3 == a)[0][0])]
    pb = [int(np.nonzero(l3 == b)[1][0]), int(np.nonzero(l3 == b)[0][0])]
    out = post({"edits": [{"op": "merge", "points": [pa, pb]}]})
    l4 = labels_of(server, spec, iid)
    assert out["count"] == n and out["changed_labels"] == [a, b]
    assert (l4[(l3 == a) | (l3 == b)] == a).all() and np.array_equal(l4[(l3 != b)], l3[(l3 != b)])

    # undo twice, redo twice: the label images of those states exactly
    for expected, verb in ((l3, "undo"), (l2, "undo"), (l3, "redo"), (l4, "redo")):
        r = check(spec, requests.post(url(server, f"/analyses/{iid}/edits/{verb}"), timeout=60),
                  f"/analyses/{{image_id}}/edits/{verb}")
        assert np.array_equal(labels_of(server, spec, iid), expected), verb
    body = check_error(spec, requests.post(url(server, f"/analyses/{iid}/edits/redo"), timeout=60), 422)
    assert "no edit to redo" in body["error"]["message"]
    done = check(spec, requests.get(url(server, f"/analyses/{iid}/edits"), timeout=30),
                 "/analyses/{image_id}/edits", "get").json()
    assert [e["op"] for e in done["done"]] == ["add", "erase", "split", "merge"] and done["undone"] == []

    # the CSV marks each particle's origin
    csv = requests.get(url(server, f"/analyses/{iid}/particles.csv"), timeout=60).text.splitlines()
    header = csv[0].split(",")
    origins = {int(row.split(",")[0]): row.split(",")[header.index("origin")] for row in csv[1:]}
    assert origins[new] == "added" and origins[target] == origins[piece] == "split" and origins[a] == "merged"
    assert erased not in origins and b not in origins
    assert sum(v == "model" for v in origins.values()) == n - 4

    # bad edits: refused, named, and nothing kept
    for body, words in (({"op": "erase", "points": [[0, 0]]} if l4[0, 0] == 0 else {"op": "erase",
                                                                                     "points": [[1e6, 0]]},
                         ("changes nothing", "outside")),
                        ({"op": "split", "line": [[x + 5, y + 5], [x + 6, y + 5]]}, ("changes nothing",)),
                        ({"op": "merge", "labels": [a]}, ("two or more",)),
                        ({"op": "merge", "labels": [99999, a]}, ("no particle 99999",)),
                        ({"op": "add", "polygon": "square"}, ("pixel coordinates",)),
                        ({"edits": []}, ("non-empty",)),
                        ({"nothing": 1}, ("no edit",))):
        err = post(body, 422 if "nothing" not in body else 400)
        assert any(w in err["error"]["message"] for w in words), err
    assert len(requests.get(url(server, f"/analyses/{iid}/edits"), timeout=30).json()["done"]) == 4
    check_error(spec, requests.post(url(server, f"/analyses/{iid}/edits"), data=b"{not json",
                                    headers={"Content-Type": "application/json"}, timeout=30), 400, "bad_request")
    check_error(spec, requests.post(url(server, "/analyses/" + "x" * 30 + "/edits"),
                                    json={"op": "erase", "points": [[1, 1]]}, timeout=30), 404, "not_found")

    # a slider move replays the edits on the new labelling: the drawn particle stays
    moved = check(spec, requests.post(url(server, "/analyze"), timeout=60, json={
        "image_id": iid, "min_distance": 3, "include_images": True}), "/analyze").json()
    assert moved["edits"]["count"] == 4 and moved["edits"]["applied"] + len(moved["edits"]["dropped"]) == 4
    moved_labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(moved["labels_png"]))))
    assert len(np.unique(moved_labels[square])) == 1 and moved_labels[square][0] > 0

    # the training pair: the image and every particle's mask, named for saemi train --extra
    r = check(spec, requests.get(url(server, f"/analyses/{iid}/training-pair.zip"), timeout=60),
              "/analyses/{image_id}/training-pair.zip", "get")
    import zipfile
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = sorted(z.namelist())
        assert [nm.split("/")[0] for nm in names] == ["images", "segmaps"]
        assert names[0].split("/")[1] == names[1].split("/")[1]
        mask = np.asarray(Image.open(io.BytesIO(z.read(names[1]))))
        picture = Image.open(io.BytesIO(z.read(names[0])))
    assert picture.size == (seg["width"], seg["height"]) and mask.shape == (seg["height"], seg["width"])
    assert ndi.maximum(mask) > 0 and np.array_equal(mask.astype(np.int64), moved_labels.astype(np.int64))

    # clearing drops them all
    out = check(spec, requests.delete(url(server, f"/analyses/{iid}/edits"), timeout=60),
                "/analyses/{image_id}/edits", "delete").json()
    assert out["edits"]["count"] == 0
