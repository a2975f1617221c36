"""Small generators of many shapes for the ``module`` family's tests (8-16 channels, 32x32).

Each one exercises a coupling the dependency graph must get right; none is a copy of a
published network, they only share the structural ideas named in their docstrings.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class UNetSmall(nn.Module):
    """U-Net-like: two stride-2 levels, concat skips, batch norm, ConvTranspose up, in-place ReLU before the concats."""

    def __init__(self, ngf: int = 8, in_nc: int = 3, out_nc: int = 3):
        super().__init__()
        self.inc = nn.Sequential(nn.Conv2d(in_nc, ngf, 3, padding=1), nn.BatchNorm2d(ngf), nn.ReLU(inplace=True))
        self.down1 = nn.Sequential(nn.Conv2d(ngf, 2 * ngf, 4, 2, 1), nn.BatchNorm2d(2 * ngf), nn.LeakyReLU(0.2, True))
        self.down2 = nn.Sequential(nn.Conv2d(2 * ngf, 2 * ngf, 4, 2, 1), nn.BatchNorm2d(2 * ngf), nn.ReLU(True))
        self.up1 = nn.Sequential(nn.ConvTranspose2d(2 * ngf, 2 * ngf, 4, 2, 1), nn.BatchNorm2d(2 * ngf), nn.ReLU(True))
        self.up2 = nn.Sequential(nn.ConvTranspose2d(4 * ngf, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(True))
        self.outc = nn.Sequential(nn.Conv2d(2 * ngf, out_nc, 3, padding=1), nn.Tanh())

    def forward(self, x):
        a = self.inc(x)
        b = self.down1(a)
        c = self.down2(b)
        u = self.up1(c)
        u = self.up2(torch.cat([b, u], 1))
        return self.outc(torch.cat([u, a], 1))


class ResBlock(nn.Module):
    def __init__(self, c: int, norm=nn.InstanceNorm2d):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c),
        )

    def forward(self, x):
        return x + self.body(x)


class ResnetSmall(nn.Module):
    """CycleGAN-ResNet-like: reflection pads, affine-free instance norm, residual adds, ConvTranspose up."""

    def __init__(self, ngf: int = 8, n_blocks: int = 2, norm=nn.InstanceNorm2d):
        super().__init__()
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm(ngf), nn.ReLU(True),
                                  nn.Conv2d(ngf, 2 * ngf, 3, 2, 1), norm(2 * ngf), nn.ReLU(True))
        self.blocks = nn.Sequential(*[ResBlock(2 * ngf, norm) for _ in range(n_blocks)])
        self.head = nn.Sequential(nn.ConvTranspose2d(2 * ngf, ngf, 3, 2, 1, output_padding=1), norm(ngf), nn.ReLU(True),
                                  nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def define_G(ngf: int = 8, n_blocks: int = 1, norm_layer=nn.InstanceNorm2d):
    """A ``define_G``-style factory whose norm-layer argument JSON cannot express."""
    return ResnetSmall(ngf=ngf, n_blocks=n_blocks, norm=norm_layer)


class DenseBlock(nn.Module):
    """RRDB-like dense block: each conv reads the concat of all earlier outputs; residual scaled by 0.2."""

    def __init__(self, c: int, g: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c + i * g, g, 3, padding=1) for i in range(3)])
        self.fuse = nn.Conv2d(c + 3 * g, c, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + self.fuse(torch.cat(feats, 1)) * 0.2


class RRDBSmall(nn.Module):
    """ESRGAN-like: no norm, dense blocks in a residual-in-residual trunk, nearest interpolate x2, replicate pads."""

    def __init__(self, nf: int = 12, gc: int = 8):
        super().__init__()
        self.first = nn.Conv2d(3, nf, 3, padding=1)
        self.trunk = nn.Sequential(DenseBlock(nf, gc), DenseBlock(nf, gc))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.up = nn.Conv2d(nf, nf, 3, padding=1, padding_mode="replicate")
        self.last = nn.Conv2d(nf, 3, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        f = self.first(x)
        f = f + self.trunk_conv(self.trunk(f)) * 0.2
        f = self.act(self.up(F.interpolate(f, scale_factor=2, mode="nearest")))
        return self.last(F.avg_pool2d(f, 2))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(True),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(True),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.block(x)


class MobileSmall(nn.Module):
    """Depthwise-separable inverted residuals, stride-2 down, PixelShuffle up, replicate padding."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, padding_mode="replicate"), nn.BatchNorm2d(c), nn.ReLU(True))
        self.blocks = nn.Sequential(InvertedResidual(c), InvertedResidual(c))
        self.up = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.BatchNorm2d(c), nn.ReLU(True))
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.out(self.up(self.blocks(self.stem(x)))))


class NormZoo(nn.Module):
    """Group norm (2 groups and 1 group), affine instance norm with running stats, bilinear up,
    one activation module reused at several places, in-place activations before a concat."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.act = nn.ReLU(inplace=True)  # reused below
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.n1 = nn.GroupNorm(2, c)
        self.c2 = nn.Conv2d(c, 2 * c, 3, 2, 1)
        self.n2 = nn.GroupNorm(1, 2 * c)
        self.c3 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.n3 = nn.InstanceNorm2d(c, affine=True, track_running_stats=True)
        self.c4 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        a = self.act(self.n1(self.c1(x)))
        b = self.act(self.n2(self.c2(a)))
        b = self.act(self.n3(self.c3(b)))
        b = F.interpolate(b, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.act(self.c4(torch.cat([a, b], 1))))


def _blur_kernel(c: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :]) / 16
    return k.expand(c, 1, 3, 3).clone()


class BlurNet(nn.Module):
    """Anti-aliased downsampling: a fixed C x 1 x 3 x 3 blur held as a buffer, used with
    ``F.conv2d(groups=C)``; the channel count is read from the buffer, so it can be sliced."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.n1 = nn.BatchNorm2d(c)
        self.register_buffer("blur", _blur_kernel(c))
        self.c2 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.n2 = nn.InstanceNorm2d(2 * c)
        self.c3 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.n1(self.c1(x)))
        a = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="reflect"), self.blur, stride=2, groups=self.blur.shape[0])
        b = F.relu(self.n2(self.c2(a)))
        return self.out(self.up(F.relu(self.c3(b))))


class StoredWidthBlur(BlurNet):
    """The same blur, but ``groups`` is a width stored at construction: slicing the buffer
    alone would break the forward pass, so the group must be left whole."""

    def __init__(self, c: int = 8):
        super().__init__(c)
        self.width = c

    def forward(self, x):
        a = F.relu(self.n1(self.c1(x)))
        a = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="reflect"), self.blur, stride=2, groups=self.width)
        b = F.relu(self.n2(self.c2(a)))
        return self.out(self.up(F.relu(self.c3(b))))


class InplaceOnNormViews(nn.Module):
    """CAT-style branches: ``F.relu(norm(conv(x)), inplace=True)`` on affine instance norm
    (whose output is a view) and ``F.dropout``, summed into a residual stream."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.stem_norm = nn.InstanceNorm2d(c, affine=True)
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.a_norm = nn.InstanceNorm2d(c, affine=True)
        self.b = nn.Conv2d(c, c, 1)
        self.b_norm = nn.InstanceNorm2d(c, affine=True)
        self.a_out = nn.Conv2d(c, c, 3, padding=1)
        self.b_out = nn.Conv2d(c, c, 1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.stem_norm(self.stem(x)), inplace=True)
        ha = F.dropout(F.relu(self.a_norm(self.a(s)), inplace=True), 0.5, self.training, True)
        hb = F.relu(self.b_norm(self.b(s)), True)
        s = s + self.a_out(ha) + self.b_out(hb)
        return torch.tanh(self.out(s))


class SqueezeExcite(nn.Module):
    """A squeeze-excitation gate: pooled vector -> Linear -> Linear -> sigmoid, reshaped with
    ``view`` and multiplied into the features. The view couples channels Torch-Pruning cannot
    follow, so the gated group is left whole; the Linear bottleneck stays prunable."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.fc1 = nn.Linear(c, 4)
        self.fc2 = nn.Linear(4, c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.c1(x))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(a, 1).flatten(1)))))
        a = a * w.view(-1, a.shape[1], 1, 1)
        return self.out(F.relu(self.c2(a)))


class FunctionalShuffle(nn.Module):
    """``F.pixel_shuffle`` without a module: the channel count changes across an op the graph
    takes as channel-preserving, so the groups around it are left whole."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, 4 * c, 3, padding=1)
        self.c3 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.avg_pool2d(F.pixel_shuffle(self.c2(a), 2), 2)
        return self.out(F.relu(self.c3(torch.cat([a, b], 1))))


class LearnedScale(nn.Module):
    """A learnable per-channel scale and a per-channel shift buffer, both ``[1, C, 1, 1]`` and
    outside any layer (sliced with their channels), and a tuple output (image, scalar)."""

    def __init__(self, c: int = 16):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, c).view(1, c, 1, 1))
        self.register_buffer("shift", torch.linspace(-0.1, 0.1, c).view(1, c, 1, 1))
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.c1(x)) * self.scale + self.shift
        y = self.out(F.relu(self.c2(a)))
        return y, y.mean()


class GroupNormOverConcat(nn.Module):
    """Group norm (2 groups) over the concat of two groups' channels: left whole."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)
        self.gn = nn.GroupNorm(2, 2 * c)
        self.out = nn.Conv2d(2 * c, 3, 3, padding=1)

    def forward(self, x):
        a = F.relu(self.c1(x))
        return self.out(self.gn(torch.cat([a, self.c2(a)], 1)))


class BufferAdd(nn.Module):
    """A ``[C, H, W]`` buffer added to the features: only ``[..., C, 1, 1]`` buffers are sliced
    with their channels, so the group it meets is left whole (and listed)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.c1 = nn.Conv2d(3, c, 3, padding=1)
        self.register_buffer("ramp", torch.linspace(0, 1, 32).view(1, 1, 32).expand(c, 32, 32).clone())
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        return self.out(F.relu(self.c1(x)) + self.ramp)


class NothingPrunable(nn.Module):
    """One conv straight to the image: its only group is the output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


#: name -> (constructor, kwargs) of the generators every test runs on.
ZOO = {
    "unet": (UNetSmall, {}),
    "resnet": (ResnetSmall, {}),
    "rrdb": (RRDBSmall, {}),
    "mobile": (MobileSmall, {}),
    "normzoo": (NormZoo, {}),
    "blur": (BlurNet, {}),
}
