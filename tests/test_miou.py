"""DRN-D segmenter (drn-d-105_ms_cityscapes.pth layout) and the mIoU protocol of CAT / GAN Compression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas_prune.errors import NasPruneError
from nas_prune.miou import ConfusionMatrix, cityscapes_train_ids, segment, to_uint8
from nas_prune.segmenter import CITYSCAPES_MEAN, CITYSCAPES_STD, DRN_D_105, DRNConfig, DRNSeg, load_segmenter
from seg_helpers import drn_state, save_drn


def test_drn_d_105_layout():
    with torch.device("meta"):
        net = DRNSeg(DRN_D_105)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["base.0.0.weight"] == (16, 3, 7, 7)
    assert shapes["base.2.0.weight"] == (32, 16, 3, 3)
    assert shapes["base.3.0.downsample.0.weight"] == (256, 32, 1, 1)
    assert shapes["base.5.22.conv3.weight"] == (1024, 256, 1, 1) and "base.5.23.conv1.weight" not in shapes
    assert shapes["base.6.0.downsample.0.weight"] == (2048, 1024, 1, 1)
    assert shapes["base.7.0.weight"] == (512, 2048, 3, 3) and shapes["base.8.0.weight"] == (512, 512, 3, 3)
    assert shapes["seg.weight"] == (19, 512, 1, 1) and shapes["up.weight"] == (19, 1, 16, 16)
    assert net.base[2][0].stride == (2, 2) and net.base[3][0].conv2.stride == (2, 2) and net.base[4][0].conv2.stride == (2, 2)
    assert net.base[5][0].conv2.dilation == (2, 2) and net.base[6][2].conv2.dilation == (4, 4)
    assert net.base[7][0].dilation == (2, 2) and net.base[8][0].dilation == (1, 1)
    assert net.config.name == "drn_d_105"


def test_bilinear_up_kernel_by_hand():
    net = DRNSeg(DRNConfig(layers=(1,) * 8, channels=(4,) * 8, classes=2))
    k = net.up.weight[0, 0]
    r = torch.tensor([0.0625 + 0.125 * i for i in range(8)] + [0.9375 - 0.125 * i for i in range(8)])
    torch.testing.assert_close(k, r[:, None] * r[None, :])
    ones = net.up(torch.ones(1, 2, 6, 6))
    assert ones.shape == (1, 2, 48, 48)
    torch.testing.assert_close(ones[..., 8:40, 8:40], torch.ones(1, 2, 32, 32))


def test_segmenter_loads_and_predicts(tmp_path):
    state = drn_state(classes=5)
    path = tmp_path / "seg.pth"
    torch.save({"module." + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    net = load_segmenter(path)
    assert net.config.layers == (1, 1, 1, 2, 1, 1, 1, 1) and net.config.channels == (4, 4, 4, 4, 4, 4, 8, 8)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.randn(2, 3, 32, 64)
    scores = net(x)
    assert scores.shape == (2, 5, 32, 64)
    assert net.base(x).shape[-2:] == (4, 8)  # output stride 8
    # segment(): 8-bit quantisation, cityscapes normalisation, bilinear resize to the label size, arg-max
    img = torch.rand(2, 3, 32, 64) * 2 - 1
    pred = segment(net, img, size=(64, 128), mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD)
    q = torch.floor(((img + 1) / 2 * 255).clamp(0, 255)) / 255
    m, s = torch.tensor(CITYSCAPES_MEAN).view(1, 3, 1, 1), torch.tensor(CITYSCAPES_STD).view(1, 3, 1, 1)
    ref = F.interpolate(net((q - m) / s), size=(64, 128), mode="bilinear", align_corners=False).argmax(1)
    assert pred.shape == (2, 64, 128) and torch.equal(pred, ref)
    with pytest.raises(NasPruneError, match="multiples of 8"):
        segment(net, torch.zeros(1, 3, 20, 20), size=(20, 20), mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD)


def test_to_uint8_truncates_like_saved_images():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 127, 254, 255, 255]


def test_segmenter_errors(tmp_path):
    with pytest.raises(NasPruneError, match="segmenter weights not found: .*go.yf.io/drn-cityscapes-models"):
        load_segmenter(tmp_path / "none.pth")
    torch.save({"layer0.0.weight": torch.zeros(16, 3, 7, 7), "fc.weight": torch.zeros(1000, 512, 1, 1)}, tmp_path / "cls.pth")
    with pytest.raises(NasPruneError, match="not a DRN segmentation checkpoint"):
        load_segmenter(tmp_path / "cls.pth")
    state = drn_state()
    state.pop("up.weight")
    torch.save(state, tmp_path / "noup.pth")
    with pytest.raises(NasPruneError, match="missing keys: up.weight"):
        load_segmenter(tmp_path / "noup.pth")
    path = save_drn(tmp_path, classes=3)
    assert load_segmenter(path).config.classes == 3


def test_confusion_matrix_and_miou_by_hand():
    true = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, torch.from_numpy(true))
    # rows: true class, columns: predicted; the 255 pixel is skipped
    np.testing.assert_array_equal(cm.hist, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    # IoU_0 = 1 / (2 + 1 - 1), IoU_1 = 2 / (2 + 4 - 2), IoU_2 = 0 / (1 + 0 - 0)
    np.testing.assert_allclose(cm.per_class_iou(), [0.5, 0.5, 0.0])
    assert cm.miou() == pytest.approx(100 / 3)
    cm4 = ConfusionMatrix(4)  # class 3 never occurs: NaN, left out of the mean
    cm4.update(pred, true)
    assert np.isnan(cm4.per_class_iou()[3]) and cm4.miou() == pytest.approx(100 / 3)
    cm.update(np.array([2]), np.array([2]))  # accumulates over images
    assert cm.hist[2, 2] == 1 and cm.per_class_iou()[2] == pytest.approx(0.5)
    assert np.isnan(ConfusionMatrix(2).miou())
    with pytest.raises(NasPruneError, match="sizes differ"):
        cm.update(np.zeros(3), np.zeros(4))


def test_cityscapes_train_ids():
    ids = np.array([0, 6, 7, 8, 9, 11, 24, 26, 31, 33, 34, 255, -1])
    assert cityscapes_train_ids(ids).tolist() == [255, 255, 0, 1, 255, 2, 11, 13, 16, 18, 255, 255, 255]


def test_score_resize_equals_pils_bilinear_upscale():
    """CAT resizes each score channel with PIL's BILINEAR; predict() uses torch's bilinear: same values."""
    from PIL import Image

    from nas_prune.miou import predict

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 8, 16)).astype(np.float32)
    pil = np.stack([np.asarray(Image.fromarray(c).resize((64, 32), Image.BILINEAR)) for c in scores])
    torch_up = F.interpolate(torch.from_numpy(scores)[None], size=(32, 64), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(torch_up.numpy(), pil, atol=1e-6)
    assert torch.equal(predict(torch.from_numpy(scores)[None], (32, 64))[0], torch.from_numpy(pil.argmax(0)))
