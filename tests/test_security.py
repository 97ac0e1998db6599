"""Safe on a shared server (issue 22): the real app under gunicorn as the Procfile starts it.

Each defect found by trying the server as a careless script or a hostile user
would is a case here: unbounded settings, deep JSON, names, CSV injection,
JSON 404/405 under ``app:server``, headers and leaks, optional access control,
the analysis deadline, the memory-derived pixel limit and slow clients.
Images are made here or taken from ``saemi/ui/assets/demo.png``, so nothing skips
without ``../shared``.
"""

import base64
import json
import socket
import time

import numpy as np
import pytest
import requests

from livesrv import REPO, Server, free_port, procfile_command, weights_available
from synth import disc_labels, grid_of_discs_png, png_bytes as png

API = "/api/v1"
DEMO = (REPO / "saemi" / "ui" / "assets" / "demo.png").read_bytes()
MAX_UPLOAD_MB = 2


def discs_png(h, w, seed=0):
    return grid_of_discs_png(h, w, r=14, step=40, seed=seed)


def procfile_server(tmp_path, name, **env):
    if not weights_available():
        pytest.fail("model weights missing: saemi/model_weights/saemi_unet_resnet18.pt must exist")
    port = free_port()
    return Server(procfile_command("web"), port=port, log_path=tmp_path / f"{name}.log",
                  env={"SAEMI_DEVICE": "cpu", "SAEMI_CACHE_DIR": str(tmp_path / f"{name}-cache"), **env})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = procfile_server(tmp_path_factory.mktemp("sec"), "procfile", SAEMI_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
                          SAEMI_CLIENT_TIMEOUT="3", SAEMI_THREADS="4")
    try:
        srv.wait(API + "/ready", timeout=240)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def demo_id(server):
    r = requests.post(server.url + API + "/segment", files={"file": ("demo.png", DEMO)}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


def post(server, path, **kw):
    kw.setdefault("timeout", 60)
    return requests.post(server.url + API + path, **kw)


def error_of(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


# --- bounded work per request ------------------------------------------------------------------

@pytest.mark.parametrize("value", [5000, 10000, 1000000, 1e308, -1, 0, "1e400"])
def test_min_distance_out_of_range_is_refused_at_once(server, demo_id, value):
    t = time.perf_counter()
    r = post(server, "/analyze", json={"image_id": demo_id, "min_distance": value, "include_images": False})
    message = error_of(r, 422, "bad_parameter")
    assert "min_distance" in message
    assert time.perf_counter() - t < 10


def test_the_largest_min_distance_costs_little(server, demo_id):
    """1000 px, the top of the range, on a 512 px image: the marker dilation no longer grows with it."""
    t = time.perf_counter()
    r = post(server, "/analyze", json={"image_id": demo_id, "min_distance": 1000, "merge_threshold": 0,
                                       "include_images": False})
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["count"] >= 1
    assert time.perf_counter() - t < 20  # it took 90 s for 5000 before the fix


@pytest.mark.parametrize("settings", [{"threshold": 1.0}, {"min_size": -5}, {"min_size": 10**12},
                                      {"nm_per_pixel": 0}, {"nm_per_pixel": 1e30}, {"merge_threshold": 1},
                                      {"removed_labels": [1.5]}, {"removed_labels": [0]},
                                      {"removed_labels": list(range(1, 100_003))}, {"metric": "diameter"}])
def test_every_setting_has_a_range(server, demo_id, settings):
    r = post(server, "/analyze", json={"image_id": demo_id, "include_images": False, **settings})
    assert next(iter(settings)) in error_of(r, 422, "bad_parameter")


def test_pixel_limit_comes_from_the_memory_budget(server):
    """A 7000x7000 PNG of a few hundred kB passed the old 50-megapixel limit and took 3.4 GB."""
    from saemi.api.config import load_config
    from saemi.budget import DEFAULT_MEMORY_MB, pixels_for_memory

    cfg = load_config({}, environ={})
    assert cfg["SAEMI_MAX_PIXELS"] == pixels_for_memory(DEFAULT_MEMORY_MB) < 7000 * 7000
    assert load_config({}, environ={"SAEMI_MEMORY_MB": "4000"})["SAEMI_MAX_PIXELS"] > cfg["SAEMI_MAX_PIXELS"]
    assert load_config({}, environ={"SAEMI_MAX_PIXELS": "1000000"})["SAEMI_MAX_PIXELS"] == 1_000_000
    big = png(np.zeros((7000, 7000), np.uint8))
    assert len(big) < MAX_UPLOAD_MB * 2**20
    r = post(server, "/segment", files={"file": ("big.png", big)})
    assert "megapixels" in error_of(r, 413, "too_large")


# --- input that slipped through ----------------------------------------------------------------

def test_deeply_nested_json_is_400(server):
    body = "[" * 100_000 + "]" * 100_000
    r = post(server, "/analyze", data=body, headers={"Content-Type": "application/json"})
    error_of(r, 400, "bad_request")
    r = post(server, "/analyze", data='{"image_id": ' + body + "}", headers={"Content-Type": "application/json"})
    error_of(r, 400, "bad_request")


def test_include_images_must_be_a_boolean_word(server, demo_id):
    r = post(server, "/analyze", data={"image_id": demo_id, "include_images": "maybe"})
    assert "include_images" in error_of(r, 422, "bad_parameter")
    r = post(server, "/analyze?include_images=false&filename=d.png", data=DEMO,
             headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert "labels_png" not in r.json() and r.json()["filename"] == "d.png"


def test_upload_limit_message_is_exact(server):
    limit = MAX_UPLOAD_MB * 2**20
    blob = b"\x89PNG\r\n\x1a\n" + bytes(limit + 1 - 8)
    message = error_of(post(server, "/segment", files={"file": ("x.png", blob)}), 413, "too_large")
    assert f"{limit + 1:,} bytes" in message and f"{limit:,} bytes" in message


def test_oversized_chunked_json_is_413(server):
    chunk = b'{"image": "' + b"A" * (1024 * 1024)

    def body():
        yield chunk
        for _ in range(MAX_UPLOAD_MB * 2):  # well over the body limit, with no Content-Length
            yield b"A" * (1024 * 1024)
        yield b'"}'

    r = post(server, "/segment", data=body(), headers={"Content-Type": "application/json"})
    error_of(r, 413, "too_large")


def test_names_are_strings_of_at_most_200_characters(server):
    r = post(server, "/segment", json={"image": base64.b64encode(DEMO).decode(), "filename": {"a": 1}})
    assert "filename" in error_of(r, 400, "bad_request")
    long_name = "n" * 5000 + ".png"
    r = post(server, "/segment", files={"file": (long_name, DEMO)})
    assert r.status_code == 200
    name = r.json()["filename"]
    assert len(name) == 200 and name.endswith(".png")


def test_page_uploads_pass_the_same_checks():
    """The page's in-process client goes through the service's checks, like the API."""
    from saemi.ui import build_app
    from saemi.ui.client import ClientError

    app = build_app({})
    client = app.saemi_client
    client.service.max_upload_bytes = 1000  # what SAEMI_MAX_UPLOAD_MB sets; tiny here to keep the test light
    with pytest.raises(ClientError) as err:
        client.segment(b"\x00" * 1001, "x.tif")
    assert err.value.code == "too_large" and "1,001 bytes" in err.value.message
    client.service.max_upload_bytes = None
    with pytest.raises(ClientError) as err:
        client.segment(DEMO, {"name": "object"})
    assert err.value.code == "bad_request"


# --- CSV injection -----------------------------------------------------------------------------

def test_csv_cells_that_look_like_formulas_are_escaped():
    from saemi.measure import particle_table
    from saemi.ui import particles

    table = particle_table(disc_labels((60, 60), [(30, 30, 10)]))
    for name in ['=HYPERLINK("http:\\\\evil.example","x").png', "@SUM(1+1)cmd.png", "+1.png", "-1.png",
                 "\tx.png", "\rx.png"]:
        text = particles.summary_csv(table, {"filename": name})
        row = next(line for line in text.splitlines()[1:] if line)
        first = row.split(",")[0].lstrip('"')
        assert first.startswith("'"), (name, row)
    negative = table.assign(centroid_x_px=-3.5)
    assert ",-3.5," in particles.particles_csv(negative)  # numbers stay numbers


# --- JSON errors, headers and leaks under app:server -------------------------------------------

def test_api_paths_answer_json_404_and_405_under_the_page(server):
    r = requests.get(server.url + API + "/analyze", timeout=10)
    error_of(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]
    error_of(requests.get(server.url + API + "/nonexist", timeout=10), 404, "not_found")
    error_of(requests.post(server.url + API + "/nonexist", timeout=10), 404, "not_found")
    error_of(requests.delete(server.url + API + "/health", timeout=10), 405, "method_not_allowed")
    assert requests.get(server.url + "/", timeout=10).status_code == 200  # the page itself still loads


def test_security_headers_on_page_and_api(server):
    page = requests.get(server.url + "/", timeout=10)
    api = requests.get(server.url + API + "/health", timeout=10)
    for r in (page, api):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert api.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_no_versions_or_paths_in_unauthenticated_responses(server):
    import platform

    import dash
    import plotly

    texts = [requests.get(server.url + p, timeout=10).text for p in ("/", "/_dash-config", API + "/health",
                                                                      API + "/ready", API + "/openapi.json")]
    for text in texts:
        assert platform.python_version() not in text
        assert f'"{dash.__version__}"' not in text and f'"{plotly.__version__}"' not in text
        assert str(REPO) not in text


# --- access control ----------------------------------------------------------------------------

@pytest.mark.slow
def test_basic_auth_and_bearer_token(tmp_path):
    srv = procfile_server(tmp_path, "auth", SAEMI_BASIC_AUTH="lab:s3cret", SAEMI_API_TOKEN="tok-123",
                          SAEMI_LOAD="lazy")
    try:
        srv.wait(API + "/health", timeout=240)  # health stays open for load balancers
        assert requests.get(srv.url + "/", timeout=10).status_code == 401
        r = requests.get(srv.url + API + "/model", timeout=10)
        error_of(r, 401, "unauthorized")
        assert "Basic" in r.headers["WWW-Authenticate"]
        assert requests.get(srv.url + "/", auth=("lab", "wrong"), timeout=10).status_code == 401
        assert requests.get(srv.url + "/", auth=("lab", "s3cret"), timeout=10).status_code == 200
        assert requests.get(srv.url + API + "/model", auth=("lab", "s3cret"), timeout=10).status_code == 200
        bearer = {"Authorization": "Bearer tok-123"}
        assert requests.get(srv.url + API + "/model", headers=bearer, timeout=10).status_code == 200
        assert requests.get(srv.url + "/", headers=bearer, timeout=10).status_code == 401  # the token is the API's
        assert requests.get(srv.url + API + "/model", headers={"Authorization": "Bearer nope"},
                            timeout=10).status_code == 401
        # a front end's remote client reaches such a backend with SAEMI_BACKEND_TOKEN
        from saemi.ui import client_from_env
        from saemi.ui.client import ClientError

        remote = client_from_env(environ={"SAEMI_BACKEND_URL": srv.url, "SAEMI_BACKEND_TOKEN": "tok-123"})
        assert "postprocess" in remote._request("GET", "model")
        anonymous = client_from_env(environ={"SAEMI_BACKEND_URL": srv.url})
        with pytest.raises(ClientError) as err:
            anonymous._request("GET", "model")
        assert err.value.code == "unauthorized"
    finally:
        srv.stop()


@pytest.mark.slow
def test_malformed_basic_auth_setting_refuses_to_start():
    from saemi.api.config import load_config

    with pytest.raises(ValueError, match="user:password"):
        load_config({}, environ={"SAEMI_BASIC_AUTH": "lab"})


# --- the deadline --------------------------------------------------------------------------------

@pytest.mark.slow
def test_deadline_ends_the_work_with_503_and_the_worker_goes_on(tmp_path):
    srv = procfile_server(tmp_path, "deadline", SAEMI_TIMEOUT="1", SAEMI_THREADS="2")
    try:
        srv.wait(API + "/ready", timeout=240)
        workers = srv.worker_pids()
        big = discs_png(2400, 2400)  # 25 network tiles: several seconds on 2 cores
        t = time.perf_counter()
        r = post(srv, "/segment", files={"file": ("big.png", big)}, timeout=60)
        elapsed = time.perf_counter() - t
        assert "SAEMI_TIMEOUT" in error_of(r, 503, "timeout")
        assert elapsed < 1 + 5, elapsed
        small = discs_png(200, 200)
        r = post(srv, "/analyze", files={"file": ("small.png", small)}, data={"include_images": "false"},
                 timeout=60)
        assert r.status_code == 200, r.text
        assert srv.worker_pids() == workers  # nothing was killed or restarted
    finally:
        srv.stop()


# --- slow clients --------------------------------------------------------------------------------

def _stalled_connections(server, n, partial=b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Le"):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if partial:
            s.sendall(partial)
        socks.append(s)
    return socks


@pytest.mark.parametrize("partial", [b"GET /api/v1/health HTTP/1.1\r\nHo", b"",
                                     b"POST /api/v1/segment HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc"])
def test_eight_stalled_clients_do_not_block_health(server, partial):
    socks = _stalled_connections(server, 8, partial)
    try:
        time.sleep(0.5)
        for _ in range(3):
            t = time.perf_counter()
            r = requests.get(server.url + API + "/health", timeout=10)
            assert r.status_code == 200
            assert time.perf_counter() - t < 2.0
    finally:
        for s in socks:
            s.close()


def test_a_stalled_request_is_answered_408_and_closed(server):
    (s,) = _stalled_connections(server, 1)
    try:
        s.settimeout(15)
        t = time.perf_counter()
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 408"), data[:100]
        assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert 2.5 < time.perf_counter() - t < 10  # SAEMI_CLIENT_TIMEOUT=3 in this server
    finally:
        s.close()


def test_expect_100_continue_is_answered_while_the_body_is_buffered(server):
    """curl sends a large body only after "100 Continue" (or after waiting 1 s for it)."""
    body = b"\x89PNG\r\n\x1a\n" + bytes(100_000)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        s.sendall(b"POST /api/v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        s.settimeout(0.5)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.settimeout(30)
        s.sendall(body)
        reply = b""
        while b"\r\n\r\n" not in reply.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""):
            reply += s.recv(65536)
        assert b"HTTP/1.1 415" in reply  # the body arrived whole: a PNG header without an image
    finally:
        s.close()


def test_server_log_is_clean(server):
    """Runs last: after all of the above no traceback and no worker restart."""
    r = requests.get(server.url + API + "/health", timeout=10)
    assert r.status_code == 200
    log = server.log()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-3000:]
