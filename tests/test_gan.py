"""PatchGAN discriminator, GAN losses, and loading a teacher discriminator safely."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_prune.errors import NasPruneError
from nas_prune.gan import GANLoss, PatchDiscriminator, load_discriminator


def test_pix2pix_discriminator_shape_and_size():
    d = PatchDiscriminator(6)  # conditional pix2pix D: ndf 64, 3 layers, batch norm
    # pix2pix prints "Total number of parameters : 2.769 M" for this network
    assert sum(p.numel() for p in d.parameters()) == 2_768_705
    assert d(torch.randn(2, 6, 256, 256)).shape == (2, 1, 30, 30)  # 70x70 patches on 256x256
    small = PatchDiscriminator(3, ndf=8, norm="instance")
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)


@pytest.mark.parametrize(
    "mode, d_want, g_want",
    [
        # logits real=[2, 0], fake=[-1, 1]
        ("lsgan", 0.5 * (((2 - 1) ** 2 + (0 - 1) ** 2) / 2 + (1 + 1) / 2), ((-1 - 1) ** 2 + 0) / 2),
        ("hinge", 0.5 * ((0 + 1) / 2 + (0 + 2) / 2), -(-1 + 1) / 2),
    ],
)
def test_loss_values(mode, d_want, g_want):
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    loss = GANLoss(mode)
    assert loss.d_loss(real, fake).item() == pytest.approx(d_want)
    assert loss.g_loss(fake).item() == pytest.approx(g_want)


def test_vanilla_is_cross_entropy():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    loss = GANLoss("vanilla")
    sp = nn.functional.softplus
    assert loss.d_loss(real, fake).item() == pytest.approx(0.5 * (sp(-real).mean() + sp(fake).mean()).item())
    assert loss.g_loss(fake).item() == pytest.approx(sp(-fake).mean().item())
    with pytest.raises(NasPruneError, match="not one of lsgan, vanilla, hinge"):
        GANLoss("wgan")


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_discriminator_round_trip(tmp_path, norm):
    torch.manual_seed(0)
    d = PatchDiscriminator(6, ndf=8, norm=norm).eval()
    path = tmp_path / "netD.pth"
    # saved the way DataParallel training scripts do, with a module. prefix
    torch.save({f"module.{k}": v for k, v in d.state_dict().items()}, path)
    loaded = load_discriminator(path, in_channels=6).eval()
    assert (loaded.norm, loaded.ndf, loaded.n_layers) == (norm, 8, 3)
    x = torch.randn(2, 6, 32, 32)
    assert torch.equal(loaded(x), d(x))
    with pytest.raises(NasPruneError, match="takes 6 input channels, this run feeds it 3"):
        load_discriminator(path, in_channels=3)


def test_safetensors_and_bad_files(tmp_path):
    from safetensors.torch import save_file

    d = PatchDiscriminator(3, ndf=8, n_layers=2, norm="instance")
    save_file(d.state_dict(), str(tmp_path / "d.safetensors"))
    assert load_discriminator(tmp_path / "d.safetensors").n_layers == 2
    torch.save(d, tmp_path / "pickled.pth")  # a whole pickled module is refused, never unpickled
    with pytest.raises(NasPruneError, match="cannot be read"):
        load_discriminator(tmp_path / "pickled.pth")
    with pytest.raises(NasPruneError, match="not found"):
        load_discriminator(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1, 1, 1, 1)}, tmp_path / "other.pth")
    with pytest.raises(NasPruneError, match="not a PatchGAN"):
        load_discriminator(tmp_path / "other.pth")
