"""The CPU engine (saemi.engine): the ONNX export of the weights, its cache, and the serving path without torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saemi.engine import (GRAPH_FILE, EngineSegmenter, available_engines, exported_model, fill_graph,
                          load_engine_segmenter)
from saemi.errors import SaemiError
from saemi.statedict import read_state_dict

REPO = Path(__file__).resolve().parents[1]
ENGINES = available_engines()
needs_engine = pytest.mark.skipif(not ENGINES, reason="neither openvino nor onnxruntime is installed")


def _save(net, path):
    import torch

    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory, random_segmenter):
    return _save(random_segmenter.net, tmp_path_factory.mktemp("w") / "saemi_unet_resnet18.pt")


def test_state_dict_reader_reads_what_torch_saved(random_weights):
    import torch

    ours = read_state_dict(random_weights)
    theirs = torch.load(random_weights, weights_only=True)
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        assert ours[k].dtype == v.numpy().dtype and np.array_equal(ours[k], v.numpy()), k


def test_state_dict_reader_reads_strided_and_shared_storage(tmp_path):
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save({"t": base.t(), "view": base[1:3, 2:], "same": base}, tmp_path / "s.pt")
    got = read_state_dict(tmp_path / "s.pt")
    np.testing.assert_array_equal(got["t"], base.t().numpy())
    np.testing.assert_array_equal(got["view"], base[1:3, 2:].numpy())
    np.testing.assert_array_equal(got["same"], base.numpy())


class _WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_state_dict_reader_never_runs_code(tmp_path):
    import torch

    marker = tmp_path / "marker"
    torch.save({"w": torch.zeros(3), "payload": _WritesMarker(marker)}, tmp_path / "evil.pt")
    with pytest.raises(SaemiError, match="could not load model weights") as err:
        read_state_dict(tmp_path / "evil.pt")
    assert err.value.code == "no_model"
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(SaemiError, match="could not load model weights"):
        read_state_dict(tmp_path / "junk.pt")


def test_the_shipped_graph_has_one_empty_initializer_per_weight_of_build_unet(random_segmenter):
    import onnx

    graph = onnx.load(str(GRAPH_FILE))
    assert GRAPH_FILE.stat().st_size < 200_000  # the graph only: the weights come from the .pt file
    inits = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    state = {k: tuple(v.shape) for k, v in random_segmenter.net.state_dict().items() if v.is_floating_point()}
    assert inits == state
    assert not any(i.raw_data for i in graph.graph.initializer)


@pytest.mark.slow
def test_the_shipped_graph_is_what_build_unet_exports_now(tmp_path):
    # the graph is exported once (python -m saemi.engine --export-graph); it must not drift from the code
    import onnx

    from saemi.engine import export_graph

    fresh, shipped = onnx.load(str(export_graph(tmp_path / "g.onnx"))), onnx.load(str(GRAPH_FILE))

    def signature(m):
        nodes = [(n.op_type, list(n.input), list(n.output), [a.SerializeToString() for a in n.attribute])
                 for n in m.graph.node]
        return nodes, [(i.name, list(i.dims)) for i in m.graph.initializer]

    assert signature(fresh) == signature(shipped), "re-export the graph: python -m saemi.engine --export-graph"


@needs_engine
@pytest.mark.parametrize("engine", ENGINES)
def test_the_export_computes_what_the_torch_network_computes(engine, random_segmenter, random_weights, tmp_path):
    # random weights, fp32 on both sides: the logits agree to float rounding, tiles and all
    import torch

    from saemi.card import read_card
    from saemi.model import load_segmenter

    torch_seg = load_segmenter(random_weights, "cpu", "fp32", engine="torch")
    seg = load_engine_segmenter(random_weights, read_card(random_weights), engine, "fp32", cache_dir=tmp_path)
    assert isinstance(seg, EngineSegmenter) and seg.precision in ("fp32", "f32") and seg.device == "cpu"
    x = np.random.default_rng(0).normal(size=(1, 3, 96, 160)).astype(np.float32)
    with torch.inference_mode():
        ref = torch_seg.net(torch.from_numpy(x)).numpy()
    got = seg.runner(x)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))
    img = np.random.default_rng(1).integers(0, 255, (150, 1300, 3)).astype(np.uint8)  # forces tiling
    p_torch, p_engine = torch_seg.predict(img), seg.predict(img)
    assert p_engine.shape == (3, 150, 1300) and p_engine.dtype == np.float32
    np.testing.assert_allclose(p_engine, p_torch, atol=2e-3)


def test_a_stale_export_is_detected_and_rebuilt(random_segmenter, random_weights, tmp_path):
    import torch

    cache = tmp_path / "cache"
    path, record = exported_model(random_weights, cache)
    assert record["built"] and path.exists()
    again, record2 = exported_model(random_weights, cache)
    assert again == path and not record2["built"]
    # the same file name with other weights in it (a copy over the old file): the hash says so
    other = tmp_path / "other" / "saemi_unet_resnet18.pt"
    other.parent.mkdir()
    state = {k: v.half() for k, v in random_segmenter.net.state_dict().items()}
    state["layers.0.0.weight"] = state["layers.0.0.weight"] + 1
    torch.save(state, other)
    new, record3 = exported_model(other, cache)
    assert record3["built"] and new != path
    assert record3["weights_sha256"] != record["weights_sha256"]
    # the export itself holds the new weights
    import onnx

    m = onnx.load(str(new))
    w = {i.name: i for i in m.graph.initializer}["layers.0.0.weight::fp16"]  # float16 as saved, cast in the graph
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(w), state["layers.0.0.weight"].numpy())
    assert {p.key: p.value for p in m.metadata_props}["saemi_weights_sha256"] == record3["weights_sha256"]
    # a truncated export, or a record that names other weights, is not used
    with open(path, "r+b") as f:
        f.truncate(1000)
    assert exported_model(random_weights, cache)[1]["built"]
    rec = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**rec, "weights_sha256": "0" * 64}))
    assert exported_model(random_weights, cache)[1]["built"]


def test_old_exports_are_pruned(random_weights, tmp_path, monkeypatch):
    from saemi import engine as engine_mod

    monkeypatch.setattr(engine_mod, "KEEP_EXPORTS", 2)
    for k in range(3):
        (tmp_path / f"unet-{k:016d}-000000000000-v2.onnx").write_bytes(b"old")
        (tmp_path / f"unet-{k:016d}-000000000000-v2.json").write_text("{}")
        os.utime(tmp_path / f"unet-{k:016d}-000000000000-v2.onnx", (1000 + k, 1000 + k))
    path, _ = exported_model(random_weights, tmp_path)
    left = sorted(p.name for p in tmp_path.glob("unet-*.onnx"))
    assert left == sorted([path.name, "unet-0000000000000002-000000000000-v2.onnx"])
    assert len(list(tmp_path.glob("unet-*.json"))) == 2


def test_the_shipped_weights_export_is_keyed_by_their_hash(tmp_path):
    from saemi.card import DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE
    from saemi.statedict import file_sha256

    weights = DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE
    path, record = exported_model(weights, tmp_path)
    assert record["weights_sha256"] == file_sha256(weights)
    assert record["weights_sha256"][:16] in path.name


def test_weights_of_another_network_are_refused(tmp_path):
    from saemi.model import build_unet

    import torch

    torch.manual_seed(0)
    weights = _save(build_unet(2), tmp_path / "two_classes.pt")
    with pytest.raises(SaemiError, match="do not fit the exported network") as err:
        exported_model(weights, tmp_path / "cache")
    assert err.value.code == "no_model"
    import onnx

    with pytest.raises(SaemiError, match="without a value"):
        fill_graph(onnx.load(str(GRAPH_FILE)), {})


def test_the_card_is_read_at_load_time_not_baked_into_the_export():
    # the class-weight correction is applied outside the graph: a card change needs no rebuild
    class Constant:
        def __call__(self, batch):
            logits = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 3, 1, 1)
            return np.broadcast_to(logits, (batch.shape[0], 3) + batch.shape[2:]).copy()

    img = np.full((40, 40, 3), 128, np.uint8)
    raw = np.exp([0.0, 0.5, 1.0]) / np.exp([0.0, 0.5, 1.0]).sum()
    plain = EngineSegmenter(Constant(), {"loss_class_weights": [1, 1, 1]}, "test", "fp32").predict(img)
    np.testing.assert_allclose(plain[:, 20, 20], raw, atol=1e-5)
    corrected = EngineSegmenter(Constant(), {"loss_class_weights": [1, 1, 2]}, "test", "fp32").predict(img)
    expected = raw / [1, 1, 2]
    np.testing.assert_allclose(corrected[:, 20, 20], expected / expected.sum(), atol=1e-5)
    with pytest.raises(SaemiError, match="loss_class_weights"):
        EngineSegmenter(Constant(), {"loss_class_weights": [1, 0, 2]}, "test", "fp32")


def test_engine_choice(monkeypatch):
    from saemi import engine as engine_mod
    from saemi import model

    monkeypatch.delenv("SAEMI_ENGINE", raising=False)
    monkeypatch.setattr(model, "_cuda_present", lambda: False)
    monkeypatch.setattr(engine_mod, "available_engines", lambda: ["onnxruntime"])
    assert model.choose_engine(None, "auto") == "onnxruntime"
    assert model.choose_engine(None, "cpu") == "onnxruntime"
    assert model.choose_engine(None, "cuda") == "torch"
    assert model.choose_engine("torch", "cpu") == "torch"
    monkeypatch.setattr(engine_mod, "available_engines", lambda: ["openvino", "onnxruntime"])
    assert model.choose_engine(None, "cpu") == model.CPU_ENGINE_ORDER[0]
    monkeypatch.setattr(engine_mod, "available_engines", lambda: [])
    assert model.choose_engine(None, "cpu") == "torch"
    monkeypatch.setenv("SAEMI_ENGINE", "onnxruntime")
    assert model.choose_engine(None, "cpu") == "onnxruntime"
    with pytest.raises(SaemiError, match="runs on the CPU"):
        model.choose_engine("openvino", "cuda")
    with pytest.raises(SaemiError, match="unknown engine"):
        model.choose_engine("tensorrt", "cpu")
    with pytest.raises(SaemiError, match="unknown device"):
        model.choose_engine(None, "tpu")


@needs_engine
def test_an_engine_that_is_not_installed_is_named(random_weights, monkeypatch, tmp_path):
    from saemi import engine as engine_mod
    from saemi.card import read_card

    monkeypatch.setattr(engine_mod, "available_engines", lambda: [])
    with pytest.raises(SaemiError, match="not installed"):
        load_engine_segmenter(random_weights, read_card(random_weights), "onnxruntime", cache_dir=tmp_path)


@needs_engine
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_the_engine_and_the_torch_path_agree_on_real_images(engine, emps_images):
    # the test (#17): foreground to 99.9 % and the particle count, trained weights, each engine
    # at the precision it runs by default, against the torch path as it was (bf16 where the CPU has it)
    from saemi.model import load_segmenter
    from saemi.pipeline import analyze

    torch_seg = load_segmenter(None, "cpu", engine="torch")
    seg = load_segmenter(None, "cpu", engine=engine)
    for path in emps_images:
        a, b = analyze(path, segmenter=torch_seg), analyze(path, segmenter=seg)
        agree = float(((a.labels > 0) == (b.labels > 0)).mean())
        assert agree >= 0.999, (path.name, agree)
        assert a.summary["count"] == b.summary["count"], path.name


SERVE_PROBE = r"""
import sys, json
from saemi.api import create_app
from saemi.model import load_segmenter
app = create_app({"SAEMI_LOAD": "eager"})
client = app.test_client()
assert client.get("/api/v1/ready").status_code == 200, client.get("/api/v1/ready").get_json()
with open(sys.argv[1], "rb") as f:
    r = client.post("/api/v1/analyze", data={"file": (f, "img.png")}, content_type="multipart/form-data")
assert r.status_code == 200, r.get_data(as_text=True)[:500]
print(json.dumps({"count": r.get_json()["summary"]["count"],
                  "heavy": sorted(m for m in ("torch", "torchvision", "fastai", "spacy") if m in sys.modules)}))
"""


@needs_engine
def test_serving_on_the_cpu_engine_imports_no_torch(tmp_path):
    # the serving path (REST API, model loaded, one analysis) with the CPU engine never imports
    # torch or fastai, so a serving install without them (requirements-serve.txt) works
    image = REPO / "tests" / "fixtures" / "emps" / "images" / "7fabcfe23f_crop.png"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SAEMI_ENGINE": "auto", "SAEMI_DEVICE": "cpu",
           "SAEMI_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", SERVE_PROBE, str(image)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["count"] > 0, result
