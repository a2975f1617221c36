"""ACKD: accumulated shallow teacher knowledge as the target of the student's deep stage."""

from __future__ import annotations

import math

import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.kd import KDBatch, build_terms
from nas_prune.kd.ackd import ACKD, CrossAttention, resize_to
from nas_prune.model import build_generator


@pytest.fixture
def archs() -> tuple[Arch, Arch]:
    teacher = Arch(
        input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(0, 4, 0), dw=(0, 4, 0)),) * 3, head=(12, 8)
    )
    student = teacher.with_widths(stem=(8, 8, 8), blocks=(Block(res=(0, 2, 0), dw=(0, 0, 0)),) * 3, head=(6, 8))
    return teacher, student


def _batch(t_gen, s_gen, taps, *, teacher_grad=False, seed=0) -> KDBatch:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.set_grad_enabled(teacher_grad):
        t_out, t_feats = t_gen.forward_with_features(x, taps)
    s_out, s_feats = s_gen.forward_with_features(x, taps)
    return KDBatch(real_a=x, real_b=None, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)


def test_stages_and_shapes_for_different_widths(archs):
    teacher, student = archs
    term = ACKD(teacher_arch=teacher, student_arch=student)
    assert term.shallow == ("stem", "block1", "block2") and term.deep == "block3"
    # deep stage at up1: 12 teacher channels at 1/2 resolution, 6 in the student; shallow taps are upsampled
    term = ACKD(teacher_arch=teacher, student_arch=student, taps=("up1", "block2", "stem"), width=5)
    assert term.shallow == ("stem", "block2") and term.deep == "up1"
    assert {t: tuple(c.weight.shape) for t, c in term.align.items()} == {"stem": (12, 16, 1, 1), "block2": (12, 16, 1, 1)}
    assert tuple(term.adapter.weight.shape) == (12, 6, 1, 1)
    assert tuple(term.attention.q.weight.shape) == (5, 12, 1, 1)
    batch = _batch(build_generator(teacher), build_generator(student), term.taps)
    assert batch.t_feats["up1"].shape == (2, 12, 16, 16) and batch.t_feats["stem"].shape == (2, 16, 8, 8)
    assert term.accumulate(batch.t_feats).shape == (2, 12, 16, 16)
    assert term.target(batch.t_feats).shape == (2, 12, 16, 16)
    assert term(batch).dim() == 0


def test_target_starts_as_the_deep_teacher_feature(archs):
    teacher, student = archs
    term = ACKD(teacher_arch=teacher, student_arch=student)
    batch = _batch(build_generator(teacher), build_generator(student), term.taps)
    assert torch.equal(term.target(batch.t_feats), batch.t_feats["block3"])


def test_identical_teacher_and_student_give_zero(archs):
    teacher, _ = archs
    gen = build_generator(teacher)
    term = ACKD(teacher_arch=teacher, student_arch=teacher, mode="af")
    with torch.no_grad():
        term.adapter.weight.copy_(torch.eye(16)[:, :, None, None])
        term.adapter.bias.zero_()
    batch = _batch(gen, gen, term.taps)
    assert term(batch).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mode", ["a", "f", "af"])
def test_target_is_residual_plus_chosen_parts(archs, mode):
    teacher, student = archs
    torch.manual_seed(0)
    term = ACKD(teacher_arch=teacher, student_arch=student, mode=mode, residual=False)  # random (non-zero) init
    batch = _batch(build_generator(teacher), build_generator(student), term.taps)
    deep, acc = batch.t_feats["block3"], term.accumulate(batch.t_feats)
    expected = torch.zeros_like(deep)
    if "a" in mode:
        expected = expected + term.attention(deep, acc)
    if "f" in mode:
        expected = expected + term.fusion(acc)
    assert torch.allclose(term.target(batch.t_feats), expected)
    assert torch.allclose(term.knowledge(batch.t_feats), expected)
    term.residual = True
    assert torch.allclose(term.target(batch.t_feats), deep + expected)
    assert (term.attention is None) == ("a" not in mode) and (term.fusion is None) == ("f" not in mode)
    manual_acc = sum(term.align[t](batch.t_feats[t]) for t in term.shallow)  # same resolution: no resize
    assert torch.allclose(acc, manual_acc, atol=1e-6)


def test_cross_attention_queries_deep_and_reads_accumulation():
    torch.manual_seed(0)
    attn = CrossAttention(4, width=3, zero_init=False)
    query, kv = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)
    q = attn.q(query).flatten(2).transpose(1, 2)
    k = attn.k(kv).flatten(2).transpose(1, 2)
    v = attn.v(kv).flatten(2).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(3), dim=-1)  # (2, 15, 15), rows: query positions
    expected = attn.out((weights @ v).transpose(1, 2).reshape(2, 4, 3, 5))
    assert torch.allclose(attn(query, kv), expected, atol=1e-5)
    # values come from kv only: a constant kv gives a constant map whatever the query
    const = attn(torch.randn(2, 4, 3, 5), torch.ones(2, 4, 3, 5))
    assert torch.allclose(const, const[..., :1, :1].expand_as(const), atol=1e-5)
    pooled = CrossAttention(4, width=3, kv_pool=2, zero_init=False)
    assert pooled(query, kv).shape == query.shape


def test_resize_grows_bilinear_and_shrinks_by_area():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(resize_to(x, (4, 4)), x)
    assert torch.allclose(resize_to(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert resize_to(x, (8, 8)).shape == (1, 1, 8, 8)


def test_student_loss_trains_student_and_adapter_and_own_step_trains_the_modules(archs):
    teacher, student = archs
    t_gen, s_gen = build_generator(teacher), build_generator(student)
    (_, term), = build_terms({"ackd": 1.0}, teacher_arch=teacher, student_arch=student, options={"ackd": {"width": 8}})
    assert term.has_discriminator()
    own = dict(term.named_parameters())
    gen_names = {n for n, p in own.items() if any(p is q for q in term.generator_parameters())}
    mod_names = {n for n, p in own.items() if any(p is q for q in term.discriminator_parameters())}
    assert gen_names == {"adapter.weight", "adapter.bias"} and mod_names == set(own) - gen_names
    opt = torch.optim.Adam(term.discriminator_parameters(), lr=1e-2)
    for step in range(2):  # zero-initialised last layers: align/q/k/v get gradient from the 2nd step on
        batch = _batch(t_gen, s_gen, term.taps, teacher_grad=True, seed=step)
        opt.zero_grad()
        term.discriminator_loss(batch.detached()).backward()
        opt.step()
    # the modules' own loss reaches every module parameter, never the adapter, the student or the teacher
    assert all(own[n].grad is not None and own[n].grad.abs().sum() > 0 for n in mod_names)
    assert all(own[n].grad is None for n in gen_names)
    assert all(p.grad is None for p in [*s_gen.parameters(), *t_gen.parameters()])
    # the student's loss reaches the student and the adapter only: the target is a constant
    term.zero_grad(set_to_none=True)
    batch = _batch(t_gen, s_gen, term.taps, teacher_grad=True, seed=5)
    term(batch).backward()
    assert all(own[n].grad is not None and own[n].grad.abs().sum() > 0 for n in gen_names)
    assert all(own[n].grad is None for n in mod_names)
    assert all(p.grad is None for p in t_gen.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s_gen.parameters())


def test_own_parameters_cannot_lower_the_loss_without_the_student(archs):
    """Before the modules got their own objective, 300 steps of this took the loss from 9.7 to 1.3."""
    teacher, student = archs
    torch.manual_seed(0)
    (_, term), = build_terms({"ackd": 1.0}, teacher_arch=teacher, student_arch=student, options={"ackd": {"width": 8}})
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        t_out, t_feats = build_generator(teacher).forward_with_features(x, term.taps)
    # a random, fixed student feature: it carries no teacher information and never changes
    s_feats = {t: torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(2)) for t in term.taps}
    batch = KDBatch(real_a=x, real_b=None, t_out=t_out, s_out=t_out.clone(), t_feats=t_feats, s_feats=s_feats)
    opt_all = torch.optim.Adam(term.parameters(), lr=2e-3)  # every parameter of the term, on the student's loss
    opt_own = torch.optim.Adam(term.discriminator_parameters(), lr=2e-3)  # and the modules on their own loss
    start, own_start = term(batch).item(), term.discriminator_loss(batch).item()
    for _ in range(300):
        opt_all.zero_grad()
        term(batch).backward()
        opt_all.step()
        opt_own.zero_grad()
        term.discriminator_loss(batch.detached()).backward()
        opt_own.step()
    assert term(batch).item() > 0.7 * start
    assert term.discriminator_loss(batch).item() < 0.5 * own_start  # the modules did learn: K reconstructs T_deep


def test_teacher_features_from_inference_mode_train_the_modules(archs):
    teacher, student = archs
    term = ACKD(teacher_arch=teacher, student_arch=student, width=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        t_out, t_feats = build_generator(teacher).forward_with_features(x, term.taps)
    s_out, s_feats = build_generator(student).forward_with_features(x, term.taps)
    batch = KDBatch(real_a=x, real_b=None, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)
    term(batch).backward()
    term.discriminator_loss(batch.detached()).backward()
    assert term.fusion.body[2].weight.grad.abs().sum() > 0


def test_bad_options(archs):
    teacher, student = archs
    with pytest.raises(NasPruneError, match="at least two feature layers"):
        ACKD(teacher_arch=teacher, student_arch=student, taps=("block3",))
    with pytest.raises(NasPruneError, match="ackd.mode"):
        ACKD(teacher_arch=teacher, student_arch=student, mode="x")
    with pytest.raises(NasPruneError, match="ackd.width"):
        ACKD(teacher_arch=teacher, student_arch=student, width=0)
    with pytest.raises(NasPruneError, match="ackd.loss"):
        ACKD(teacher_arch=teacher, student_arch=student, loss="kl")
    with pytest.raises(NasPruneError, match="block9"):
        ACKD(teacher_arch=teacher, student_arch=student, taps=("stem", "block9"))


def test_recipe_selects_methods_weights_and_options(tmp_path, archs):
    from nas_prune.distill import DistillConfig
    from nas_prune.recipe import load_recipe

    path = tmp_path / "kd.yaml"
    path.write_text(
        "# Run: nas-prune run kd.yaml\n"
        "name: kd\nrun_dir: runs/kd\ndata: data\nteacher: teacher.safetensors\nstudent: student\n"
        "stages:\n"
        "  distill:\n"
        "    mode: aligned\n"
        "    distill: {ackd: 2.0, crd: 0.5, mse: 1.0}\n"
        "    distill_options: {ackd: {mode: a, width: 8, kv_pool: 2}, crd: {patch_size: 4}}\n",
        encoding="utf-8",
    )
    stage = load_recipe(path).stages["distill"]
    config = DistillConfig.from_dict(stage)
    teacher, student = archs
    terms = build_terms(config.distill, teacher_arch=teacher, student_arch=student, options=config.distill_options)
    assert [(w, t.name) for w, t in terms] == [(2.0, "ackd"), (0.5, "crd"), (1.0, "mse")]
    ackd, crd = terms[0][1], terms[1][1]
    assert ackd.mode == "a" and ackd.fusion is None and ackd.attention.width == 8 and ackd.attention.kv_pool == 2
    assert crd.sizes(32, 32)["patches"] == 4
