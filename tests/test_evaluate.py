"""FID / KID math against reference computations, stats files, and evaluate() end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nas_prune.arch import Arch, Block
from nas_prune.errors import NasPruneError
from nas_prune.evaluate import (
    evaluate,
    feature_stats,
    frechet_distance_from_stats,
    kid,
    load_stats,
    open_generator,
    save_stats,
)
from nas_prune.model import build_generator


def _random_stats(rng, d, n):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    return x.mean(0) + rng.normal(size=d), np.atleast_2d(np.cov(x, rowvar=False))


def test_fid_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    for d in (1, 4, 16):
        mu1, s1 = _random_stats(rng, d, 50)
        mu2, s2 = _random_stats(rng, d, 50)
        covmean = np.real(linalg.sqrtm(s1 @ s2))
        ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
        assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8, abs=1e-8)


def test_fid_closed_forms():
    rng = np.random.default_rng(1)
    mu, s = _random_stats(rng, 8, 40)
    assert frechet_distance_from_stats(mu, s, mu, s) == pytest.approx(0.0, abs=1e-7)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 plus the mean term
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    ref = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(ref, rel=1e-10)
    # rank-deficient covariances (fewer samples than dimensions) stay finite and >= 0
    x, y = rng.normal(size=(4, 10)), rng.normal(size=(4, 10)) + 1
    v = frechet_distance_from_stats(*feature_stats(x), *feature_stats(y))
    assert np.isfinite(v) and v > 0
    with pytest.raises(NasPruneError, match="do not match"):
        frechet_distance_from_stats(m1, np.diag(a), m2[:3], np.diag(b[:3]))


def _mmd_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written with explicit sums."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 6)), rng.normal(size=(12, 6)) * 1.5 + 0.3
    mean, std = kid(x, y, subsets=3, subset_size=12)  # a subset of all samples is a permutation
    assert mean == pytest.approx(_mmd_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    # subsets: the mean of the per-subset estimates, each a direct MMD^2 of its draw
    mean, std = kid(x, y, subsets=5, subset_size=5, seed=3)
    draw = np.random.default_rng(3)
    vals = []
    for _ in range(5):
        xi, yi = x[draw.choice(12, 5, replace=False)], y[draw.choice(12, 5, replace=False)]
        vals.append(_mmd_loops(xi, yi))
    assert mean == pytest.approx(np.mean(vals), rel=1e-10) and std == pytest.approx(np.std(vals), rel=1e-8)


def test_kid_is_unbiased():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    mean, _ = kid(x, y, subsets=50, subset_size=50)
    far, _ = kid(x, y + 1.0, subsets=50, subset_size=50)
    assert abs(mean) < 0.05 * far
    with pytest.raises(NasPruneError, match="at least 2"):
        kid(x[:1], y[:1])


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    f = rng.normal(size=(20, 7))
    path = save_stats(tmp_path / "real.npz", f, meta={"split": "test"})
    st = load_stats(path)
    np.testing.assert_allclose(st["mu"], f.mean(0), rtol=0, atol=1e-12)  # features ~ N(0, 1), float64
    np.testing.assert_allclose(st["sigma"], np.cov(f, rowvar=False), rtol=0, atol=1e-12)
    assert st["features"].shape == (20, 7) and st["meta"] == {"split": "test"}
    # pytorch-fid's files hold only mu and sigma
    np.savez(tmp_path / "plain.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    assert load_stats(tmp_path / "plain.npz")["features"] is None
    np.savez(tmp_path / "bad.npz", mu=f.mean(0))
    with pytest.raises(NasPruneError, match="sigma: missing"):
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(NasPruneError, match="must end in .npz"):
        save_stats(tmp_path / "x.txt", f)


# ----------------------------------------------------------------------------- evaluate()


def _aligned_data(root, n_test=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", 2), ("test", n_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
    return root


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    arch = Arch(input_nc=3, output_nc=3, stem=(8, 8, 8), blocks=(Block(res=(4,), dw=(4,)),) * 2,
                head=(8, 8), res_kernel_sizes=(3,), dw_kernel_sizes=(3,))
    return build_generator(arch).eval()


class _TinyFeatures(torch.nn.Module):
    """Stand-in for the Inception net: 6 fixed random projections of 4x4 average pools."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(48, 6)

    def forward(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1))


def test_evaluate_psnr_ssim_and_reference(tmp_path):
    from nas_prune.metrics import psnr

    data = _aligned_data(tmp_path / "data")
    t, s = _tiny(0), _tiny(1)
    res = evaluate(models={"teacher": t, "student": s}, data=data, crop_size=32, reference="teacher",
                   out=tmp_path / "eval")
    assert res.n_images == 4 and res.input_size == (32, 32)
    assert set(res.rows["student"]) >= {"psnr", "ssim", "psnr_ref", "ssim_ref", "macs_fvcore", "params"}
    assert "psnr_ref" not in res.rows["teacher"]
    # the number equals PSNR computed by hand on the same images
    from nas_prune.data import TransformConfig, collate, open_dataset

    ds = open_dataset(data, mode="aligned", split="test", transform=TransformConfig(load_size=32, crop_size=32, preprocess="resize", flip=False))
    batch = collate([ds[i] for i in range(4)])
    with torch.no_grad():
        # PSNR in dB from float32 images: 1e-4 dB is far below any difference that matters
        assert res.rows["student"]["psnr"] == pytest.approx(psnr(s(batch["A"]), batch["B"]), abs=1e-4)
        assert res.rows["student"]["psnr_ref"] == pytest.approx(psnr(s(batch["A"]), t(batch["A"])), abs=1e-4)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["models"]["student"]["psnr"] == pytest.approx(res.rows["student"]["psnr"])
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| student |" in md and "PSNR vs teacher" in md
    with pytest.raises(NasPruneError, match="reference 'x'"):
        evaluate(models={"a": t}, data=data, crop_size=32, reference="x")
    with pytest.raises(NasPruneError, match="--inception"):
        evaluate(models={"a": t}, data=data, crop_size=32, real_stats=tmp_path / "r.npz")


def test_evaluate_fid_kid_with_saved_stats(tmp_path, monkeypatch):
    import nas_prune.inception as inc

    torch.manual_seed(0)
    features = _TinyFeatures().eval().requires_grad_(False)
    monkeypatch.setattr(inc, "load_inception", lambda path, **kw: features)
    data = _aligned_data(tmp_path / "data", n_test=6)
    models = {"a": _tiny(0), "b": _tiny(1)}
    first = evaluate(models=models, data=data, crop_size=32, inception="unused.pth",
                     save_real_stats=tmp_path / "real.npz", kid_subsets=4)
    assert (tmp_path / "real.npz").is_file()
    for row in first.rows.values():
        assert row["fid"] > 0 and np.isfinite(row["kid"])
    from nas_prune.evaluate import real_stats

    real_stats(data=data, inception="unused.pth", out=tmp_path / "again.npz", crop_size=32, batch_size=4)
    real = load_stats(tmp_path / "real.npz")
    # float32 features summed in another order: compare to the features' spread, not to each mean
    # (a mean near 0 has no relative precision)
    spread = float(np.sqrt(np.diag(real["sigma"]).max()))
    np.testing.assert_allclose(load_stats(tmp_path / "again.npz")["mu"], real["mu"], rtol=0, atol=1e-5 * spread)
    # batches of 4 over 6 images: per-image means do not depend on the batching
    again = evaluate(models=models, data=data, crop_size=32, inception="unused.pth", batch_size=4,
                     real_stats=tmp_path / "real.npz", kid_subsets=4)
    # Another batch size may sum in another order: FID and KID are compared to the scale of the
    # features (FID is in squared feature units, like the trace of sigma), PSNR in dB, SSIM in [-1, 1].
    scale = float(np.trace(real["sigma"]))
    for name in models:
        assert again.rows[name]["fid"] == pytest.approx(first.rows[name]["fid"], rel=1e-5, abs=1e-5 * scale)
        assert again.rows[name]["kid"] == pytest.approx(first.rows[name]["kid"], rel=1e-4, abs=1e-5 * scale)
        assert again.rows[name]["psnr"] == pytest.approx(first.rows[name]["psnr"], abs=1e-4)
        assert again.rows[name]["ssim"] == pytest.approx(first.rows[name]["ssim"], abs=1e-6)


def test_open_generator_reads_checkpoints_and_student_folders(tmp_path):
    from safetensors.torch import save_file

    from nas_prune.fileio import write_json

    g = _tiny(3)
    torch.save(g.state_dict(), tmp_path / "g.pth")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(open_generator(tmp_path / "g.pth")(x), g(x))
        folder = tmp_path / "student"
        folder.mkdir()
        write_json(folder / "arch.json", {"format": "nas-prune-arch", "version": 1, "arch": g.arch.to_dict()})
        save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(folder / "student.safetensors"))
        torch.testing.assert_close(open_generator(folder)(x), g(x))
    with pytest.raises(NasPruneError, match="model not found"):
        open_generator(tmp_path / "missing")


def test_evaluate_cli(tmp_path):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    data = _aligned_data(tmp_path / "data")
    torch.save(_tiny(0).state_dict(), tmp_path / "t.pth")
    torch.save(_tiny(1).state_dict(), tmp_path / "s.pth")
    result = CliRunner().invoke(app, ["evaluate", f"teacher={tmp_path / 't.pth'}", f"student={tmp_path / 's.pth'}",
                                      "--data", str(data), "--crop-size", "32", "--reference", "teacher", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["models"]
    assert set(rows) == {"teacher", "student"} and "psnr_ref" in rows["student"]
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "t.pth"), "--data", str(data), "--crop-size", "32",
                                      "--inception", str(tmp_path / "missing.pth")])
    assert result.exit_code == 2
    assert "Inception weights not found" in result.output and "pytorch-fid/releases" in result.output


def _unaligned_data(root, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("trainA", 2), ("trainB", 2), ("testA", 3), ("testB", 3)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
    return root


def test_unpaired_without_inception_still_scores_against_the_teacher(tmp_path):
    from typer.testing import CliRunner

    from nas_prune.cli import app

    data = _unaligned_data(tmp_path / "data")
    t, s = _tiny(0), _tiny(1)
    res = evaluate(models={"student": s, "teacher": t}, data=data, mode="unaligned", crop_size=32)
    assert res.reference == "teacher"
    assert {"psnr_ref", "ssim_ref"} <= set(res.rows["student"]) and "psnr" not in res.rows["student"]
    assert 0 < res.rows["student"]["psnr_ref"] < 100
    assert res.notes[0].startswith("FID / KID skipped: they need the FID Inception weights")
    assert res.notes[1] == "unpaired data has no target per image: PSNR / SSIM are to teacher's outputs"
    # without a model named teacher, the first model is the reference; alone, the note says what to add
    assert evaluate(models={"a": t, "b": s}, data=data, mode="unaligned", crop_size=32).reference == "a"
    alone = evaluate(models={"a": t}, data=data, mode="unaligned", crop_size=32)
    assert alone.reference is None and "add the teacher" in alone.notes[1]
    torch.save(t.state_dict(), tmp_path / "t.pth")
    torch.save(s.state_dict(), tmp_path / "s.pth")
    result = CliRunner().invoke(app, ["evaluate", f"teacher={tmp_path / 't.pth'}", f"student={tmp_path / 's.pth'}",
                                      "--data", str(data), "--mode", "unaligned", "--crop-size", "32"],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "PSNR vs teacher (dB)" in result.output and "note: FID / KID skipped" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| student |"))
    assert row.endswith("|")  # a markdown row is not broken at 80 columns
