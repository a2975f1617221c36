"""GauGAN's objective for SPADE generators (Park et al., CVPR 2019), as CAT distils them.

- :mod:`~nas_prune.gaugan.discriminator`: the multi-scale PatchGAN discriminator (spectral norm,
  instance norm, conditioned on the semantic map).
- :mod:`~nas_prune.gaugan.losses`: hinge loss, feature matching.
- :mod:`~nas_prune.gaugan.vgg`: VGG19 perceptual loss (weights from a local file).
"""

from nas_prune.gaugan.discriminator import MultiscaleDiscriminator, NLayerDiscriminator, load_multiscale_discriminator
from nas_prune.gaugan.losses import discriminate, feature_matching_loss, gan_d_loss, gan_g_loss
from nas_prune.gaugan.vgg import VGG19Features, VGGLoss, load_vgg19

__all__ = [
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "VGG19Features",
    "VGGLoss",
    "discriminate",
    "feature_matching_loss",
    "gan_d_loss",
    "gan_g_loss",
    "load_multiscale_discriminator",
    "load_vgg19",
]
