"""The trained U-Net as plain torch modules, for inference without importing fastai.

fastai's ``DynamicUnet`` (what :func:`saemi.model.build_unet` builds, and what the
weights were trained as) is the reference, but importing it pulls in most of fastai
(its ``torch_core`` imports pandas, matplotlib, scikit-learn, ...): seconds of
cold start for a torch server (CUDA) that only runs the network. :class:`ResNet18Unet`
is the same network written out — the same modules under the same names, so the
same state dict loads into it with ``strict=True`` — for the ResNet18 body and the
options SAEMI builds it with (``norm_type=None``, no blur, no self-attention,
``last_cross=True``, ``bottle=False``). ``tests/test_unet.py`` checks that both give
the same logits for the same weights. Training keeps fastai's network (its
initialisation is fastai's).

Layout (``layers.N`` as in ``DynamicUnet``; ResNet18 body, image 1/1 -> 1/32):

====  ==========================================================================
0     the body: conv1, bn1, relu (1/2), maxpool, layer1 (1/4), layer2 (1/8),
      layer3 (1/16), layer4 (1/32); the U-Net taps relu, layer1, layer2, layer3
1-3   batch norm, ReLU, middle convs 512 -> 1024 -> 512
4-7   U-Net blocks: pixel-shuffle up x2, concatenate the batch-normed tap, two convs
8     pixel-shuffle up to full size (96 channels)
9-10  resize to the input's size if needed; concatenate the input (99 channels)
11    a residual block of two 3x3 convs at full size
12    1x1 conv to the class logits
====  ==========================================================================
"""

import torch
import torch.nn.functional as F
from torch import nn

#: The body's children whose outputs feed U-Net blocks 4, 5, 6, 7 (where the resolution changes).
TAPS = (6, 5, 4, 2)


class _Conv(nn.Sequential):
    """fastai ``ConvLayer`` without normalisation: a biased conv, then ReLU unless ``act`` is False."""

    def __init__(self, ni, nf, ks=3, act=True):
        layers = [nn.Conv2d(ni, nf, ks, padding=(ks - 1) // 2, bias=True)]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _PixelShuffleUp(nn.Sequential):
    """fastai ``PixelShuffle_ICNR`` (no blur, no norm): 1x1 conv to 4x channels, pixel shuffle x2."""

    def __init__(self, ni, nf=None):
        super().__init__(_Conv(ni, (nf or ni) * 4, ks=1), nn.PixelShuffle(2))


class _UnetBlock(nn.Module):
    def __init__(self, up_in_c, x_in_c, final_div=True):
        super().__init__()
        self.shuf = _PixelShuffleUp(up_in_c, up_in_c // 2)
        self.bn = nn.BatchNorm2d(x_in_c)
        ni = up_in_c // 2 + x_in_c
        nf = ni if final_div else ni // 2
        self.conv1 = _Conv(ni, nf)
        self.conv2 = _Conv(nf, nf)
        self.relu = nn.ReLU()

    def forward(self, up_in, tap):
        up = self.shuf(up_in)
        if tap.shape[-2:] != up.shape[-2:]:
            up = F.interpolate(up, tap.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(self.relu(torch.cat([up, self.bn(tap)], dim=1))))


class _ResBlock(nn.Module):
    """fastai ``ResBlock(1, n, n)`` without normalisation: ReLU(conv-ReLU-conv(x) + x)."""

    def __init__(self, n):
        super().__init__()
        self.convpath = nn.Sequential(_Conv(n, n), _Conv(n, n, act=False))
        self.idpath = nn.Sequential()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.convpath(x) + self.idpath(x))


class ResNet18Unet(nn.Module):
    """fastai's ``DynamicUnet(create_body(resnet18), n_classes, norm_type=None)``, in plain torch.

    Maps (N, 3, H, W) float to (N, n_classes, H, W) logits; H and W multiples of 32.
    """

    def __init__(self, n_classes=3):
        super().__init__()
        import torchvision

        body = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:8])
        self.layers = nn.ModuleList([
            body, nn.BatchNorm2d(512), nn.ReLU(), nn.Sequential(_Conv(512, 1024), _Conv(1024, 512)),
            _UnetBlock(512, 256), _UnetBlock(512, 128), _UnetBlock(384, 64), _UnetBlock(256, 64, final_div=False),
            _PixelShuffleUp(96), nn.Identity(), nn.Identity(),  # 9, 10: resize and concatenate, in forward
            _ResBlock(99), _Conv(99, n_classes, ks=1, act=False),
        ])

    def forward(self, x):
        h, taps = x, {}
        for i, m in enumerate(self.layers[0]):
            h = m(h)
            if i in TAPS:
                taps[i] = h
        h = self.layers[3](self.layers[2](self.layers[1](h)))
        for block, tap in zip(self.layers[4:8], TAPS):
            h = block(h, taps[tap])
        h = self.layers[8](h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, x.shape[-2:], mode="nearest")
        return self.layers[12](self.layers[11](torch.cat([h, x], dim=1)))
