"""The shipped families' teachers written as a user's generator code (for ``crosscheck.py``).

``--model results/any_generator/shipped_nets.py:resnet_9blocks`` builds the classic 9-block
ResNet generator and ``...:unet_256`` pix2pix's U-Net, with nas-prune's own modules (the
same state-dict keys as the shipped families), so the ``module`` family can be checked against
the ``inception`` and ``unet`` families on the very same network.
"""


def _build(space: str, ngf: int | None):
    from nas_prune.model import build_generator
    from nas_prune.profile import resolve_arch

    arch = resolve_arch(space)[0]
    if ngf is not None:
        raise ValueError("only the shipped widths are built here")
    return build_generator(arch)


def resnet_9blocks(ngf: int | None = None):
    """The ``resnet_9blocks`` space's teacher (ngf 64, affine-free instance norm)."""
    return _build("resnet_9blocks", ngf)


def unet_256(ngf: int | None = None):
    """The ``unet_256`` space's teacher (ngf 64, batch norm, 8 levels)."""
    return _build("unet_256", ngf)
