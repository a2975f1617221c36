"""GCKA (CAT's global kernel alignment): the invariances the method relies on, and the term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.kd import KDBatch, build_terms
from nas_prune.kd.gcka import GCKA, default_gcka_taps, kernel_alignment
from nas_prune.model import build_generator


def reference_ka(x: np.ndarray, y: np.ndarray, centered: bool) -> float:
    """Textbook formula with an explicit centring matrix H, in float64."""
    n = x.shape[0]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    kx, ky = x @ x.T, y @ y.T
    if centered:
        h = np.eye(n) - np.ones((n, n)) / n
        kx, ky = h @ kx @ h, h @ ky @ h
    return float((kx * ky).sum() / (np.linalg.norm(kx) * np.linalg.norm(ky)))


def arch(stem=(8, 16, 16), m=4, n_blocks=3, head=(16, 8)) -> Arch:
    return Arch(input_nc=3, output_nc=3, stem=stem, blocks=tuple(Block(res=(m, m, m), dw=(m, m, m)) for _ in range(n_blocks)), head=head)


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    # few features per sample, so that unrelated random features are clearly unaligned
    return torch.randn(8, 2, 2, 2, generator=g), torch.randn(8, 3, 2, 2, generator=g)


@pytest.mark.parametrize("centered", [False, True])
def test_identical_inputs_give_one(feats, centered):
    x, _ = feats
    assert kernel_alignment(x, x, centered=centered).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("centered", [False, True])
def test_matches_reference_formula_across_channel_counts(feats, centered):
    x, y = feats
    got = kernel_alignment(x, y, centered=centered).item()
    assert got == pytest.approx(reference_ka(x.double().numpy(), y.double().numpy(), centered), abs=1e-6)
    assert 0.2 < got < 0.7  # unrelated random features are far from aligned


@pytest.mark.parametrize("centered", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scale(feats, centered):
    x, y = feats
    base = kernel_alignment(x, y, centered=centered).item()
    d = y[0].numel()
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    y_rot = (y.reshape(8, -1).double() @ q).reshape(y.shape)
    x_scaled = 7.5 * x
    assert kernel_alignment(x, y_rot, centered=centered).item() == pytest.approx(base, abs=1e-6)
    assert kernel_alignment(x_scaled, y, centered=centered).item() == pytest.approx(base, abs=1e-6)
    assert kernel_alignment(x, 0.01 * y, centered=centered).item() == pytest.approx(base, abs=1e-6)
    # a rotation of the teacher side is also invisible, and a rotated copy is perfectly aligned
    assert kernel_alignment(y_rot, y, centered=centered).item() == pytest.approx(1.0, abs=1e-6)


def test_different_channel_counts_can_align_perfectly(feats):
    x, _ = feats
    wider = torch.cat([x, x], dim=1) / 2**0.5  # 16 channels, same Gram matrix as x
    assert kernel_alignment(x, wider).item() == pytest.approx(1.0, abs=1e-6)


def test_only_the_centred_form_ignores_a_common_offset(feats):
    x, y = feats
    shifted = y + 3.0
    assert kernel_alignment(x, shifted, centered=True).item() == pytest.approx(
        kernel_alignment(x, y, centered=True).item(), abs=1e-6
    )
    assert abs(kernel_alignment(x, shifted).item() - kernel_alignment(x, y).item()) > 1e-3


def test_gradient_flows_and_descent_raises_alignment(feats):
    x, y = feats
    y = y.clone().requires_grad_(True)
    opt = torch.optim.SGD([y], lr=2.0)
    first = None
    for _ in range(20):
        loss = -kernel_alignment(x, y, centered=True)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
        opt.step()
    assert -loss.item() > -first + 0.2


def test_batch_of_one_is_an_error(feats):
    x, y = feats
    with pytest.raises(NasPruneError, match="at least 2 samples"):
        kernel_alignment(x[:1], y[:1])
    with pytest.raises(NasPruneError, match="batch sizes differ"):
        kernel_alignment(x[:3], y[:4])


def test_float32_under_bf16_autocast(feats):
    x, y = feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ka = kernel_alignment(x.bfloat16(), y.bfloat16())
    assert ka.dtype == torch.float32
    assert ka.item() == pytest.approx(kernel_alignment(x, y).item(), abs=2e-2)


def test_default_taps_follow_cat():
    assert default_gcka_taps(arch(n_blocks=9)) == ("stem", "block3", "block6", "block9")
    assert default_gcka_taps(arch(n_blocks=6)) == ("stem", "block2", "block4", "block6")
    assert default_gcka_taps(arch(n_blocks=2)) == ("stem", "block1", "block2")
    assert default_gcka_taps(arch(n_blocks=0)) == ("stem",)


def test_term_on_generator_features():
    t_arch = arch()
    s_arch = t_arch.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2, 0, 2), dw=(0, 1, 2))] * 3, head=(8, 4))
    [(w, term)] = build_terms({"gcka": 1.5}, teacher_arch=t_arch, student_arch=s_arch)
    assert w == 1.5 and isinstance(term, GCKA) and term.taps == ("stem", "block1", "block2", "block3")
    torch.manual_seed(0)
    teacher, student = build_generator(t_arch).eval(), build_generator(s_arch)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        t_out, t_feats = teacher.forward_with_features(x, term.taps)
    s_out, s_feats = student.forward_with_features(x, term.taps)
    batch = KDBatch(real_a=x, real_b=None, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)
    loss = term(batch)
    per_tap = term.alignments(batch)
    assert loss.item() == pytest.approx(-sum(per_tap.values()), abs=1e-5)
    assert -4.0 <= loss.item() < 0.0
    loss.backward()
    assert student.down_sampling[1].weight.grad.abs().sum() > 0
    assert list(term.generator_parameters()) == [] and not term.has_discriminator()


def test_term_options_are_checked():
    a = arch()
    with pytest.raises(NasPruneError, match="gcka.bogus: unknown option"):
        build_terms({"gcka": 1.0}, teacher_arch=a, student_arch=a, options={"gcka": {"bogus": 1}})
    with pytest.raises(NasPruneError, match="gcka.centered"):
        build_terms({"gcka": 1.0}, teacher_arch=a, student_arch=a, options={"gcka": {"centered": "yes"}})
    with pytest.raises(NasPruneError, match="unknown distillation method 'nope'"):
        build_terms({"nope": 1.0}, teacher_arch=a, student_arch=a)
    with pytest.raises(NasPruneError, match="unknown feature layer 'block7'"):
        build_terms({"gcka": 1.0}, teacher_arch=a, student_arch=a, taps=("stem", "block7"))
    [(_, term)] = build_terms({"gcka": 1.0}, teacher_arch=a, student_arch=a, taps=("block1",), options={"gcka": {"centered": True}})
    assert term.centered and term.taps == ("block1",)
    assert build_terms({"gcka": 0.0}, teacher_arch=a, student_arch=a) == []
