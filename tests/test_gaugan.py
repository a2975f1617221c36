"""GauGAN's objective: multi-scale discriminator, hinge and feature-matching losses, VGG19 loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas_prune.errors import NasPruneError
from nas_prune.gaugan import (
    MultiscaleDiscriminator,
    VGGLoss,
    discriminate,
    feature_matching_loss,
    gan_d_loss,
    gan_g_loss,
    load_multiscale_discriminator,
    load_vgg19,
)
from seg_helpers import save_vgg, vgg_state


def _conv_out(n: int, stride: int) -> int:
    return (n + 2 * 2 - 4) // stride + 1  # kernel 4, padding 2


def test_discriminator_layout_shapes_and_keys():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(5, ndf=4, n_layers=4, num_d=2)
    keys = set(d.state_dict())
    # GauGAN's names: plain first and last convs, spectral-normalised middle convs without bias
    assert {"discriminator_0.model0.0.weight", "discriminator_0.model0.0.bias",
            "discriminator_0.model1.0.0.weight_orig", "discriminator_0.model1.0.0.weight_u",
            "discriminator_0.model1.0.0.weight_v", "discriminator_1.model3.0.0.weight_orig",
            "discriminator_1.model4.0.weight", "discriminator_1.model4.0.bias"} <= keys
    assert "discriminator_0.model1.0.0.bias" not in keys and "discriminator_2.model0.0.weight" not in keys
    widths = [d.discriminator_0.model0[0].out_channels] + [getattr(d.discriminator_0, f"model{i}")[0][0].out_channels for i in (1, 2, 3)]
    assert widths == [4, 8, 16, 32]
    x = torch.randn(2, 5, 64, 48)
    out = d(x)
    assert len(out) == 2 and all(len(s) == 5 for s in out)
    for scale, (h, w) in enumerate(((64, 48), (32, 24))):
        shapes = []
        for stride in (2, 2, 2, 1, 1):
            h, w = _conv_out(h, stride), _conv_out(w, stride)
            shapes.append((h, w))
        assert [tuple(t.shape[-2:]) for t in out[scale]] == shapes
        assert out[scale][-1].shape[:2] == (2, 1)
    # the second scale sees the input average-pooled (3x3, stride 2, padding excluded)
    d.eval()
    pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    torch.testing.assert_close(d(x)[1][-1], d.discriminator_1(pooled)[-1])


def test_discriminator_norms():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(3, ndf=4, n_layers=3, num_d=1)
    for _ in range(30):  # power iterations converge on the weight's top singular value
        d(torch.randn(1, 3, 32, 32))
    conv = d.discriminator_0.model1[0][0]
    w = conv.weight_orig.reshape(conv.weight_orig.shape[0], -1)
    sigma = torch.linalg.matrix_norm(w, ord=2)
    torch.testing.assert_close(torch.linalg.matrix_norm(conv.weight.reshape(w.shape), ord=2), torch.tensor(1.0), rtol=1e-3, atol=1e-3)
    assert sigma.item() != pytest.approx(1.0, abs=1e-2)
    # instance norm without affine: per-sample, per-channel zero mean before the LeakyReLU
    x = torch.randn(2, 3, 32, 32)
    h = d.discriminator_0.model0(x)
    normed = d.discriminator_0.model1[0](h)
    torch.testing.assert_close(normed.mean(dim=(2, 3)), torch.zeros(2, 8), atol=1e-5, rtol=0)


def test_discriminate_is_one_pass_fake_first():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(4, ndf=4, n_layers=2, num_d=2).eval()
    s, fake, real = torch.randn(3, 1, 16, 16), torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    pf, pr = discriminate(d, s, fake, real)
    for got, img in ((pf, fake), (pr, real)):
        ref = d(torch.cat([s, img], 1))
        for a, b in zip(got, ref):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_hinge_and_feature_matching_by_hand():
    f0, f1 = torch.tensor([[-2.0, 0.5]]), torch.tensor([[0.0, 3.0]])
    r0, r1 = torch.tensor([[1.5, 0.0]]), torch.tensor([[-1.0, 2.0]])
    fake = [[torch.ones(1, 2), f0], [torch.zeros(1, 2), f1]]
    real = [[torch.zeros(1, 2), r0], [torch.full((1, 2), 2.0), r1]]
    # G: mean over scales of -mean(logits)
    assert gan_g_loss(fake).item() == pytest.approx(((2.0 - 0.5) / 2 + (0.0 - 3.0) / 2) / 2)
    lf, lr = gan_d_loss(fake, real)
    # fake: relu(1 + f): scale0 (0 + 1.5)/2, scale1 (1 + 4)/2 ; real: relu(1 - r): scale0 (0 + 1)/2, scale1 (2 + 0)/2
    assert lf.item() == pytest.approx((0.75 + 2.5) / 2)
    assert lr.item() == pytest.approx((0.5 + 1.0) / 2)
    # feature matching: every layer but the logits, L1 means, summed over layers, / scales
    assert feature_matching_loss(fake, real).item() == pytest.approx((1.0 + 2.0) / 2)
    ls = gan_g_loss(fake, "lsgan").item()
    assert ls == pytest.approx((((-3) ** 2 + 0.25) / 2 + (1 + 4) / 2) / 2)
    with pytest.raises(NasPruneError, match="not one of"):
        gan_g_loss(fake, "wgan")


def test_discriminator_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(6, ndf=4, n_layers=3, num_d=3)
    d(torch.randn(2, 6, 32, 32))
    path = tmp_path / "best_net_D.pth"
    torch.save({"module." + k: v for k, v in d.state_dict().items()}, path)
    e = load_multiscale_discriminator(path, in_channels=6)
    assert (e.ndf, e.n_layers, e.num_d) == (4, 3, 3)
    x = torch.randn(2, 6, 32, 32)
    torch.testing.assert_close(e.eval()(x)[2][-1], d.eval()(x)[2][-1])
    with pytest.raises(NasPruneError, match="takes 6 input channels, this run feeds it 7"):
        load_multiscale_discriminator(path, in_channels=7)
    sd = d.state_dict()
    sd.pop("discriminator_1.model2.0.0.weight_u")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(NasPruneError, match="missing keys: discriminator_1.model2.0.0.weight_u"):
        load_multiscale_discriminator(tmp_path / "bad.pth")
    torch.save({"model.0.weight": torch.zeros(1, 3, 4, 4)}, tmp_path / "patch.pth")
    with pytest.raises(NasPruneError, match="not a GauGAN multi-scale discriminator"):
        load_multiscale_discriminator(tmp_path / "patch.pth")


def test_vgg_loads_torchvision_layout_at_its_indices(tmp_path):
    state = vgg_state()
    path = save_vgg(tmp_path)
    vgg = load_vgg19(path)
    assert vgg.widths == (4, 6, 8, 8, 8) and not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = vgg(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 32, 32), (6, 16, 16), (8, 8, 8), (8, 4, 4), (8, 2, 2)]

    def conv(h, i):
        return F.relu(F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))

    relu1_1 = conv(x, 0)
    relu2_1 = conv(F.max_pool2d(conv(relu1_1, 2), 2), 5)
    relu3_1 = conv(F.max_pool2d(conv(relu2_1, 7), 2), 10)
    h = relu3_1
    for i in (12, 14, 16):
        h = conv(h, i)
    relu4_1 = conv(F.max_pool2d(h, 2), 19)
    h = relu4_1
    for i in (21, 23, 25):
        h = conv(h, i)
    relu5_1 = conv(F.max_pool2d(h, 2), 28)
    for got, ref in zip(feats, (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1)):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # GauGAN's weights 1/32 .. 1 on the L1 of each activation; gradient only through the fake
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = x.clone().requires_grad_(True)
    loss = VGGLoss(vgg)(fake, y)
    ref = sum(w * (a - b).abs().mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), vgg(x), vgg(y)))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_vgg_errors(tmp_path):
    with pytest.raises(NasPruneError, match="VGG19 weights not found: .*vgg19-dcbb9e9d.pth"):
        load_vgg19(tmp_path / "nope.pth")
    with pytest.raises(NasPruneError, match="needs VGG19 weights"):
        load_vgg19(None)
    state = vgg_state()
    state.pop("features.21.bias")
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(NasPruneError, match="missing keys: features.21.bias"):
        load_vgg19(tmp_path / "a.pth")
    state = vgg_state()
    state["features.7.weight"] = torch.zeros(6, 5, 3, 3)
    torch.save(state, tmp_path / "b.pth")
    with pytest.raises(NasPruneError, match=r"features.7.weight \(6, 5, 3, 3\) vs expected \(6, 6, 3, 3\)"):
        load_vgg19(tmp_path / "b.pth")
