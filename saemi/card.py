"""The model card: what the shipped network is and how to use it (no torch needed)."""

import json
import os
from pathlib import Path

from .settings import defaults, tuned_names

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "model_weights"
WEIGHTS_FILE = "saemi_unet_resnet18.pt"
CARD_FILE = "model_card.json"

DEFAULT_CARD = {
    "architecture": "fastai DynamicUnet, torchvision ResNet18 body, from scratch",
    "classes": ["background", "interior", "boundary"],
    "normalisation": "per-image: subtract the mean, divide by the standard deviation",
    "input_scale": 0.5,
    "tile_size": 512,
    "tile_overlap": 64,
    # The cross-entropy weights the network was trained with. Weighted training
    # inflates each class's probability by its weight (the boundary class by 2),
    # which pushed every outline outward by about a pixel; inference divides the
    # weights back out (see saemi.model.Segmenter).
    "loss_class_weights": [1.0, 1.0, 2.0],
    # The built-in defaults of the tuned settings, until `saemi evaluate --tune` records others.
    "postprocess": {k: v for k, v in defaults().items() if k in tuned_names()},
}


def weights_dir():
    """Folder of the weights in use: ``$SAEMI_WEIGHTS`` (file or folder) or the bundled one."""
    env = os.environ.get("SAEMI_WEIGHTS")
    if env:
        p = Path(env)
        return p if p.is_dir() else p.parent
    return DEFAULT_WEIGHTS_DIR


def read_card(folder=None):
    """The model card beside the weights, over the defaults.

    ``folder`` is the weights folder or the weights file itself (default
    :func:`weights_dir`).
    """
    folder = Path(folder or weights_dir())
    path = (folder.parent if folder.is_file() else folder) / CARD_FILE
    if not path.exists():
        return dict(DEFAULT_CARD)
    with open(path) as f:
        card = json.load(f)
    return {**DEFAULT_CARD, **card}
