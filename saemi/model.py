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
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from . import budget
from .card import DEFAULT_CARD, DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE, read_card
from .errors import SaemiError
from .probability import resize_probability

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


def standardize(image):
    """Per-image standardisation of an (H, W, 3) uint8 image to float32 (3, H, W)."""
    x = image.astype(np.float32)
    std = float(x.std())
    x = (x - float(x.mean())) / (std if std > 1e-6 else 1.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass
class Segmenter:
    """A loaded network with its model card, ready to predict.

    Use :func:`load_segmenter` to make one. ``predict`` is safe to call from
    several threads: torch inference holds no shared mutable state here.
    """

    net: torch.nn.Module
    card: dict
    device: torch.device
    precision: str = "fp32"
    weights_path: str = ""
    classes: list = field(default_factory=list)

    def __post_init__(self):
        self.classes = list(self.card.get("classes", DEFAULT_CARD["classes"]))
        self.log_class_weights = class_weight_correction(self.card, len(self.classes)).to(self.device)

    def _forward(self, batch):
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

    def predict_at_network_scale(self, image, deadline=None):
        """Class probabilities at the scale the network works at (``input_scale`` of the card).

        Parameters
        ----------
        image : ndarray, shape (H, W, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional
            Checked before each tile; past it, :class:`SaemiError` (code ``timeout``).

        Returns
        -------
        ndarray, shape (C, h, w), dtype float32
            ``h, w`` = ``H, W`` times the card's ``input_scale`` (at least 32).
        """
        h, w = image.shape[:2]
        scale = float(self.card.get("input_scale", 1.0))
        sh, sw = max(32, round(h * scale)), max(32, round(w * scale))
        small = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        return self.predict_resized(small, deadline)

    def predict_resized(self, small, deadline=None):
        """Class probabilities of an image already at the network's working scale.

        The network's half of :meth:`predict_at_network_scale` (standardise, tile,
        blend); training validates through it, so its scores are those of the
        shipped inference path.

        Parameters
        ----------
        small : ndarray, shape (h, w, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional

        Returns
        -------
        ndarray, shape (C, h, w), dtype float32
        """
        prob = predict_tiled(self._forward, standardize(small), len(self.classes),
                             int(self.card.get("tile_size", 512)), int(self.card.get("tile_overlap", 64)),
                             deadline)
        return prob.astype(np.float32)

    def predict(self, image, deadline=None):
        """Per-pixel class probabilities at the image's own resolution.

        Parameters
        ----------
        image : ndarray, shape (H, W, 3), dtype uint8
        deadline : saemi.budget.Deadline, optional

        Returns
        -------
        ndarray, shape (C, H, W), dtype float32
            Probabilities of the card's classes; they sum to 1 over axis 0.
        """
        return resize_probability(self.predict_at_network_scale(image, deadline), image.shape[:2])


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
    weights = card.get("loss_class_weights")
    if weights is None:
        return torch.zeros(1, n_classes, 1, 1)
    try:
        w = torch.tensor([float(v) for v in weights], dtype=torch.float32)
    except (TypeError, ValueError):
        raise SaemiError(f"model card: loss_class_weights must be a list of numbers, got {weights!r}",
                         code="no_model")
    if len(w) != n_classes:
        return torch.zeros(1, n_classes, 1, 1)
    if not bool((torch.isfinite(w) & (w > 0)).all()):
        raise SaemiError(f"model card: loss_class_weights must be positive, got {weights!r}", code="no_model")
    return torch.log(w).reshape(1, n_classes, 1, 1)


def _pad_to(x, mult):
    """Reflect-pad a (C, H, W) array so H and W are multiples of ``mult``."""
    _, h, w = x.shape
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "edge"
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode)
    return x


def _ramp(n, overlap):
    """1-D blending weights: linear ramps of ``overlap`` pixels at both ends."""
    r = np.ones(n, np.float32)
    k = min(overlap, n // 2)
    if k > 0:
        edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
        r[:k], r[-k:] = edge, edge[::-1]
    return r


def _starts(n, tile, step):
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, step)) + [n - tile]
    return sorted(set(s))


def predict_tiled(forward, x, n_classes, tile=512, overlap=64, deadline=None):
    """Run ``forward`` over overlapping tiles of ``x`` and blend the results.

    Parameters
    ----------
    forward : callable
        Maps float32 (N, 3, h, w) with h, w multiples of 32 to probabilities
        (N, n_classes, h, w).
    x : ndarray, shape (3, H, W), float32
    n_classes : int
    tile, overlap : int
        Tile side and overlap in pixels (of ``x``).
    deadline : saemi.budget.Deadline, optional
        Checked before each tile.

    Returns
    -------
    ndarray, shape (n_classes, H, W), float32
    """
    _, h, w = x.shape
    if h <= tile and w <= tile:
        xp = _pad_to(x, 32)
        return forward(xp[None])[0][:, :h, :w]
    xp = _pad_to(x, 32)
    H, W = xp.shape[1:]
    th, tw = min(tile, H), min(tile, W)
    out = np.zeros((n_classes, H, W), np.float32)
    weight = np.zeros((H, W), np.float32)
    win = np.outer(_ramp(th, overlap), _ramp(tw, overlap))
    starts = [(y0, x0) for y0 in _starts(H, th, th - overlap) for x0 in _starts(W, tw, tw - overlap)]
    for i, (y0, x0) in enumerate(starts):
        budget.check(deadline, f"network tile {i + 1} of {len(starts)}")
        p = forward(xp[None, :, y0:y0 + th, x0:x0 + tw])[0]
        out[:, y0:y0 + th, x0:x0 + tw] += p * win
        weight[y0:y0 + th, x0:x0 + tw] += win
    out /= np.maximum(weight, 1e-6)
    return out[:, :h, :w]


def load_segmenter(weights=None, device="auto", precision=None):
    """Build the network and load trained weights as a state dict.

    Parameters
    ----------
    weights : str or Path, optional
        A ``.pt`` state-dict file, or a folder holding ``saemi_unet_resnet18.pt``
        and ``model_card.json``. Default: ``$SAEMI_WEIGHTS`` or the bundled
        ``saemi/model_weights/``.
    device : {'auto', 'cpu', 'cuda'} or torch.device
    precision : {'fp32', 'bf16'}, optional
        Default: ``$SAEMI_PRECISION``, else the card's ``inference_precision``,
        else fp32.

    Raises
    ------
    SaemiError
        If the weights file is missing or does not fit the network.
    """
    weights = Path(weights or os.environ.get("SAEMI_WEIGHTS") or DEFAULT_WEIGHTS_DIR)
    weights_file = weights / WEIGHTS_FILE if weights.is_dir() else weights
    card = read_card(weights_file)
    if not weights_file.exists():
        raise SaemiError(
            f"model weights not found at {weights_file}; train them with 'saemi train' "
            "or point SAEMI_WEIGHTS at a weights file", code="no_model")
    dev = device if isinstance(device, torch.device) else choose_device(device)
    try:  # the file first: a corrupt or unsafe one is refused before the network is built
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        net = build_unet(len(card["classes"]))
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # a corrupt or mismatched file: say which
        raise SaemiError(f"could not load model weights from {weights_file}: {exc}", code="no_model") from exc
    precision = precision or os.environ.get("SAEMI_PRECISION") or card.get("inference_precision", "fp32")
    if precision == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
        precision = "fp32"  # emulated bf16 is slower than fp32
    return make_segmenter(net, card, dev, precision, str(weights_file))


def _cpu_has_bf16():
    """Whether this CPU runs bf16 matrix work natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def make_segmenter(net, card=None, device="cpu", precision="fp32", weights_path=""):
    """Wrap a network (trained or not) as a :class:`Segmenter` in eval mode."""
    dev = device if isinstance(device, torch.device) else choose_device(device)
    net = net.to(dev).eval()
    if dev.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return Segmenter(net=net, card={**DEFAULT_CARD, **(card or {})}, device=dev,
                     precision=precision, weights_path=weights_path)
