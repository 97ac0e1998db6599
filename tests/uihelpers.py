"""Shared fixtures of the page tests (test_ui_*.py): a synthetic analysis, fake backends, Dash calls."""

import base64
import io
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from saemi.errors import SaemiError
from saemi.measure import particle_table, summarize
from saemi.overlay import png_bytes
from saemi.service import records
from saemi.ui import controls, figures
from saemi.ui.client import InProcessClient

REPO = Path(__file__).resolve().parents[1]


def disc_labels(h=120, w=160, discs=((30, 40, 12), (80, 60, 15), (60, 120, 10), (5, 150, 8))):
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.int32)
    for i, (cy, cx, r) in enumerate(discs, start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def png_b64(array):
    return base64.b64encode(png_bytes(array)).decode()


def fake_result(labels=None, image_id="abc123", filename="sample image.tif"):
    labels = disc_labels() if labels is None else labels
    table = particle_table(labels)
    return {"image_id": image_id, "filename": filename, "width": labels.shape[1], "height": labels.shape[0],
            "banner_box": None, "cached": True, "timings": {},
            "summary": summarize(table), "particles": records(table), "labels_png": png_b64(labels),
            "overlay_png": png_b64(np.zeros(labels.shape + (3,), np.uint8))}


SETTINGS = {"watershed": True, "min_distance_fraction": 0.6, "threshold": 0.5, "min_size_fraction": 0.01, "exclude_edge": False,
            "merge_threshold": 0.0, "min_relative_size": 0.0}


@pytest.fixture
def analysis():
    a, _ = controls.reduce_analysis(fake_result(), SETTINGS)
    return a


def micrograph_png(h=120, w=160):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def panel(watershed, min_distance_fraction, threshold, min_size_fraction, exclude_edge, merge_threshold=0.0,
          min_relative_size=0.0):
    """What the controls send, by setting name (the fraction sliders are in %)."""
    given = dict(locals())
    return controls.settings_from_controls(*(given[n] for n in controls.CONTROLLED))


BOX = {"type": "rect", "xref": "x", "yref": "y", "x0": 9.5, "y0": 99.5, "x1": 90.5, "y1": 104.5, "name": "scale bar"}


def drawn(x0, y0, x1, y1):
    """A shape as Plotly reports a line the user drew (drawline mode)."""
    return {"type": "line", "editable": True, "xref": "x", "yref": "y", "layer": "above", "opacity": 1,
            "line": {"color": figures.LINE_COLOUR, "width": 3, "dash": "solid"}, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def display_of(data, max_side=2048):
    """The image view's picture as the page makes it: the server's preview of the decoded upload."""
    from saemi.io import read_micrograph
    from saemi.overlay import preview_jpeg

    image, _ = read_micrograph(data)
    jpeg, stride = preview_jpeg(image, max_side)
    return figures.preview_display({"jpeg": base64.b64encode(jpeg).decode(), "stride": stride},
                                   image.shape[1], image.shape[0])


class FakeService:
    def __init__(self):
        self.calls = []

    def segment(self, data, filename, preview=False):
        self.calls.append(("segment", filename))
        if data.startswith(b"text"):
            raise SaemiError("not an image file (PNG, JPEG, TIFF or BMP expected)", code="not_an_image")
        out = {"image_id": "abc123", "filename": filename, "width": 160, "height": 120, "banner_box": None,
               "timings": {}, "cached": False}
        if preview:
            buf = io.BytesIO()
            Image.fromarray(np.zeros((120, 160), np.uint8)).save(buf, format="JPEG")
            out["preview"] = {"jpeg": base64.b64encode(buf.getvalue()).decode(), "stride": 1}
        return out

    def analyze(self, image_id=None, settings=None, include_images=True):
        self.calls.append(("analyze", image_id, dict(settings), include_images))
        if image_id != "abc123":
            raise SaemiError("unknown image_id", code="not_found")
        if settings.get("min_distance_fraction") == 0.13:
            raise RuntimeError("boom")
        res = fake_result(image_id=image_id)
        if not include_images:
            del res["labels_png"], res["overlay_png"]
        return res

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        self.calls.append(("particle_layer", image_id, dict(settings), mode, grid))
        return {"layer_png": png_b64(np.zeros((120, 160, 4), np.uint8)), "width": 160, "height": 120, "count": 4}

    def default_settings(self):
        from saemi.pipeline import Settings
        return Settings.from_dict({"min_distance_fraction": 0.05})


class FakeResponse:
    def __init__(self, status, body=None, text=None):
        self.status_code, self._body, self.text = status, body, text

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class FakeSession:
    def __init__(self, response):
        self.response, self.requests = response, []

    def request(self, method, url, timeout=None, **kwargs):
        self.requests.append((method, url, timeout, kwargs))
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


class FakeClient:
    description = "fake backend"

    def __init__(self):
        self.svc = FakeService()
        self.inner = InProcessClient(self.svc)

    def segment(self, data, filename="image", image_id=None, preview=False, progress=None):
        return self.inner.segment(data, filename, preview=preview)

    def analyze(self, image_id, settings=None, progress=None):
        return self.inner.analyze(image_id, settings)

    def progress(self, token):
        return None

    def particle_layer(self, image_id, settings=None, mode="outline", grid=True):
        return self.inner.particle_layer(image_id, settings, mode, grid)

    def default_settings(self):
        return {"watershed": True, "min_distance_fraction": 0.05, "threshold": 0.5, "min_size_fraction": 0.002,
                "exclude_edge": False, "merge_threshold": 0.35, "min_relative_size": 0.07}


@pytest.fixture
def dash_app():
    from saemi.ui import create_dash_app

    return create_dash_app(client=FakeClient())


def call(app, output, inputs, state=(), triggered=None):
    """Run one callback through Dash's HTTP endpoint, as the browser does."""
    client = app.server.test_client()
    client.get("/")  # lets Dash finish its setup
    body = {"output": output, "outputs": None, "inputs": inputs, "state": list(state),
            "changedPropIds": [triggered or f"{inputs[0]['id']}.{inputs[0]['property']}"]}
    parts = [p.split("@")[0].rsplit(".", 1) for p in output.strip(".").split("...")] if output.startswith("..") \
        else [output.split("@")[0].rsplit(".", 1)]
    outs = [{"id": i, "property": p} for i, p in parts]
    body["outputs"] = outs if output.startswith("..") else outs[0]
    r = client.post("/_dash-update-component", json=body)
    return r.status_code, (r.get_json() if r.status_code == 200 else None)


def _upload_inputs(contents, filename):
    return ([{"id": "upload", "property": "contents", "value": contents},
             {"id": "demo-button", "property": "n_clicks", "value": 0}],
            [{"id": "upload", "property": "filename", "value": filename},
             {"id": "nm-store", "property": "data", "value": None},
             {"id": "opacity", "property": "value", "value": 0.8},
             {"id": "calib-all", "property": "value", "value": []},
             {"id": "calib-unit", "property": "value", "value": "nm/px"},
             {"id": "progress-token", "property": "data", "value": "tab-0123456789abcdef"},
             # the splitting controls: the settings a new sample starts with
             *({"id": cid, "property": "value", "value": v}
               for cid, v in {"watershed": ["on"], "min-distance-fraction": 70, "merge-threshold": 0.5, "threshold": 0.5,
                              "min-size-fraction": 1, "min-relative-size": 10, "exclude-edge": []}.items())])


def output_of(app, input_id):
    """The callback-map key of the callback that ``input_id`` drives (duplicate outputs carry a hash)."""
    keys = [k for k, cb in app.callback_map.items() if any(i["id"] == input_id for i in cb["inputs"])]
    assert len(keys) == 1, keys
    return keys[0]
