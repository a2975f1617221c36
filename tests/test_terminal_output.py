"""Output that survives a terminal: help text, tables at 80 columns and in a pipe, quiet exports."""

from __future__ import annotations

import warnings


def test_onnx_export_prints_no_torch_warnings(tmp_path):
    from nas_prune.arch import Arch, Block
    from nas_prune.deploy import export_generator
    from nas_prune.model import build_generator

    arch = Arch(input_nc=3, output_nc=3, stem=(4, 8, 8), blocks=(Block(res=(4,), dw=(4,)),), head=(8, 4),
                res_kernel_sizes=(3,), dw_kernel_sizes=(3,), norm="instance", affine=False, padding="reflect")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = export_generator(build_generator(arch), out=tmp_path, format="onnx", input_size=16)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    assert [str(w.message) for w in caught] == []
