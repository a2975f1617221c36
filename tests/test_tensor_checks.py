"""Weights files whose tensors are not dense floats are refused with the tensor and its kind named.

An integer teacher would otherwise be pruned into a student of {-1, 0, 1} weights, a
safetensors header declaring I32 for float bytes into weights of 1e9, and a sparse tensor
ended in ``NotImplementedError`` from the finiteness check.
"""

from __future__ import annotations

import json
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from conftest import randomize_
from nas_prune.errors import NasPruneError
from nas_prune.load import load_generator
from nas_prune.model import build_generator
from nas_prune.tensor_checks import check_weights, nested_tensors

KEY = "features.0.res_ops.1.1.0.weight"


def _state(arch, **replace):
    state = dict(randomize_(build_generator(arch).eval()).state_dict())
    state.update(replace)
    return state


def test_a_float_teacher_passes(tmp_path, tiny_arch):
    torch.save(_state(tiny_arch), tmp_path / "g.pth")
    assert load_generator(tmp_path / "g.pth").arch == tiny_arch


def test_batch_norm_step_counter_may_be_integer(tmp_path):
    state = {"bn.weight": torch.ones(3), "bn.num_batches_tracked": torch.tensor(7)}
    check_weights(state, tmp_path / "x.pth")  # no error
    with pytest.raises(NasPruneError, match=r"bn\.num_batches_tracked \(bool\)"):
        check_weights({**state, "bn.num_batches_tracked": torch.tensor(True)}, "x.pth")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.complex64])
def test_non_float_weights_are_named_with_their_dtype(tmp_path, tiny_arch, dtype):
    state = _state(tiny_arch)
    state[KEY] = state[KEY].round().to(dtype)
    torch.save(state, tmp_path / "g.pth")
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(NasPruneError, match=rf"weights must be floating point, found {KEY} \({name}\)"):
        load_generator(tmp_path / "g.pth")


def test_an_all_integer_pth_names_the_count_of_other_tensors(tmp_path, tiny_arch):
    state = {k: v.round().long() for k, v in _state(tiny_arch).items()}
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(NasPruneError, match=r"\(int64\), .*\(\+\d+ more tensors\)") as err:
        load_generator(tmp_path / "g.pth")
    assert str(tmp_path / "g.pth") in str(err.value)


def _retag_safetensors(path, key, dtype):
    """Rewrite the header of ``path`` so ``key`` is declared ``dtype`` over the same bytes."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header[key]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def test_a_safetensors_header_declaring_i32_for_float_bytes_is_refused(tmp_path, tiny_arch):
    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in _state(tiny_arch).items()}, str(path))
    _retag_safetensors(path, KEY, "I32")
    with pytest.raises(NasPruneError, match=rf"{KEY} \(int32\)"):
        load_generator(path)


def test_half_bfloat16_and_float8_weights_load(tmp_path, tiny_arch):
    state = _state(tiny_arch)
    state[KEY] = state[KEY].half()
    state["down_sampling.1.weight"] = state["down_sampling.1.weight"].bfloat16()
    state["up_sampling.0.weight"] = state["up_sampling.0.weight"].to(torch.float8_e4m3fn)
    torch.save(state, tmp_path / "g.pth")
    assert load_generator(tmp_path / "g.pth").arch == tiny_arch


def test_float8_nan_is_found(tmp_path):
    bad = torch.tensor([1.0, float("nan")]).to(torch.float8_e4m3fn)
    with pytest.raises(NasPruneError, match=r"non-finite weights .* w \(1 of 2 values\)"):
        check_weights({"w": bad}, tmp_path / "x.pth")


@pytest.mark.parametrize("make, kind", [
    (lambda t: t.to_sparse(), "sparse coo"),  # Tensor.to_sparse: COO
    (lambda t: t.flatten(1).to_sparse_csr(), "sparse csr"),
    (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "quantized (qint8)"),
    (lambda t: torch.empty(t.shape, device="meta"), "meta-device"),
])
def test_non_dense_tensors_are_one_line_errors(tmp_path, tiny_arch, make, kind):
    state = _state(tiny_arch)
    state[KEY] = make(state[KEY])
    torch.save(state, tmp_path / "g.pth")
    with pytest.raises(NasPruneError, match=re.escape(f"not dense tensors: {KEY} ({kind}")):
        load_generator(tmp_path / "g.pth")


def test_student_weights_are_checked_too(tmp_path, tiny_arch):
    from nas_prune.export import load_student
    from nas_prune.search import search

    torch.save(_state(tiny_arch), tmp_path / "t.pth")
    search(teacher=tmp_path / "t.pth", target_macs="2M", input_size=32, min_channels=4, out=tmp_path / "S")
    weights = tmp_path / "S" / "student.safetensors"
    _retag_safetensors(weights, "up_sampling.7.bias", "I32")
    with pytest.raises(NasPruneError, match=r"student\.safetensors: weights must be floating point, found "
                                            r"up_sampling\.7\.bias \(int32\)"):
        load_student(tmp_path / "S")


def test_discriminator_and_inception_readers_check_dtypes(tmp_path):
    from nas_prune.gan import read_state_dict
    from nas_prune.inception import _read

    torch.save({"model.0.weight": torch.ones(2, 3, 4, 4, dtype=torch.int64)}, tmp_path / "d.pth")
    with pytest.raises(NasPruneError, match=r"discriminator checkpoint .*d\.pth: weights must be floating point"):
        read_state_dict(tmp_path / "d.pth", what="discriminator checkpoint")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.randn(2, 3, 3, 3).to_sparse()}, tmp_path / "i.pth")
    with pytest.raises(NasPruneError, match=r"Inception weights .*i\.pth: not dense tensors"):
        _read(tmp_path / "i.pth")


def test_training_checkpoints_refuse_sparse_tensors(tmp_path):
    from nas_prune import loop

    path = tmp_path / loop.CHECKPOINT
    path.parent.mkdir(parents=True)
    torch.save({"version": 1, "models": {"G": {"w": torch.randn(3, 3).to_sparse()}}, "rng": [torch.zeros(4, dtype=torch.uint8)]},
               path)
    with pytest.raises(NasPruneError, match=r"not dense tensors: models\.G\.w \(sparse coo\)"):
        loop.load_checkpoint(tmp_path, version=1)


def test_nested_tensors_walks_deep_structures_without_recursion():
    obj: object = torch.zeros(1)
    for _ in range(5000):  # deeper than Python's recursion limit
        obj = [obj]
    found = nested_tensors(obj)
    assert list(found) == [".".join(["0"] * 5000)]
