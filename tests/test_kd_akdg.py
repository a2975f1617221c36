"""AKDG: a distillation discriminator telling teacher outputs (real) from student outputs (fake)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_prune.arch import Block
from nas_prune.errors import NasPruneError
from nas_prune.kd import KDBatch, build_terms
from nas_prune.kd.akdg import AKDG
from nas_prune.model import build_generator


def _images(n=2, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


class PrefersTeacher(nn.Module):
    """Fixed D: logit 1 - squared distance to the teacher image (1 on the teacher, lower elsewhere)."""

    def __init__(self, teacher_out: torch.Tensor, *, sign: float = 1.0):
        super().__init__()
        self.register_buffer("t", teacher_out.clone())
        self.bias = nn.Parameter(torch.zeros(()))  # one parameter, so the term has something to train
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, -3:]  # the output channels (the input comes first when conditional)
        return self.sign * (1.0 - (out - self.t).pow(2).mean(dim=1, keepdim=True)) + self.bias


def _term(arch, **opts) -> AKDG:
    return AKDG(teacher_arch=arch, student_arch=arch, ndf=8, **opts)


def test_discriminator_sees_input_and_output_when_conditional(arch):
    assert _term(arch).discriminator.in_channels == 6
    assert _term(arch, conditional=False).discriminator.in_channels == 3
    term = _term(arch)
    assert term.has_discriminator() and list(term.generator_parameters()) == []
    assert term.taps == ()


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_fixed_discriminator_preferring_teacher_gives_positive_decreasing_loss(arch, mode):
    t_out = _images(seed=1).tanh()
    away = _images(seed=2).tanh() - t_out
    term = _term(arch, mode=mode)
    term.discriminator = PrefersTeacher(t_out)
    losses = []
    for eps in (1.0, 0.5, 0.25, 0.0):
        s_out = t_out + eps * away
        losses.append(term(KDBatch(real_a=_images(seed=3), real_b=None, t_out=t_out, s_out=s_out)).item())
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[0] > 0
    if mode == "lsgan":  # D scores the teacher exactly 1: the student's term is (D - 1)^2 = 0 there
        assert losses[-1] == pytest.approx(0.0, abs=1e-12)
        expected = (away.pow(2).mean(dim=1)).pow(2).mean().item()
        assert losses[0] == pytest.approx(expected, rel=1e-5)


def test_discriminator_loss_rewards_preferring_the_teacher(arch):
    t_out, s_out = _images(seed=4).tanh(), _images(seed=5).tanh()
    batch = KDBatch(real_a=_images(seed=6), real_b=None, t_out=t_out, s_out=s_out)
    term = _term(arch)
    term.discriminator = PrefersTeacher(t_out)
    right = term.discriminator_loss(batch).item()
    term.discriminator = PrefersTeacher(s_out)  # a D that takes the student for the teacher
    wrong = term.discriminator_loss(batch).item()
    assert right < wrong
    # lsgan: ((D(t) - 1)^2 + D(s)^2) / 2 with D(t) = 1
    term.discriminator = PrefersTeacher(t_out)
    expected = 0.5 * (1.0 - (s_out - t_out).pow(2).mean(dim=1)).pow(2).mean().item()
    assert right == pytest.approx(expected, rel=1e-5)


def test_hinge_mode_signs(arch):
    t_out, s_out = _images(seed=7).tanh(), _images(seed=8).tanh()
    term = _term(arch, mode="hinge")
    term.discriminator = PrefersTeacher(t_out)
    g_far = term(KDBatch(real_a=t_out, real_b=None, t_out=t_out, s_out=s_out)).item()
    g_near = term(KDBatch(real_a=t_out, real_b=None, t_out=t_out, s_out=t_out)).item()
    assert g_near == pytest.approx(-1.0) and g_far > g_near


def test_gradients_student_step_and_discriminator_step_are_separate(arch):
    student = arch.with_widths(stem=(8, 8, 8), blocks=(Block(res=(0, 2, 0), dw=(0, 0, 0)),) * 2, head=(8, 8))
    t_gen, s_gen = build_generator(arch), build_generator(student)
    x = _images(seed=9)
    batch = KDBatch(real_a=x, real_b=None, t_out=t_gen(x), s_out=s_gen(x))  # teacher run with grad on purpose
    (_, term), = build_terms({"akdg": 0.5}, teacher_arch=arch, student_arch=student, options={"akdg": {"ndf": 8}})
    term(batch).backward()
    assert all(p.grad is None for p in t_gen.parameters())
    assert all(p.grad is None for p in term.discriminator_parameters())  # D is constant in the student's term
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s_gen.parameters())
    s_gen.zero_grad(set_to_none=True)
    term.discriminator_loss(batch).backward()
    assert all(p.grad is None for p in s_gen.parameters()) and all(p.grad is None for p in t_gen.parameters())
    assert all(p.grad is not None for p in term.discriminator_parameters())


def test_trained_discriminator_separates_teacher_from_student(arch):
    torch.manual_seed(0)
    t_out = _images(n=4, seed=10).tanh()
    s_out = (0.6 * t_out).detach()  # a washed-out student
    batch = KDBatch(real_a=_images(n=4, seed=11), real_b=None, t_out=t_out, s_out=s_out)
    term = _term(arch)
    opt = torch.optim.Adam(term.discriminator_parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_first = term.discriminator_loss(batch).item()
    for _ in range(40):
        opt.zero_grad()
        d_loss = term.discriminator_loss(batch)
        d_loss.backward()
        opt.step()
    assert d_loss.item() < 0.5 * d_first
    with torch.no_grad():
        d_t = term.discriminator(torch.cat([batch.real_a, t_out], 1)).mean().item()
        d_s = term.discriminator(torch.cat([batch.real_a, s_out], 1)).mean().item()
    assert d_t > d_s + 0.5  # teacher scored real (near 1), student fake (near 0)
    assert term(batch).item() == pytest.approx((d_s - 1.0) ** 2, rel=0.2)  # student pays for being told apart


def test_bad_options(arch):
    with pytest.raises(NasPruneError, match="akdg.mode"):
        _term(arch, mode="wgan")
    with pytest.raises(NasPruneError, match="akdg.norm"):
        _term(arch, norm="group")
    with pytest.raises(NasPruneError, match="akdg.ndf"):
        AKDG(teacher_arch=arch, student_arch=arch, ndf=0)
    with pytest.raises(NasPruneError, match="akdg.conditional"):
        _term(arch, conditional="yes")


@pytest.mark.parametrize("value, channels", [("false", 3), ("true", 6)])
def test_conditional_from_a_recipe_key_and_from_the_cli(tmp_path, arch, value, channels):
    from nas_prune.cli.distill import parse_options
    from nas_prune.distill import DistillConfig
    from nas_prune.recipe import load_recipe

    path = tmp_path / "kd.yaml"
    path.write_text(
        "# Run: nas-prune run kd.yaml\n"
        "name: kd\nrun_dir: runs/kd\ndata: data\nteacher: teacher.safetensors\nstudent: student\n"
        "stages:\n  distill:\n    mode: aligned\n    distill: {akdg: 1.0}\n"
        f"    distill_options: {{akdg: {{conditional: {value}, ndf: 8}}}}\n",
        encoding="utf-8",
    )
    from_recipe = DistillConfig.from_dict(load_recipe(path).stages["distill"]).distill_options
    from_cli = parse_options([f"akdg.conditional={value}", "akdg.ndf=8"])
    assert from_recipe == from_cli == {"akdg": {"conditional": value == "true", "ndf": 8}}
    (_, term), = build_terms({"akdg": 1.0}, teacher_arch=arch, student_arch=arch, options=from_cli)
    assert term.conditional is (value == "true") and term.discriminator.in_channels == channels
