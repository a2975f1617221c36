"""Shared fixtures: tiny random architectures of the space."""

from __future__ import annotations

import random

import pytest
import torch

from nas_prune.arch import Arch, Block


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The whole suite runs torch on one thread: tiny models gain nothing from more, and a busy
    2-core machine makes several threads per process many times slower. ``OMP_NUM_THREADS=1``
    makes the ``auto`` thread rule of commands and recipes (nas_prune.threads) pick one thread
    too. Restored at the end."""
    import os

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


def random_arch(
    rng: random.Random,
    *,
    norm: str | None = None,
    affine: bool | None = None,
    max_width: int = 12,
    max_blocks: int = 4,
) -> Arch:
    """A random small architecture: zero-width branches and identity blocks included."""
    res_ks = tuple(sorted(rng.sample([1, 3, 5], rng.randint(0, 3))))
    dw_ks = tuple(sorted(rng.sample([1, 3, 5], rng.randint(0 if res_ks else 1, 3))))
    blocks = []
    for _ in range(rng.randint(0, max_blocks)):
        if rng.random() < 0.2:
            blocks.append(Block(res=(0,) * len(res_ks), dw=(0,) * len(dw_ks)))
        else:
            blocks.append(Block(
                res=tuple(rng.choice([0, rng.randint(1, max_width)]) for _ in res_ks),
                dw=tuple(rng.choice([0, rng.randint(1, max_width)]) for _ in dw_ks),
            ))
    return Arch(
        input_nc=rng.choice([1, 3]),
        output_nc=rng.choice([1, 3]),
        stem=tuple(rng.randint(1, max_width) for _ in range(3)),
        blocks=tuple(blocks),
        head=tuple(rng.randint(1, max_width) for _ in range(2)),
        res_kernel_sizes=res_ks,
        dw_kernel_sizes=dw_ks,
        norm=norm or rng.choice(["instance", "batch"]),
        affine=rng.choice([True, False]) if affine is None else affine,
        padding=rng.choice(["reflect", "replicate", "zero"]),
    )


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and running statistic non-trivial random values (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model


@pytest.fixture
def tiny_arch() -> Arch:
    """A CAT-like tiny teacher: stem 8/12/16, 3 blocks, res and dw kernels 1/3/5."""
    block = Block(res=(4, 4, 4), dw=(4, 4, 4))
    return Arch(input_nc=3, output_nc=3, stem=(8, 12, 16), blocks=(block,) * 3, head=(12, 8))


@pytest.fixture
def arch() -> Arch:
    """A 2-block teacher with only the k=3 res and dw branches (width 4): stem 8/16/16, head 16/8."""
    return Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(0, 4, 0), dw=(0, 4, 0)),) * 2, head=(16, 8))


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """``(path, state)``: a random state dict in the layout of pt_inception-2015-12-05, saved with
    the fc head the real file carries. He-scaled convs keep features input-dependent through 94 layers."""
    from nas_prune.inception import WEIGHTS_FILE, InceptionFeatures

    torch.manual_seed(0)
    net = InceptionFeatures()
    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("conv.weight"):
            state[k] = torch.randn(v.shape) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = torch.rand(v.shape) * 0.2 + 0.9
        else:
            state[k] = torch.randn(v.shape) * 0.05
    state["fc.weight"] = torch.randn(1008, 2048)
    state["fc.bias"] = torch.randn(1008)
    path = tmp_path_factory.mktemp("inc") / WEIGHTS_FILE
    torch.save(state, path)
    return path, state
