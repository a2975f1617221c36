"""The FID InceptionV3: key layout of the pytorch-fid weights file, strict loading, preprocessing."""

from __future__ import annotations

import pytest
import torch

from nas_prune.errors import NasPruneError
from nas_prune.inception import FEATURE_DIM, InceptionFeatures, _avg3, load_inception


def test_layout_matches_the_fid_inception_weights():
    net = InceptionFeatures()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    # shapes of pt_inception-2015-12-05-6726825d.pth (torchvision Inception3 layout)
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch3x3_2.conv.weight"] == (320, 192, 3, 3)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert net.Conv2d_1a_3x3.bn.eps == pytest.approx(1e-3)
    assert sum(p.numel() for p in net.parameters()) == 21_785_568
    assert not any(k.startswith(("fc.", "AuxLogits.")) for k in shapes)


def test_tf_pools():
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(_avg3(ones), ones)  # padding excluded from the mean
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert _avg3(x)[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 5 + 6) / 4)


def test_load_and_features(inception_weights):
    path, state = inception_weights
    net = load_inception(path, value_range=(0.0, 1.0))
    assert not net.training
    assert torch.equal(net.Mixed_6b.branch7x7_2.conv.weight, state["Mixed_6b.branch7x7_2.conv.weight"])
    assert torch.equal(net.Mixed_7c.branch_pool.bn.running_var, state["Mixed_7c.branch_pool.bn.running_var"])
    torch.manual_seed(1)
    x = torch.rand(2, 3, 80, 96)
    gray = torch.linspace(0, 1, 96).expand(1, 1, 80, 96)
    with torch.no_grad():
        f = net(torch.cat([x, gray.repeat(1, 3, 1, 1)]))
        assert f.shape == (3, FEATURE_DIM) and torch.isfinite(f).all()
        assert (f >= 0).all()  # average of ReLU outputs
        assert (f[0] - f[2]).abs().max() > 1e-3 * f.abs().max()  # features depend on the image
        # the same image given in [-1, 1] with the matching value_range gives the same features,
        # and in eval mode a sample's features do not depend on the rest of the batch
        net_pm = load_inception(path, value_range=(-1.0, 1.0))
        torch.testing.assert_close(net_pm(2 * x[1:] - 1)[0], f[1], rtol=1e-4, atol=1e-5)
        # grayscale (N, 1, H, W) is repeated to three channels
        torch.testing.assert_close(net(gray)[0], f[2], rtol=1e-4, atol=1e-5)


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(NasPruneError, match="not found.*pytorch-fid/releases"):
        load_inception(tmp_path / "nope.pth")
    with pytest.raises(NasPruneError, match="--inception"):
        load_inception(None)


def test_wrong_layouts(tmp_path, inception_weights):
    _, state = inception_weights
    bad = dict(state)
    del bad["Mixed_5c.branch1x1.conv.weight"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(NasPruneError, match="missing Mixed_5c.branch1x1.conv.weight"):
        load_inception(tmp_path / "missing.pth")
    bad = dict(state)
    bad["Mixed_5c.branch1x1.conv.weight"] = torch.zeros(64, 256, 3, 3)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(NasPruneError, match=r"Mixed_5c.branch1x1.conv.weight has shape \(64, 256, 3, 3\)"):
        load_inception(tmp_path / "shape.pth")
    bad = dict(state)
    bad["Mixed_8.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(NasPruneError, match="unexpected key Mixed_8.extra"):
        load_inception(tmp_path / "extra.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(NasPruneError, match="cannot be read"):
        load_inception(tmp_path / "junk.pth")


def test_pickled_module_is_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(NasPruneError, match="cannot be read"):
        load_inception(tmp_path / "module.pth")


def test_safetensors_weights(tmp_path, inception_weights):
    from safetensors.torch import save_file

    _, state = inception_weights
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "inc.safetensors"))
    net = load_inception(tmp_path / "inc.safetensors")
    assert torch.equal(net.Conv2d_2a_3x3.conv.weight, state["Conv2d_2a_3x3.conv.weight"])
