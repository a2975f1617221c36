"""MSE feature distillation with 1x1 adapters (GAN Compression's baseline)."""

from __future__ import annotations

import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.kd import KDBatch, build_terms
from nas_prune.kd.mse import MSE, tap_channels
from nas_prune.model import build_generator


@pytest.fixture
def archs() -> tuple[Arch, Arch]:
    teacher = Arch(
        input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(0, 4, 0), dw=(0, 4, 0)),) * 3, head=(16, 8)
    )
    student = teacher.with_widths(stem=(8, 8, 8), blocks=(Block(res=(0, 2, 0), dw=(0, 0, 0)),) * 3, head=(8, 8))
    return teacher, student


def _batch(teacher_gen, student_gen, taps, *, teacher_grad=False, seed=0) -> KDBatch:
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.set_grad_enabled(teacher_grad):
        t_out, t_feats = teacher_gen.forward_with_features(x, taps)
    s_out, s_feats = student_gen.forward_with_features(x, taps)
    return KDBatch(real_a=x, real_b=None, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)


def _identity_adapters(term: MSE) -> None:
    with torch.no_grad():
        for conv in term.adapters.values():
            c_out, c_in = conv.weight.shape[:2]
            conv.weight.copy_(torch.eye(c_out, c_in)[:, :, None, None])
            conv.bias.zero_()


def test_default_taps_and_adapter_shapes(archs):
    teacher, student = archs
    term = MSE(teacher_arch=teacher, student_arch=student)
    assert term.taps == ("stem", "block1", "block2", "block3")
    assert {t: tuple(c.weight.shape) for t, c in term.adapters.items()} == {t: (16, 8, 1, 1) for t in term.taps}
    assert tap_channels(teacher, "up1") == 16 and tap_channels(student, "stem") == 8
    assert len(list(term.generator_parameters())) == 2 * len(term.taps)
    assert not term.has_discriminator()


def test_identical_teacher_and_student_give_zero(archs):
    teacher, _ = archs
    gen = build_generator(teacher)
    term = MSE(teacher_arch=teacher, student_arch=teacher, taps=("stem", "block2"))
    _identity_adapters(term)
    batch = _batch(gen, gen, term.taps)
    assert term(batch).item() == pytest.approx(0.0, abs=1e-12)


def test_value_is_sum_over_taps_of_mean_squared_error(archs):
    teacher, student = archs
    term = MSE(teacher_arch=teacher, student_arch=student, taps=("stem", "up1"))
    with torch.no_grad():
        for conv in term.adapters.values():
            conv.weight.fill_(0.5)  # every output channel = 0.5 * sum of the 8 input channels
            conv.bias.fill_(1.0)
    s_feats = {"stem": torch.ones(2, 8, 8, 8), "up1": torch.zeros(2, 8, 16, 16)}
    t_feats = {"stem": torch.full((2, 16, 8, 8), 3.0), "up1": torch.full((2, 16, 16, 16), -1.0)}
    out = torch.zeros(2, 3, 32, 32)
    batch = KDBatch(real_a=out, real_b=None, t_out=out, s_out=out, t_feats=t_feats, s_feats=s_feats)
    # stem: 0.5*8 + 1 = 5 vs 3 -> 4 ; up1: 1 vs -1 -> 4
    assert term(batch).item() == pytest.approx(8.0)
    term.loss = "l1"
    assert term(batch).item() == pytest.approx(4.0)


def test_gradients_reach_student_and_adapters_not_teacher(archs):
    teacher, student = archs
    t_gen, s_gen = build_generator(teacher), build_generator(student)
    (_, term), = build_terms({"mse": 1.0}, teacher_arch=teacher, student_arch=student, taps=("block1", "block3"))
    batch = _batch(t_gen, s_gen, term.taps, teacher_grad=True)
    term(batch).backward()
    assert all(p.grad is None for p in t_gen.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s_gen.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.generator_parameters())


def test_adapters_learn_a_linear_map():
    # teacher feature = fixed linear map of the student feature: the adapter can reach ~0 loss
    teacher = Arch(input_nc=3, output_nc=3, stem=(4, 8, 8), blocks=(), head=(8, 4))
    student = teacher.with_widths(stem=(4, 4, 4))
    term = MSE(teacher_arch=teacher, student_arch=student, taps=("stem",))
    torch.manual_seed(0)
    mix = torch.randn(8, 4)
    s = torch.randn(4, 4, 6, 6)
    t = torch.einsum("oc,nchw->nohw", mix, s)
    out = torch.zeros(4, 3, 24, 24)
    batch = KDBatch(real_a=out, real_b=None, t_out=out, s_out=out, t_feats={"stem": t}, s_feats={"stem": s})
    opt = torch.optim.Adam(term.generator_parameters(), lr=0.05)
    first = term(batch).item()
    for _ in range(300):
        opt.zero_grad()
        loss = term(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * first


def test_bad_options_are_one_line_errors(archs):
    teacher, student = archs
    with pytest.raises(NasPruneError, match="mse.loss"):
        build_terms({"mse": 1.0}, teacher_arch=teacher, student_arch=student, options={"mse": {"loss": "huber"}})
    with pytest.raises(NasPruneError, match="mse.scale: unknown option"):
        build_terms({"mse": 1.0}, teacher_arch=teacher, student_arch=student, options={"mse": {"scale": 2}})
    with pytest.raises(NasPruneError, match="block7"):
        MSE(teacher_arch=teacher, student_arch=student, taps=("block7",))
