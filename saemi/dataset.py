"""Labelled data on disk: ``images/*.png`` with instance masks in ``segmaps/*.png`` (no torch).

Shared by training (:mod:`saemi.train`) and evaluation (:mod:`saemi.evaluate`),
which reads PNGs without importing torch.
"""

from pathlib import Path

import cv2
import numpy as np


def read_label_image(path):
    """Read a 16-bit instance label PNG as int32 (H, W)."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise FileNotFoundError(path)
    if lab.ndim == 3:
        lab = lab[..., 0]
    return lab.astype(np.int32)


def list_pairs(data_dir):
    """Names (stems) of images in ``data_dir/images`` that have a ``segmaps`` twin."""
    data_dir = Path(data_dir)
    names = sorted(p.stem for p in (data_dir / "images").glob("*.png")
                   if (data_dir / "segmaps" / p.name).exists())
    if not names:
        raise FileNotFoundError(f"no images/*.png with matching segmaps/*.png under {data_dir}")
    return names
