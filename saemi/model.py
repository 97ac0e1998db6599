"""The segmentation network: one place builds it, loads it and runs it.

The network is a fastai ``DynamicUnet`` on a torchvision ResNet18 body, trained
from scratch (no pretrained download is possible where SAEMI is built). It predicts,
per pixel, the classes listed in the model card (``background``, ``interior``,
``boundary`` for the shipped weights).

Weights are stored as a plain state dict and always loaded with
``torch.load(..., weights_only=True)``; nothing is ever unpickled.

The network works at a fixed *relative* scale: every image is resized by the
card's ``input_scale`` (0.5 for the shipped weights, so a 1024x768 micrograph is
seen at 512x384), cut into overlapping tiles when larger than ``tile_size``, and
the blended probabilities are resized back to the image's own resolution. That
keeps the original resolution and aspect ratio, unlike a resize to one fixed size.

The network is trained with a class-weighted cross-entropy (the card's
``loss_class_weights``: the thin boundary class counts double). Such a network
learns probabilities proportional to ``weight * p(class)``, so its raw boundary
probability is inflated and every particle outline lands about one pixel too far
out, which is a +8 % diameter error on a 25-pixel particle. :class:`Segmenter`
divides the weights back out (a prior correction: ``softmax(logits - log w)``),
so the probabilities it returns are calibrated and the 0.5 threshold sits on the
true edge.

Engines. :func:`load_segmenter` returns this module's torch :class:`Segmenter` or,
on the CPU, :class:`saemi.engine.EngineSegmenter` (the ONNX export of the same
weights under OpenVINO or ONNX Runtime), both with the same interface; the choice
(:func:`choose_engine`, ``$SAEMI_ENGINE``) was made by measurement
(``bench/bench_inference.py``, README "Inference engines"): on a 2-core AVX512-BF16
CPU OpenVINO bf16 ran the full pipeline 1.78-1.84x faster than torch bf16 and kept the
evaluation scores to 3 decimals; ONNX Runtime fp32 was no faster than torch bf16.
torch stays for CUDA, for training and as the fallback. Nothing here imports torch
until the torch path is taken, so a serving install without torch works; the torch
path itself builds :class:`saemi.unet.ResNet18Unet` (fastai's network in plain
torch), not fastai's, to skip importing fastai.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .card import DEFAULT_CARD, DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE, read_card
from .errors import SaemiError
# torch-free, shared with saemi.engine; re-exported here, where callers have always found them
from .inference import PredictMixin, _pad_to, _ramp, _starts, log_class_weights, predict_tiled, standardize  # noqa: F401

log = logging.getLogger(__name__)

def build_unet(n_classes=3, img_size=(256, 256)):
    """Build the ResNet18 U-Net, randomly initialised.

    Parameters
    ----------
    n_classes : int
        Output channels (one logit per class).
    img_size : tuple of int
        Size fastai uses to trace the encoder while building the decoder; the
        network accepts any size afterwards.

    Returns
    -------
    torch.nn.Module
        Maps a float tensor of shape (N, 3, H, W) to logits of shape
        (N, n_classes, H, W).
    """
    import warnings

    import torchvision
    from fastai.vision.learner import create_body
    from fastai.vision.models.unet import DynamicUnet

    body = create_body(torchvision.models.resnet18(weights=None), n_in=3, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return DynamicUnet(body, n_classes, img_size)


def build_inference_unet(n_classes=3):
    """The same network as :func:`build_unet`, in plain torch (:class:`saemi.unet.ResNet18Unet`).

    The torch inference path (CUDA serving, ``SAEMI_ENGINE=torch``) loads the weights into
    this one: it takes the same state dict, gives the same logits (tests/test_unet.py), and
    needs no fastai import (which costs seconds of cold start: pandas, matplotlib, scikit-learn).
    Training and the ONNX graph export keep fastai's network.
    """
    from .unet import ResNet18Unet

    return ResNet18Unet(n_classes)


def _cuda_present():
    """Whether a CUDA GPU is visible, asked of the driver (``libcuda``) without importing torch."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):
        return False


def choose_device(preference="auto"):
    """Return the torch device to use: CUDA when present (for ``auto``), else CPU.

    Parameters
    ----------
    preference : {'auto', 'cpu', 'cuda'}

    Raises
    ------
    SaemiError
        If ``cuda`` is asked for and none is available, or the name is unknown.
    """
    import torch

    preference = (preference or "auto").lower()
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise SaemiError("device 'cuda' was asked for but no CUDA GPU is available",
                             code="bad_parameter")
        return torch.device("cuda")
    if preference == "cpu":
        return torch.device("cpu")
    raise SaemiError(f"unknown device {preference!r}: use auto, cpu or cuda", code="bad_parameter")


#: The CPU engines in the order ``auto`` prefers them, fastest first as measured by
#: bench/bench_inference.py (README, "Inference engines"). torch is the last resort on the CPU.
CPU_ENGINE_ORDER = ("openvino", "onnxruntime")
ENGINE_NAMES = ("auto", "torch", "openvino", "onnxruntime")


def _torch_installed():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def choose_engine(preference=None, device="auto"):
    """The engine :func:`load_segmenter` uses: ``torch``, ``openvino`` or ``onnxruntime``.

    ``preference`` (default ``$SAEMI_ENGINE``, else ``auto``) names one, or
    ``auto``: torch for CUDA (``device`` cuda, or auto with a GPU present), else the
    first installed of :data:`CPU_ENGINE_ORDER`, else torch. Nothing is imported
    to decide (the GPU is asked of the driver), so a serving install without torch
    never loads it.

    Raises
    ------
    SaemiError
        ``bad_parameter`` for an unknown name, or a CPU engine asked for with
        device ``cuda``.
    """
    from .engine import available_engines

    name = (preference or os.environ.get("SAEMI_ENGINE") or "auto").lower()
    if name not in ENGINE_NAMES:
        raise SaemiError(f"unknown engine {name!r}: use {', '.join(ENGINE_NAMES)}", code="bad_parameter")
    dev = str(getattr(device, "type", device) or "auto").lower()
    if dev not in ("auto", "cpu", "cuda"):
        raise SaemiError(f"unknown device {device!r}: use auto, cpu or cuda", code="bad_parameter")
    if name != "auto":
        if name != "torch" and dev == "cuda":
            raise SaemiError(f"engine {name!r} runs on the CPU; use engine torch for device cuda",
                             code="bad_parameter")
        return name
    if dev == "cuda" or (dev == "auto" and _torch_installed() and _cuda_present()):
        return "torch"
    installed = available_engines()
    for engine in CPU_ENGINE_ORDER:
        if engine in installed:
            return engine
    return "torch"


@dataclass
class Segmenter(PredictMixin):
    """A loaded torch network with its model card, ready to predict.

    Use :func:`load_segmenter` to make one. ``predict``, ``predict_at_network_scale``
    and ``predict_resized`` (standardise, tile, blend) are
    :class:`saemi.inference.PredictMixin`'s, shared with the CPU engine
    (:class:`saemi.engine.EngineSegmenter`). ``predict`` is safe to call from
    several threads: torch inference holds no shared mutable state here.
    """

    net: "torch.nn.Module"  # noqa: F821
    card: dict
    device: "torch.device"  # noqa: F821
    precision: str = "fp32"
    weights_path: str = ""
    classes: list = field(default_factory=list)

    def __post_init__(self):
        self.classes = list(self.card.get("classes", DEFAULT_CARD["classes"]))
        self.log_class_weights = class_weight_correction(self.card, len(self.classes)).to(self.device)

    engine = "torch"

    def _forward(self, batch):
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            if self.precision == "bf16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    logits = self.net(x)
            else:
                logits = self.net(x)
            return torch.softmax(logits.float() - self.log_class_weights, dim=1).cpu().numpy()


def class_weight_correction(card, n_classes):
    """Log of the card's training class weights, shaped to subtract from logits.

    Parameters
    ----------
    card : dict
        Model card; ``loss_class_weights`` is used when it has one positive
        weight per class, else no correction (zeros).
    n_classes : int

    Returns
    -------
    torch.Tensor, shape (1, n_classes, 1, 1), dtype float32

    Examples
    --------
    >>> class_weight_correction({"loss_class_weights": [1, 1, 2]}, 3).flatten().tolist()
    [0.0, 0.0, 0.6931471824645996]
    """
    import torch

    return torch.from_numpy(log_class_weights(card, n_classes))


def resolve_weights(weights=None):
    """The weights file and model card for ``weights`` (a file, a folder, or None for the default)."""
    weights = Path(weights or os.environ.get("SAEMI_WEIGHTS") or DEFAULT_WEIGHTS_DIR)
    weights_file = weights / WEIGHTS_FILE if weights.is_dir() else weights
    card = read_card(weights_file)
    if not weights_file.exists():
        raise SaemiError(
            f"model weights not found at {weights_file}; train them with 'saemi train' "
            "or point SAEMI_WEIGHTS at a weights file", code="no_model")
    return weights_file, card


def load_segmenter(weights=None, device="auto", precision=None, engine=None):
    """Load trained weights as a segmenter on the best engine.

    Parameters
    ----------
    weights : str or Path, optional
        A ``.pt`` state-dict file, or a folder holding ``saemi_unet_resnet18.pt``
        and ``model_card.json``. Default: ``$SAEMI_WEIGHTS`` or the bundled
        ``saemi/model_weights/``.
    device : {'auto', 'cpu', 'cuda'} or torch.device
    precision : {'fp32', 'bf16'}, optional
        Default: ``$SAEMI_PRECISION``, else the card's ``inference_precision``,
        else fp32. bf16 is used only where the CPU runs it natively.
    engine : {'auto', 'torch', 'openvino', 'onnxruntime'}, optional
        Default ``$SAEMI_ENGINE``, else ``auto`` (:func:`choose_engine`). The CPU
        engines run the ONNX export of the same weights (:mod:`saemi.engine`)
        and return a :class:`saemi.engine.EngineSegmenter`, which has this
        module's :class:`Segmenter` interface.

    Raises
    ------
    SaemiError
        If the weights file is missing or does not fit the network.
    """
    weights_file, card = resolve_weights(weights)
    precision = precision or os.environ.get("SAEMI_PRECISION") or card.get("inference_precision", "fp32")
    chosen = choose_engine(engine, device)
    if chosen != "torch":
        from .engine import load_engine_segmenter

        explicit = (engine or os.environ.get("SAEMI_ENGINE") or "auto").lower() != "auto"
        try:
            return load_engine_segmenter(weights_file, card, chosen, precision)
        except SaemiError as exc:
            if explicit or not _torch_installed():
                raise
            log.warning("engine %s unavailable (%s); using torch", chosen, exc.message)
    import torch

    dev = device if isinstance(device, torch.device) else choose_device(device)
    try:  # the file first: a corrupt or unsafe one is refused before the network is built
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        net = build_inference_unet(len(card["classes"]))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # a corrupt or mismatched file: say which
        raise SaemiError(f"could not load model weights from {weights_file}: {exc}", code="no_model") from exc
    if precision == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
        precision = "fp32"  # emulated bf16 is slower than fp32
    return make_segmenter(net, card, dev, precision, str(weights_file))


def _cpu_has_bf16():
    """Whether this CPU runs bf16 matrix work natively (AVX512-BF16 / AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def make_segmenter(net, card=None, device="cpu", precision="fp32", weights_path=""):
    """Wrap a network (trained or not) as a :class:`Segmenter` in eval mode."""
    import torch

    dev = device if isinstance(device, torch.device) else choose_device(device)
    net = net.to(dev).eval()
    if dev.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return Segmenter(net=net, card={**DEFAULT_CARD, **(card or {})}, device=dev,
                     precision=precision, weights_path=weights_path)
