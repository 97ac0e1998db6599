"""saemi.unet.ResNet18Unet is fastai's DynamicUnet as SAEMI builds it, without importing fastai."""

import copy
import subprocess
import sys

import numpy as np
import torch

from saemi.unet import ResNet18Unet


def test_the_plain_torch_unet_is_the_fastai_one(random_segmenter):
    # the same state dict loads with strict=True and gives the same logits (random weights, with
    # non-trivial batch-norm statistics), including a size that is not a power of two
    ref = copy.deepcopy(random_segmenter.net).float().to(memory_format=torch.contiguous_format).eval()
    state = ref.state_dict()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, v in state.items():
            if k.endswith(("running_mean", "running_var")):
                v.copy_(torch.rand(v.shape, generator=gen) + 0.5)
    ours = ResNet18Unet(3).eval()
    ours.load_state_dict(state, strict=True)
    assert sorted(ours.state_dict()) == sorted(state)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 96, 160)).astype(np.float32))
    with torch.inference_mode():
        a, b = ref(x), ours(x)
    assert b.shape == (2, 3, 96, 160)
    torch.testing.assert_close(b, torch.as_tensor(a), rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_loading_the_torch_path_imports_no_fastai():
    code = ("import sys; from saemi.model import load_segmenter; s = load_segmenter(None, 'cpu', engine='torch'); "
            "print(type(s.net).__name__, 'fastai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["ResNet18Unet", "False"], out.stdout
