"""GauGAN's training losses (Park et al., CVPR 2019), as NVlabs SPADE and CAT compute them.

With ``D`` a :class:`~nas_prune.gaugan.discriminator.MultiscaleDiscriminator`, ``s`` the
semantic map, ``x`` the real image and ``G(s)`` the generated one, ``D`` runs once on the
batch ``cat([cat(s, G(s)), cat(s, x)])`` (fake first) and its outputs are split in halves
(:func:`discriminate`). Per scale ``k`` of ``K`` with logits ``f_k`` (fake) and ``r_k`` (real):

- hinge loss (Lim & Ye 2017), generator: ``L_gan = mean_k -mean(f_k)``;
  discriminator: ``L_D = mean_k mean(relu(1 + f_k)) + mean_k mean(relu(1 - r_k))``
  (fake and real terms added, no 1/2).
- feature matching (pix2pixHD): ``L_feat = sum_k sum_j |D_kj(fake) - D_kj(real)|_1 / K`` over
  every layer ``j`` but the logits, real features detached (L1 = mean absolute difference).
- VGG perceptual loss: ``L_vgg = sum_i w_i |phi_i(G(s)) - phi_i(x)|_1`` over VGG19's
  relu1_1 .. relu5_1 with ``w = 1/32, 1/16, 1/8, 1/4, 1`` (:mod:`nas_prune.gaugan.vgg`), the
  real image's features computed without gradient.

The generator minimises ``lambda_gan L_gan + lambda_feat L_feat + lambda_vgg L_vgg`` (GauGAN
and CAT: 1, 10, 10) plus distillation terms; the discriminator minimises ``L_D``.
``lsgan`` and ``vanilla`` GAN modes apply :class:`nas_prune.gan.GANLoss` to each scale's
logits instead of the hinge (GauGAN offers them too; the published runs use the hinge).

Everything is computed in float32, also under autocast. No departure from the published
computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas_prune.errors import NasPruneError

__all__ = ["discriminate", "gan_g_loss", "gan_d_loss", "feature_matching_loss", "GAUGAN_GAN_MODES"]

GAUGAN_GAN_MODES = ("hinge", "lsgan", "vanilla")

Preds = list[list[torch.Tensor]]


def discriminate(disc, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> tuple[Preds, Preds]:
    """``(fake outputs, real outputs)`` of one discriminator pass over ``[fake; real]`` (GauGAN's order).

    One pass, not two, matters with spectral norm: each training-mode forward takes one
    power-iteration step, as many per training step as GauGAN takes.
    """
    x = torch.cat([torch.cat([semantics, fake], dim=1), torch.cat([semantics, real], dim=1)], dim=0)
    n = fake.shape[0]
    out = disc(x)
    return [[t[:n] for t in scale] for scale in out], [[t[n:] for t in scale] for scale in out]


def _check(mode: str) -> None:
    if mode not in GAUGAN_GAN_MODES:
        raise NasPruneError(f"GAN loss {mode!r} is not one of {', '.join(GAUGAN_GAN_MODES)}")


def gan_g_loss(fake: Preds, mode: str = "hinge") -> torch.Tensor:
    """Generator's adversarial loss, averaged over scales (each scale's last output = logits)."""
    _check(mode)
    total = 0.0
    for scale in fake:
        logits = scale[-1].float()
        if mode == "hinge":
            total = total - logits.mean()
        elif mode == "lsgan":
            total = total + F.mse_loss(logits, torch.ones_like(logits))
        else:
            total = total + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    return total / len(fake)


def gan_d_loss(fake: Preds, real: Preds, mode: str = "hinge") -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss on fakes, loss on reals)``, each averaged over scales; the discriminator minimises their sum."""
    _check(mode)
    lf, lr = 0.0, 0.0
    for f_scale, r_scale in zip(fake, real):
        f, r = f_scale[-1].float(), r_scale[-1].float()
        if mode == "hinge":
            lf = lf + F.relu(1.0 + f).mean()
            lr = lr + F.relu(1.0 - r).mean()
        elif mode == "lsgan":
            lf = lf + F.mse_loss(f, torch.zeros_like(f))
            lr = lr + F.mse_loss(r, torch.ones_like(r))
        else:
            lf = lf + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
            lr = lr + F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
    return lf / len(fake), lr / len(real)


def feature_matching_loss(fake: Preds, real: Preds) -> torch.Tensor:
    """``sum_k sum_j L1(fake_kj, real_kj.detach()) / K`` over every layer but the logits."""
    total = 0.0
    for f_scale, r_scale in zip(fake, real):
        for f, r in zip(f_scale[:-1], r_scale[:-1]):
            total = total + F.l1_loss(f.float(), r.detach().float())
    return total / len(fake)
