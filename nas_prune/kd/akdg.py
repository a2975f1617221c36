"""AKDG: adversarial knowledge distillation for generators (Tsunashima et al.,
"Adversarial Knowledge Distillation for a Compact Generator", ICPR 2020,
doi:10.1109/ICPR48806.2021.9413150; project page maguro27.github.io/AKDG).

Besides the task's own GAN discriminator (real images vs generated ones), AKDG
trains a *distillation discriminator* ``D_kd`` whose job is to tell the
**teacher's outputs (real)** from the **student's outputs (fake)**; the student
gets an adversarial term for fooling it. Where pixel losses pull the student to
the teacher's output point by point, ``D_kd`` compares distributions of local
patches, so it passes on what the teacher's images look like (texture,
sharpness) rather than their exact values.

With the GAN objectives of :class:`nas_prune.gan.GANLoss` (``mode``, LSGAN by
default):

    D_kd minimises    d_loss(D_kd(c(T(x))), D_kd(c(S(x)).detach()))
    student minimises g_loss(D_kd(c(S(x))))            (this term's forward)

where ``c`` is the identity (``conditional=False``) or concatenates the input image
``x`` to the output (``conditional=True``). The two ask different questions:

- **unconditional** (the paper's setting): ``D_kd`` sees output images only and
  matches the *distribution* of the student's outputs to the teacher's, as the
  paper does for unconditional generation, where teacher and student map
  independent latents and no input is shared;
- **conditional**: ``D_kd`` judges "is this the teacher's translation of *this*
  input?", as a pix2pix discriminator does: a per-input judge, which the paper
  does not have (its generators take no input image).

Default: ``conditional=True``, chosen by the ablation in ``results/ablation/``
(colorize demo task, one pruned student, 400 steps, weight 1, 3 seeds, paired by
seed): the conditional ``D_kd`` gave a higher PSNR and SSIM than the unconditional
one on every seed (+0.10 +- 0.05 dB, +0.011 +- 0.004 SSIM); the unconditional one
ended below fine-tuning without distillation on every seed (-0.11 dB, -0.013 SSIM),
the conditional one within the seed noise of it. Set it in a recipe's distill stage
as ``distill_options: {akdg: {conditional: false}}`` or on the CLI as
``--distill-option akdg.conditional=false``.

With LSGAN the student's term is ``mean((D_kd(S(x)) - 1)^2) >= 0``.

``D_kd`` is :class:`nas_prune.gan.PatchDiscriminator` (70x70 PatchGAN at
``n_layers=3``), instance norm by default so it behaves the same for any batch
size; it is the term's :meth:`discriminator_parameters`, stepped by the training
loop's separate Adam optimiser on :meth:`discriminator_loss`. In the student's
forward the discriminator's weights enter as constants, so the generator step
never leaves gradients on ``D_kd``.

Where this departs from the paper, and why:

- **Image-to-image translation**: the paper distils unconditional GANs (CIFAR-10,
  LSUN bedroom); here teacher and student translate the same input image, which
  makes the conditional variant possible (above).
- **Conditional by default**: the paper's ``D_kd`` sees only images (it has no
  input to condition on); here it also sees the input by default, because with a
  shared input the per-input judge did better in the ablation (above).
  ``conditional=False`` is the paper's form.
- **Discriminator**: the paper's ``D_kd`` has the architecture of its GAN's own
  discriminator; here it is a PatchGAN, the discriminator of pix2pix / CycleGAN
  students, whose outputs are local patches of high-resolution images.
- **GAN objective**: the loop's (LSGAN by default, as CAT and GAN Compression train
  their students) rather than the paper's.
- **Weight**: the paper's project page describes the student's objective as its own
  adversarial loss plus the distillation adversarial loss, with no weight given (the
  paper's text could not be checked here); the default weight 1 (``--lambda-akdg``)
  adds them as such.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.func import functional_call

from nas_prune.arch import Arch
from nas_prune.errors import NasPruneError
from nas_prune.gan import D_NORMS, GAN_MODES, GANLoss, PatchDiscriminator
from nas_prune.kd.base import DistillTerm, KDBatch, register_term

__all__ = ["AKDG"]


@register_term("akdg")
class AKDG(DistillTerm):
    """Adversarial distillation against a teacher-vs-student PatchGAN ``D_kd``.

    Args:
        teacher_arch / student_arch: see :class:`DistillTerm`.
        taps: ignored; AKDG reads only the input and the outputs.
        mode: GAN objective, ``"lsgan"`` (default), ``"vanilla"`` or ``"hinge"``.
        conditional: ``D_kd`` sees ``cat(input, output)`` (True, the default: a per-input
            judge) or the output only (False, the paper's unconditional form: a
            distribution match); see the module docstring for the ablation behind the default.
        ndf: width of ``D_kd``'s first conv (64).
        n_layers: stride-2 convs of ``D_kd`` (3: 70x70 patches; needs images >= 32 px).
        norm: ``D_kd``'s norm, ``"instance"`` (default), ``"batch"`` or ``"none"``.

    Attributes:
        discriminator: ``D_kd``.
    """

    def __init__(
        self,
        *,
        teacher_arch: Arch,
        student_arch: Arch,
        taps: Sequence[str] = (),
        mode: str = "lsgan",
        conditional: bool = True,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
    ):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=())
        if mode not in GAN_MODES:
            raise NasPruneError(f"distillation option akdg.mode: {mode!r} is not one of {', '.join(GAN_MODES)}")
        if norm not in D_NORMS:
            raise NasPruneError(f"distillation option akdg.norm: {norm!r} is not one of {', '.join(D_NORMS)}")
        if not isinstance(conditional, bool):
            raise NasPruneError(f"distillation option akdg.conditional: expected true or false, got {conditional!r}")
        for name, value in (("ndf", ndf), ("n_layers", n_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NasPruneError(f"distillation option akdg.{name}: expected an integer >= 1, got {value!r}")
        self.mode = mode
        self.conditional = conditional
        in_channels = teacher_arch.output_nc + (teacher_arch.input_nc if conditional else 0)
        self.discriminator = PatchDiscriminator(in_channels, ndf=ndf, n_layers=n_layers, norm=norm)
        self.gan_loss = GANLoss(mode)

    def _d_input(self, batch: KDBatch, out: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch.real_a, out], dim=1) if self.conditional else out

    def forward(self, batch: KDBatch) -> torch.Tensor:
        """``g_loss(D_kd(student))``: positive while ``D_kd`` tells the student from the teacher."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (self._d_input(batch, batch.s_out),), strict=False)
        return self.gan_loss.g_loss(logits)

    def discriminator_loss(self, batch: KDBatch) -> torch.Tensor:
        """``d_loss``: teacher outputs are real, student outputs (detached) are fake."""
        batch = batch.detached()
        real = self.discriminator(self._d_input(batch, batch.t_out.detach()))
        fake = self.discriminator(self._d_input(batch, batch.s_out))
        return self.gan_loss.d_loss(real, fake)

    def discriminator_parameters(self):
        return iter(self.discriminator.parameters())

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, conditional={self.conditional}"
