"""CRD: relations among row strips, column strips and patches of one image."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.kd import KDBatch, build_terms
from nas_prune.kd.crd import (
    CRD,
    angle_loss,
    angle_relation,
    default_patch_size,
    distance_loss,
    distance_relation,
    relation_loss,
    slice_image,
)
from nas_prune.model import build_generator


def _outputs_batch(t_out: torch.Tensor, s_out: torch.Tensor) -> KDBatch:
    return KDBatch(real_a=torch.zeros_like(t_out), real_b=None, t_out=t_out, s_out=s_out)


def _images(n=2, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_slices_follow_rows_columns_and_patches():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    rows, cols, patches = (slice_image(x, g, 2) for g in ("rows", "columns", "patches"))
    assert rows.shape == cols.shape == (2, 4, 48) and patches.shape == (2, 16, 12)
    assert torch.equal(rows[0, 1], x[0, :, 2:4, :].reshape(-1))
    assert torch.equal(cols[1, 3], x[1, :, :, 6:8].reshape(-1))
    assert torch.equal(patches[0, 5], x[0, :, 2:4, 2:4].reshape(-1))  # row-major: patch (1, 1)
    # incomplete border strips are left out
    assert slice_image(torch.zeros(1, 1, 9, 7), "rows", 2).shape == (1, 4, 14)
    assert slice_image(torch.zeros(1, 1, 9, 7), "columns", 2).shape == (1, 3, 18)


def test_defaults_are_the_published_slicing():
    assert default_patch_size(256, 256) == 32
    assert default_patch_size(64, 64) == 8
    assert default_patch_size(32, 48) == 4
    term = CRD(teacher_arch=None, student_arch=None)  # archs are not used by CRD
    assert term.sizes(256, 256) == {"rows": 1, "columns": 1, "patches": 32}  # 256 strips each, 64 patches
    assert term.reduction == "mean" and term.weights == {"rows": 2.5, "columns": 2.5, "patches": 2.5}
    assert CRD(teacher_arch=None, student_arch=None, patch_size=16, strip_size=4).sizes(256, 256) == {
        "rows": 4, "columns": 4, "patches": 16,
    }


def test_relations_of_a_right_triangle():
    v = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    d = distance_relation(v)
    mean = (2 + math.sqrt(2)) / 3
    expected = torch.tensor([[0, 1, 1], [1, 0, math.sqrt(2)], [1, math.sqrt(2), 0]]) / mean
    assert torch.allclose(d[0], expected, atol=1e-6)
    cos = angle_relation(v)  # [n, vertex, i, k]
    assert cos[0, 0, 1, 2] == pytest.approx(0.0, abs=1e-6)  # right angle at v0
    assert cos[0, 1, 0, 2] == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # 45 degrees at v1
    assert cos[0, 1, 2, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert cos[0, 1, 0, 0] == pytest.approx(1.0, abs=1e-6)  # i = k: the same edge
    assert cos[0, 1, 1, 1] == 0.0 and cos[0, 1, 0, 1] == 0.0  # an end at the vertex spans no angle


def test_vectorised_relations_match_loops():
    v = torch.randn(2, 6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cos = angle_relation(v)
    d = distance_relation(v)
    for n, i, j in itertools.product(range(2), range(6), range(6)):
        dist = torch.cdist(v[n], v[n])
        assert d[n, i, j] == pytest.approx(float(dist[i, j] / (dist.sum() / 30)), abs=1e-6)
        for k in range(6):
            if i != j and k != j:
                a, b = v[n, i] - v[n, j], v[n, k] - v[n, j]
                assert cos[n, j, i, k] == pytest.approx(float(a @ b / a.norm() / b.norm()), abs=1e-6)


def _smooth_images(n: int, size: int, phase: float) -> torch.Tensor:
    """RNG-free images in [-1, 1] (the tensors the reference numbers below were measured on)."""
    idx = torch.arange(n * 3 * size * size, dtype=torch.float64).reshape(n, 3, size, size)
    return torch.sin(idx * 0.37 + phase) * torch.cos(idx * 0.011 * (1 + phase))


# Measured with the CRD reference code's ``RKDLoss`` (relation_kd.py, w_d 1, w_a 2) on
# _smooth_images(2, 32, 0.0) (teacher) and _smooth_images(2, 32, 1.0) (student), float64:
# per image i, rkd(s[i].transpose(0, 1), t[i].transpose(0, 1)) for rows, transpose(0, 2)
# for columns (made contiguous: the released calls hand a transposed tensor to .view,
# which PyTorch rejects), and rkd over the image's 4x4 unfolded patches as in the
# reference CycleGAN code.
REFERENCE = [
    {"rows": 0.46591636506644796, "columns": 0.014925990676569828, "patches": 0.33835303115420745},
    {"rows": 0.4658411550527527, "columns": 0.015133473415730018, "patches": 0.34550148689050275},
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_reference_code_per_image_and_granularity(dtype):
    t, s = _smooth_images(2, 32, 0.0).to(dtype), _smooth_images(2, 32, 1.0).to(dtype)
    for g, size in (("rows", 1), ("columns", 1), ("patches", 4)):
        tv, sv = slice_image(t, g, size), slice_image(s, g, size)
        ours = distance_loss(tv, sv) + 2.0 * angle_loss(tv, sv)
        for i in range(2):
            assert ours[i].item() == pytest.approx(REFERENCE[i][g], rel=2e-6)
    # the whole term: published pix2pix reduction (sum over images, 2.5 per granularity) and the mean
    batch = _outputs_batch(t, s)
    published = sum(2.5 * v for ref in REFERENCE for v in ref.values())
    assert CRD(teacher_arch=None, student_arch=None, reduction="sum")(batch).item() == pytest.approx(published, rel=2e-6)
    assert CRD(teacher_arch=None, student_arch=None)(batch).item() == pytest.approx(published / 2, rel=2e-6)


def _explicit_angle_loss(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-image angle loss from explicit difference vectors (``O(S^2 D)`` memory), as relational KD writes it."""
    def cosines(x):
        e = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)  # [vertex, end, D]
        return e @ e.transpose(1, 2)

    return torch.stack([F.smooth_l1_loss(cosines(s[n]), cosines(t[n]).detach()) for n in range(t.shape[0])])


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_gram_form_angle_loss_equals_the_explicit_one_with_its_gradient(chunk):
    g = torch.Generator().manual_seed(2)
    t = torch.randn(2, 7, 5, dtype=torch.float64, generator=g)
    s = torch.randn(2, 7, 5, dtype=torch.float64, generator=g).requires_grad_(True)
    w = torch.tensor([0.7, 1.3], dtype=torch.float64)
    explicit = _explicit_angle_loss(t, s)
    (grad_explicit,) = torch.autograd.grad((w * explicit).sum(), s)
    ours = angle_loss(t, s, chunk=chunk)
    (grad_ours,) = torch.autograd.grad((w * ours).sum(), s)
    assert torch.allclose(ours.double(), explicit, rtol=1e-6, atol=1e-9)
    assert torch.allclose(grad_ours, grad_explicit, rtol=1e-5, atol=1e-6 * float(grad_explicit.abs().max()))


def test_one_pixel_strips_match_a_direct_cubic_computation():
    t = _images(n=1, size=12, seed=20).double()
    s = _images(n=1, size=12, seed=21).double()
    expected = 0.0
    for x_t, x_s, w in ((t[0].transpose(0, 1), s[0].transpose(0, 1), 2.5), (t[0].permute(2, 0, 1), s[0].permute(2, 0, 1), 2.5)):
        vt, vs = x_t.reshape(12, -1), x_s.reshape(12, -1)  # 12 one-pixel strips
        dt, ds = torch.cdist(vt, vt), torch.cdist(vs, vs)
        dist = F.smooth_l1_loss(ds / (ds.sum() / 132), dt / (dt.sum() / 132)).item()  # mean over all 144 pairs
        total = 0.0
        for i, j, k in itertools.product(range(12), repeat=3):  # every triple, degenerate ones count as 0 on both sides
            if i == j or k == j:
                continue
            def cos(v):
                a, b = v[i] - v[j], v[k] - v[j]
                return float(a @ b / a.norm() / b.norm())
            diff = abs(cos(vs) - cos(vt))
            total += 0.5 * diff * diff if diff < 1 else diff - 0.5
        expected += w * (dist + 2.0 * total / 12**3)
    term = CRD(teacher_arch=None, student_arch=None, patches=0.0)
    assert term(_outputs_batch(t, s)).item() == pytest.approx(expected, rel=1e-5)


def test_mean_and_sum_reductions_over_images():
    t, s = _images(n=3, seed=22), _images(n=3, seed=23)
    single = [CRD(teacher_arch=None, student_arch=None)(_outputs_batch(t[i : i + 1], s[i : i + 1])).item() for i in range(3)]
    mean = CRD(teacher_arch=None, student_arch=None)(_outputs_batch(t, s)).item()
    summed = CRD(teacher_arch=None, student_arch=None, reduction="sum")(_outputs_batch(t, s)).item()
    assert mean == pytest.approx(sum(single) / 3, rel=1e-5)
    assert summed == pytest.approx(sum(single), rel=1e-5)
    # one image: the reductions agree (the published CycleGAN setting runs at batch 1)
    one = _outputs_batch(t[:1], s[:1])
    assert CRD(teacher_arch=None, student_arch=None, reduction="sum")(one).item() == pytest.approx(single[0], rel=1e-6)


def test_identical_outputs_give_zero_and_different_outputs_do_not():
    term = CRD(teacher_arch=None, student_arch=None)
    x = _images()
    assert term(_outputs_batch(x, x.clone())).item() == pytest.approx(0.0, abs=1e-6)
    assert term(_outputs_batch(x, _images(seed=1))).item() > 0.05


@pytest.mark.parametrize("scale", [0.1, 0.5, 3.0])
def test_invariant_to_global_scale_and_shift_of_the_student(scale):
    term = CRD(teacher_arch=None, student_arch=None)
    t = _images()
    other = _images(seed=3)
    assert term(_outputs_batch(t, scale * t)).item() == pytest.approx(0.0, abs=1e-5)
    assert term(_outputs_batch(t, scale * t + 0.25)).item() == pytest.approx(0.0, abs=1e-5)
    # and a scaled wrong answer costs what the wrong answer costs
    assert term(_outputs_batch(t, scale * other)).item() == pytest.approx(term(_outputs_batch(t, other)).item(), rel=1e-4)


def test_relations_stay_within_one_image():
    term = CRD(teacher_arch=None, student_arch=None)
    t, s = _images(n=2, seed=4), _images(n=2, seed=5)
    both = term(_outputs_batch(t, s)).item()
    # swapping the images within the batch changes nothing for relations that are per image
    assert term(_outputs_batch(t[[1, 0]], s[[1, 0]])).item() == pytest.approx(both, rel=1e-5)
    # but pairing a teacher image with another image's student output does
    assert term(_outputs_batch(t, s[[1, 0]])).item() != pytest.approx(both, rel=1e-3)


def test_weights_combine_as_documented():
    t, s = _images(seed=6), _images(seed=7)
    sizes = {"rows": 1, "columns": 1, "patches": 4}
    ts = {g: slice_image(t, g, sizes[g]) for g in sizes}
    ss = {g: slice_image(s, g, sizes[g]) for g in sizes}
    dist = {g: relation_loss(ts[g], ss[g], distance_weight=1.0, angle_weight=0.0).item() for g in ts}
    ang = {g: relation_loss(ts[g], ss[g], distance_weight=0.0, angle_weight=1.0).item() for g in ts}
    expected = sum(2.5 * (1.0 * dist[g] + 2.0 * ang[g]) for g in ts)
    assert CRD(teacher_arch=None, student_arch=None)(_outputs_batch(t, s)).item() == pytest.approx(expected, rel=1e-5)
    only_rows = CRD(teacher_arch=None, student_arch=None, rows=4.0, columns=0.0, patches=0.0, angle_weight=0.5)
    expected_rows = 4.0 * (dist["rows"] + 0.5 * ang["rows"])
    assert only_rows(_outputs_batch(t, s)).item() == pytest.approx(expected_rows, rel=1e-5)


def test_gradients_reach_the_student_only(arch):
    student = arch.with_widths(stem=(8, 8, 8), blocks=(Block(res=(0, 2, 0), dw=(0, 0, 0)),) * 2, head=(8, 8))
    t_gen, s_gen = build_generator(arch), build_generator(student)
    x = _images(seed=8)
    batch = KDBatch(real_a=x, real_b=None, t_out=t_gen(x), s_out=s_gen(x))  # teacher run with grad on purpose
    (_, term), = build_terms({"crd": 1.0}, teacher_arch=arch, student_arch=student, taps=("block1",))
    assert term.taps == ()  # output-only term: needs no features
    loss = term(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in t_gen.parameters())
    grads = [p.grad for p in s_gen.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_flat_regions_give_finite_gradients():
    t = _images(seed=9)
    t[:, :, :16] = 1.0  # identical (saturated) strips and patches
    s = (0.5 * t + 0.01 * _images(seed=10)).requires_grad_(True)
    loss = CRD(teacher_arch=None, student_arch=None)(_outputs_batch(t, s))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_student_learns_teacher_relations():
    t = _images(n=1, size=12, seed=11)
    s = torch.zeros_like(t).requires_grad_(True)
    with torch.no_grad():
        s.copy_(_images(n=1, size=12, seed=12))
    term = CRD(teacher_arch=None, student_arch=None, patch_size=4)
    opt = torch.optim.Adam([s], lr=0.03)
    first = term(_outputs_batch(t, s)).item()
    for _ in range(40):
        opt.zero_grad()
        loss = term(_outputs_batch(t, s))
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_errors_name_the_option():
    with pytest.raises(NasPruneError, match="crd.patch_size"):
        CRD(teacher_arch=None, student_arch=None, patch_size=20)(_outputs_batch(_images(), _images(seed=1)))
    with pytest.raises(NasPruneError, match="crd.strip_size"):
        CRD(teacher_arch=None, student_arch=None, strip_size=12, patches=0.0)(_outputs_batch(_images(), _images()))
    with pytest.raises(NasPruneError, match="crd.online_teacher_discriminator"):
        CRD(teacher_arch=None, student_arch=None, online_teacher_discriminator=True)
    with pytest.raises(NasPruneError, match="crd.angle_weight"):
        CRD(teacher_arch=None, student_arch=None, angle_weight=-1)
    with pytest.raises(NasPruneError, match="crd.patch_size"):
        CRD(teacher_arch=None, student_arch=None, patch_size=0)
    with pytest.raises(NasPruneError, match="crd.reduction"):
        CRD(teacher_arch=None, student_arch=None, reduction="max")


# ---------------------------------------------------------------- end to end through the CLI


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A tiny CAT-layout teacher, a pruned student folder (``nas-prune search``) and demo data."""
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from nas_prune.cli import app
    from nas_prune.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("kd_cli")
    teacher = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 2, head=(16, 8))
    torch.manual_seed(0)
    save_file(build_generator(teacher).state_dict(), str(root / "teacher.safetensors"))
    make_demo_dataset(root / "data", size=32, n_train=4, n_test=2)
    res = CliRunner().invoke(app, [
        "search", "--teacher", str(root / "teacher.safetensors"), "--target-macs", "2M", "--input-size", "32",
        "--min-channels", "4", "--out", str(root / "student"), "--json",
    ])
    assert res.exit_code == 0, res.output
    return root


def _distill_args(root, out, *extra):
    return [
        "distill", "--teacher", str(root / "teacher.safetensors"), "--student", str(root / "student"),
        "--data", str(root / "data"), "--out", str(out), "--mode", "aligned", "--batch-size", "2",
        "--load-size", "32", "--crop-size", "32", "--ndf", "8", "--workers", "0", "--no-progress",
        "--device", "cpu", "--max-steps", "2", *extra,
    ]


def test_cli_selects_every_method_with_weights_and_options(cli_setup, tmp_path):
    import json

    from typer.testing import CliRunner

    from nas_prune.cli import app

    res = CliRunner().invoke(app, _distill_args(
        cli_setup, tmp_path / "run",
        "--distill", "gcka,mse,crd,akdg,ackd", "--lambda-crd", "0.5", "--lambda-ackd", "2",
        "--distill-option", "akdg.ndf=8", "--distill-option", "crd.patch_size=8", "--distill-option", "ackd.mode=f",
    ))
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["distill"] == {"gcka": 1.0, "mse": 1.0, "crd": 0.5, "akdg": 1.0, "ackd": 2.0}
    assert config["distill_options"] == {"akdg": {"ndf": 8}, "crd": {"patch_size": 8}, "ackd": {"mode": "f"}}
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2
    gcka, mse, crd, akdg, ackd = ckpt["terms"]
    assert gcka == {} and crd == {}
    assert {k.split(".")[0] for k in mse} == {"adapters"}
    assert akdg["discriminator.model.0.weight"].shape[0] == 8  # the option reached D_kd
    assert "fusion.body.0.weight" in ackd and not any(k.startswith("attention.") for k in ackd)
    assert set(ckpt["opt_terms"]) == {"3", "4"}  # AKDG's discriminator and ACKD's accumulation modules


def test_cli_errors_for_bad_method_options(cli_setup, tmp_path):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    runner = CliRunner()
    res = runner.invoke(app, _distill_args(cli_setup, tmp_path / "a", "--distill", "crd", "--distill-option", "crd.patch=4"))
    assert res.exit_code == 2 and "crd.patch: unknown option" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, _distill_args(cli_setup, tmp_path / "b", "--distill", "crd,ackd", "--distill-option", "ackd.mode=z"))
    assert res.exit_code == 2 and "ackd.mode" in res.output
    res = runner.invoke(app, _distill_args(cli_setup, tmp_path / "c", "--distill", "crd", "--distill-option", "crd.online_teacher_discriminator=true"))
    assert res.exit_code == 2 and "frozen teacher" in res.output
    assert not (tmp_path / "a" / "checkpoints").exists()
