"""The clients the page reaches its backend through (saemi.ui.client): in-process and remote."""

import base64
import pytest
from saemi.ui.client import ClientError, InProcessClient, RemoteClient
from uihelpers import *  # noqa: F401,F403  (fixtures and fakes shared by the page tests)


def test_in_process_client_translates_errors():
    svc = FakeService()
    c = InProcessClient(svc)
    assert c.segment(b"\x89PNG", "a.png")["image_id"] == "abc123"
    with pytest.raises(ClientError) as e:
        c.segment(b"text file", "a.png")
    assert e.value.code == "not_an_image" and "not an image" in e.value.message
    with pytest.raises(ClientError) as e:
        c.analyze("nope", SETTINGS)
    assert e.value.code == "not_found"
    with pytest.raises(ClientError) as e:
        c.analyze("abc123", {**SETTINGS, "min_distance_fraction": 0.13})
    assert e.value.code == "internal" and "boom" in e.value.message
    c.analyze("abc123", {**SETTINGS, "junk": 1})
    assert "junk" not in svc.calls[-1][2]
    assert c.default_settings()["min_distance_fraction"] == 0.05


def test_in_process_client_asks_for_no_pictures_and_sends_no_labels():
    svc = FakeService()
    c = InProcessClient(svc)
    res = c.analyze("abc123", SETTINGS)
    assert [call[-1] for call in svc.calls] == [False]  # one analysis, without pictures
    assert "labels_png" not in res and "overlay_png" not in res
    layer = c.particle_layer("abc123", {**SETTINGS, "removed_labels": [2], "junk": 1}, "filled", grid=False)
    assert svc.calls[-1] == ("particle_layer", "abc123", {**SETTINGS, "removed_labels": [2]}, "filled", False)
    assert layer["count"] == 4


def test_remote_client_posts_the_contract():
    s = FakeSession(FakeResponse(200, {"image_id": "x"}))
    c = RemoteClient("http://gpu:8000/api/v1/", timeout=7, session=s)
    c.segment(b"abc", "a.png")
    method, url, timeout, kw = s.requests[-1]
    assert (method, url, timeout) == ("POST", "http://gpu:8000/api/v1/segment", 7)
    assert kw["files"]["file"] == ("a.png", b"abc")
    c.analyze("x", {**SETTINGS, "removed_labels": [3], "junk": 1})
    body = s.requests[-1][3]["json"]
    assert body == {"image_id": "x", **SETTINGS, "removed_labels": [3], "include_images": False}
    c.particle_layer("x", {**SETTINGS, "removed_labels": [3]}, "filled", grid=False)
    method, url, _, kw = s.requests[-1]
    assert (method, url) == ("POST", "http://gpu:8000/api/v1/layer")
    assert kw["json"] == {"image_id": "x", **SETTINGS, "removed_labels": [3], "overlay": "filled", "grid": False}
    c.segment(b"abc", "a.png", preview=True)
    assert s.requests[-1][3]["data"] == {"preview": "true"}
    c.segment_json(b"abc", "a.png")
    assert s.requests[-1][3]["json"] == {"image": base64.b64encode(b"abc").decode(), "filename": "a.png"}


def test_remote_client_reads_the_new_defaults_from_the_backend_card():
    post = {"watershed": True, "threshold": 0.6, "min_distance": 30, "min_size": 80, "merge_threshold": 0.4,
            "min_relative_size": 0.1, "not_a_setting": 1}
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(200, {"card": {"postprocess": post}})))
    d = c.default_settings()
    assert d["merge_threshold"] == 0.4 and d["min_relative_size"] == 0.1 and "not_a_setting" not in d
    old = {k: v for k, v in post.items() if k not in ("merge_threshold", "min_relative_size")}
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(200, {"card": {"postprocess": old}})))
    d = c.default_settings()
    assert d["merge_threshold"] == 0.0 and d["min_relative_size"] == 0.0  # an older backend: both off


def test_remote_client_errors():
    import requests

    c = RemoteClient("http://gpu:8000", session=FakeSession(
        FakeResponse(422, {"error": {"code": "not_an_image", "message": "not an image file"}})))
    with pytest.raises(ClientError) as e:
        c.segment(b"x", "a.png")
    assert (e.value.code, e.value.message) == ("not_an_image", "not an image file")
    c = RemoteClient("http://gpu:8000", session=FakeSession(FakeResponse(502, None, "<html>bad gateway")))
    with pytest.raises(ClientError) as e:
        c.analyze("x")
    assert "HTTP 502" in e.value.message
    c = RemoteClient("http://gpu:8000", timeout=3, session=FakeSession(requests.exceptions.ReadTimeout()))
    with pytest.raises(ClientError) as e:
        c.analyze("x")
    assert e.value.code == "backend_timeout" and "3 s" in e.value.message


def test_remote_client_against_a_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = RemoteClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ClientError) as e:
        c.segment(b"x", "a.png")
    assert e.value.code == "backend_unavailable" and "not reachable" in e.value.message
    assert c.default_settings()["min_distance_fraction"] > 0  # falls back to the local model card


def test_remote_client_asks_the_backend_for_a_sample_and_its_csv():
    from uihelpers import FakeResponse, FakeSession

    from saemi.ui.client import RemoteClient

    session = FakeSession(FakeResponse(200, {"summary": {"count": 3}, "per_image": []}))
    client = RemoteClient("http://gpu:8000", session=session)
    images = [{"image_id": "a" * 24, "settings": {"removed_labels": [2]}, "nm_per_pixel": 2.0}]
    out = client.sample(images, {"metric": "feret_max", "filters": {"size": [1, None]}, "junk": 1})
    method, url, _, kwargs = session.requests[-1]
    assert out["summary"]["count"] == 3 and method == "POST" and url == "http://gpu:8000/api/v1/sample"
    assert kwargs["json"] == {"images": images, "metric": "feret_max", "filters": {"size": [1, None]},
                              "format": "json"}
    csv_answer = FakeResponse(200, None, text="image,label\na.png,1\n")
    session.response = csv_answer
    assert client.sample(images, None, "particles.csv") == "image,label\na.png,1\n"
    session.response = FakeResponse(200, {"image_id": "a" * 24, "preview": {"jpeg": "xx", "stride": 1}})
    assert client.preview("a" * 24)["preview"]["stride"] == 1
    assert session.requests[-1][:2] == ("GET", "http://gpu:8000/api/v1/analyses/" + "a" * 24 + "/preview")
