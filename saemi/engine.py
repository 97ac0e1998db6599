"""The CPU inference engine: the trained U-Net exported to ONNX, run by OpenVINO or ONNX Runtime.

Nothing here imports torch (except :func:`export_graph`, a developer step), so a
serving install needs neither torch nor fastai (``requirements-serve.txt``).

How the exported network is made, and why it cannot go stale
-------------------------------------------------------------
* ``saemi/graphs/unet_resnet18.onnx`` is the network's *graph without weights*
  (about 30 kB), exported once from :func:`saemi.model.build_unet` by
  :func:`export_graph` (``python -m saemi.engine --export-graph``). Each weight
  of the graph is an empty initializer named by its state-dict key
  (``layers.0.0.weight``, ...). It depends on the architecture only, not on the
  trained values; ``tests/test_engine.py`` exports it again and checks that the
  shipped one is the same graph.
* At first use :func:`exported_model` fills that graph with the weights file's
  tensors (read by :func:`saemi.statedict.read_state_dict`, without torch; float16
  weights, as shipped, stay float16 with a cast to float32 in the graph: exact) and
  writes the result to the engine cache, ``$SAEMI_ENGINE_DIR`` (default
  ``$XDG_CACHE_HOME/saemi/engine``, i.e. ``~/.cache/saemi/engine``: the package
  folder may be read-only), as ``unet-<weights sha256>-<graph sha256>-v<format>.onnx``
  with a JSON record beside it. Every load hashes the weights file again and uses
  the cached export only when its record names the same weights hash, graph hash,
  export format and file size; anything else (other or retrained weights, a new
  graph, a truncated file) builds it again. Every initializer's shape is checked
  against the weights, so weights of another architecture are refused
  (:class:`SaemiError` ``no_model``) rather than run wrongly.
* The model card is not compiled into the export: the class-weight correction
  (``loss_class_weights``), ``input_scale`` and the tiling are applied outside
  the graph (:mod:`saemi.inference`), read from the card at load time, so a card
  change takes effect without a rebuild.

Engines and precision (measured: ``bench/bench_inference.py``; docs in README)
------------------------------------------------------------------------------
* ``openvino``: ``bf16`` where the CPU has native bf16 (AVX512-BF16 / AMX; the
  card's ``inference_precision``), else ``f32``. The default on the CPU: 1.8x the
  full pipeline of torch bf16 on a 2-core AVX512-BF16 CPU, ``saemi evaluate`` scores
  equal to the fp32 network's to 3 decimals (AP 0.8996 against 0.8997, Dice 0.9529).
  int8 (static QDQ) was 1.85x faster again but lost 0.004 Dice: not used.
* ``onnxruntime``: fp32 (its CPU provider has no bf16 convolutions).
* ``torch`` (:mod:`saemi.model`): CUDA, training, and the fallback.

:func:`saemi.model.load_segmenter` picks the engine (``$SAEMI_ENGINE``, default
``auto``: see :func:`saemi.model.choose_engine`).
"""

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SaemiError
from .export import write_atomic
from .inference import PredictMixin, card_over_defaults, corrected_softmax, log_class_weights
from .statedict import file_sha256, read_state_dict

GRAPH_FILE = Path(__file__).resolve().parent / "graphs" / "unet_resnet18.onnx"
ENGINES = ("openvino", "onnxruntime")
#: The graph's input and output names.
INPUT, OUTPUT = "x", "logits"
OPSET = 17
#: Bumped whenever :func:`fill_graph` writes the export differently: part of the cache key.
EXPORT_FORMAT = 2


def engine_dir():
    """Folder of the exported networks: ``$SAEMI_ENGINE_DIR``, else ``$XDG_CACHE_HOME/saemi/engine``."""
    env = os.environ.get("SAEMI_ENGINE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "saemi" / "engine"


def available_engines():
    """The engines whose runtime is installed, in order of preference (cheap: no import)."""
    import importlib.util

    return [e for e in ENGINES if importlib.util.find_spec(e) is not None]


def cpu_threads():
    """Threads for one forward pass: ``$OMP_NUM_THREADS`` (set per worker by the gunicorn config), else the CPUs."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        n = 0
    if n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- the export

def graph_sha256(graph_file=GRAPH_FILE):
    return file_sha256(graph_file)


def _load_graph(graph_file=GRAPH_FILE):
    import onnx

    try:
        return onnx.load(str(graph_file))
    except (OSError, Exception) as exc:  # onnx raises DecodeError and friends
        raise SaemiError(f"could not read the network graph {graph_file}: {exc}", code="no_model") from exc


def fill_graph(graph, state, weights_label="weights"):
    """The graph with its empty initializers filled from a state dict.

    Float32 weights go in as float32. Float16 ones (the shipped weights are stored so) go in
    as float16 under ``NAME::fp16``, with a ``Cast`` to float32 named ``NAME`` at the top of
    the graph: exact (every float16 is a float32), half the file, and both runtimes fold the
    casts when they load the model, so it runs as the float32 network does.

    Raises
    ------
    SaemiError
        (``no_model``) if a weight is missing or of another shape: weights of
        another architecture (or number of classes) than the graph's.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    slots = {init.name: init for init in model.graph.initializer
             if not init.raw_data and init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) > 0}
    # batch norm's step counter is not a weight (saved as int64, or as float16 by a blanket .half())
    floating = {k for k, v in state.items() if v.dtype.kind == "f" and not k.endswith(".num_batches_tracked")}
    missing, empty = sorted(floating - set(slots)), sorted(set(slots) - floating)
    if empty or missing:
        raise SaemiError(f"{weights_label} do not fit the exported network: "
                         f"{len(empty)} graph weights without a value (e.g. {empty[:3]}), "
                         f"{len(missing)} weights the graph does not use (e.g. {missing[:3]})", code="no_model")
    casts = []
    for name, init in slots.items():
        value = state[name]
        if tuple(init.dims) != tuple(value.shape):
            raise SaemiError(f"{weights_label} do not fit the exported network: {name} has shape "
                             f"{tuple(value.shape)}, the graph wants {tuple(init.dims)}", code="no_model")
        if value.dtype == np.float16:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype="<f2"), f"{name}::fp16"))
            casts.append(helper.make_node("Cast", [f"{name}::fp16"], [name], to=onnx.TensorProto.FLOAT,
                                          name=f"{name}::cast"))
        else:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype="<f4"), name))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _record_path(model_path):
    return model_path.with_suffix(".json")


def _cached(model_path, wanted):
    """Whether ``model_path`` is an export of the weights and graph named in ``wanted``, whole."""
    try:
        with open(_record_path(model_path)) as f:
            saved = json.load(f)
        return (all(saved.get(k) == v for k, v in wanted.items())
                and model_path.stat().st_size == int(saved["size"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


#: Exports kept per cache folder (62 MB each), the most recently used; older ones are removed
#: when a new one is built (other weights, or a new graph or format).
KEEP_EXPORTS = 4


def _touch(path):
    try:
        os.utime(path)
    except OSError:  # a read-only cache (built at install): fine
        pass


def _prune(folder, keep):
    exports = sorted(Path(folder).glob("unet-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in exports[keep:]:
        for p in (old, _record_path(old)):
            try:
                p.unlink()
            except OSError:
                pass


def exported_model(weights_file, cache_dir=None, graph_file=GRAPH_FILE):
    """Path of the ONNX export of ``weights_file``, built now unless a current one is cached.

    Parameters
    ----------
    weights_file : str or Path
        A state-dict ``.pt`` file (the torch path's weights).
    cache_dir : str or Path, optional
        Default :func:`engine_dir`; if it cannot be written, a folder in the
        system's temporary directory.

    Returns
    -------
    path : Path
        The ``.onnx`` file (the weights inside).
    record : dict
        What it was built from: ``weights_sha256``, ``graph_sha256``, ``size``,
        and ``built`` (True when it was built by this call).
    """
    weights_file = Path(weights_file)
    if not weights_file.exists():
        raise SaemiError(f"model weights not found at {weights_file}", code="no_model")
    wsha, gsha = file_sha256(weights_file), graph_sha256(graph_file)
    name = f"unet-{wsha[:16]}-{gsha[:12]}-v{EXPORT_FORMAT}.onnx"
    dirs = [Path(cache_dir) if cache_dir else engine_dir(),
            Path(tempfile.gettempdir()) / f"saemi-engine-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]
    wanted = {"weights_sha256": wsha, "graph_sha256": gsha, "format": EXPORT_FORMAT}
    for d in dirs:
        if _cached(d / name, wanted):
            _touch(d / name)
            return d / name, {**wanted, "size": (d / name).stat().st_size, "built": False}
    model = fill_graph(_load_graph(graph_file), read_state_dict(weights_file), f"weights {weights_file}")
    meta = {"saemi_weights_sha256": wsha, "saemi_graph_sha256": gsha, "saemi_export_format": str(EXPORT_FORMAT)}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    data = model.SerializeToString()
    record = {**wanted, "size": len(data)}
    errors = []
    for d in dirs:
        path = d / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
            write_atomic(_record_path(path), json.dumps(record).encode())
            _prune(d, keep=KEEP_EXPORTS)
            return path, {**record, "built": True}
        except OSError as exc:
            errors.append(f"{d}: {exc}")
    raise SaemiError("could not write the exported network (set SAEMI_ENGINE_DIR to a writable folder): "
                     + "; ".join(errors), code="no_model")


def export_graph(path=GRAPH_FILE, n_classes=3):
    """Export :func:`saemi.model.build_unet`'s graph, weights left empty, to ``path`` (needs torch).

    The network is exported with random, all-distinct values (the exporter merges
    initializers of equal value, which would tie two weights that merely
    happened to be equal in one training run), in eval mode with batch norm kept
    as its own node (``TrainingMode.PRESERVE``, no constant folding), so every
    initializer is one state-dict tensor under its own name; their values are
    then dropped. Height and width are dynamic (multiples of 32).
    """
    import io
    import warnings

    import onnx
    import torch

    from .model import build_unet

    net = build_unet(n_classes).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)  # positive: batch-norm variances
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 64, 64),), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "n", 2: "h", 3: "w"}, OUTPUT: {0: "n", 2: "h", 3: "w"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    model = onnx.load_from_string(buf.getvalue())
    state = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}
    names = {init.name for init in model.graph.initializer}
    if set(state) - names:
        raise RuntimeError(f"the export lost weights (merged or folded): {sorted(set(state) - names)[:5]}")
    for init in model.graph.initializer:
        if init.name in state:  # keep name, dims and type; drop the value
            init.ClearField("raw_data")
            init.ClearField("float_data")
    model.producer_name, model.doc_string = "saemi", "saemi.model.build_unet graph; weights filled by saemi.engine"
    onnx.checker.check_model(fill_graph(model, {k: v.numpy() for k, v in state.items()}))  # whole once filled
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


# --------------------------------------------------------------------------- the runtimes

def _ov_precision(core, precision):
    if precision == "bf16" and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "bf16"
    return "f32"


class _OpenVinoRunner:
    def __init__(self, path, precision, threads):
        import openvino as ov

        core = ov.Core()
        self.precision = _ov_precision(core, precision)
        # One stream of ``threads`` threads: one forward pass at a time per worker, as the service
        # runs them. No pinning: OpenVINO pins each process's threads from core 0 up, so several
        # gunicorn or Dask workers on one host would share cores (and on a machine shared with
        # other jobs, unpinned was faster: 0.97 s against 1.33 s, network alone, under load).
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._local = threading.local()  # an infer request is not thread-safe; one per thread

    def __call__(self, batch):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req.infer({0: batch})[0].copy()


class _OrtRunner:
    def __init__(self, path, precision, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.precision = "fp32"

    def __call__(self, batch):  # InferenceSession.run is thread-safe
        return self.session.run([OUTPUT], {INPUT: batch})[0]


RUNNERS = {"openvino": _OpenVinoRunner, "onnxruntime": _OrtRunner}


@dataclass
class EngineSegmenter(PredictMixin):
    """The exported network under a CPU runtime, with the interface of :class:`saemi.model.Segmenter`.

    ``predict``, ``predict_at_network_scale``, ``predict_resized`` (and so the
    tiling) are :class:`saemi.inference.PredictMixin`'s, as for the torch
    segmenter. ``predict`` may be called from several threads.
    """

    runner: object
    card: dict
    engine: str
    precision: str
    weights_path: str = ""
    model_path: str = ""
    device: str = "cpu"
    classes: list = field(default_factory=list)

    def __post_init__(self):
        self.card = card_over_defaults(self.card)
        self.classes = list(self.card["classes"])
        self.log_class_weights = log_class_weights(self.card, len(self.classes))

    def _forward(self, batch):
        return corrected_softmax(self.runner(np.ascontiguousarray(batch, dtype=np.float32)), self.log_class_weights)


def load_engine_segmenter(weights_file, card, engine="openvino", precision="bf16", cache_dir=None, threads=None):
    """Export (or reuse the cached export of) ``weights_file`` and open it in ``engine``.

    Raises
    ------
    SaemiError
        ``no_model`` if the engine is not installed, the weights do not fit the
        graph, or the export cannot be written.
    """
    if engine not in RUNNERS:
        raise SaemiError(f"unknown engine {engine!r}: use one of torch, {', '.join(ENGINES)}", code="bad_parameter")
    if engine not in available_engines():
        raise SaemiError(f"engine {engine!r} is not installed (pip install {engine})", code="no_model")
    path, _ = exported_model(weights_file, cache_dir)
    try:
        runner = RUNNERS[engine](path, precision, threads or cpu_threads())
    except Exception as exc:  # the runtime's own errors: name them
        raise SaemiError(f"{engine} could not open the exported network {path}: {exc}", code="no_model") from exc
    return EngineSegmenter(runner=runner, card=card, engine=engine, precision=runner.precision,
                           weights_path=str(weights_file), model_path=str(path))


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m saemi.engine", description=__doc__.splitlines()[0])
    ap.add_argument("--export-graph", action="store_true", help=f"write {GRAPH_FILE.name} from build_unet (needs torch)")
    ap.add_argument("--build", metavar="WEIGHTS", help="build (or check) the export of a weights file; print its path")
    args = ap.parse_args(argv)
    if args.export_graph:
        print(export_graph())
    if args.build:
        path, record = exported_model(args.build)
        print(path, json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
