"""Slice a SPADE teacher's weights by a :class:`~nas_prune.plan.PrunePlan` into its student.

``S(i)`` below is the kept channel list of the stream segment holding stream index ``i``
(:func:`nas_prune.families.spade.plan.stream_segments`); block ``b`` reads ``S(b)`` and writes
``S(b + 1)``; ``m`` is a branch's kept list, ``2fin`` the teacher's gamma/beta rows:

==========================================  ==========================================
tensor                                      sliced by
==========================================  ==========================================
``fc`` ``[c0, label_nc]``, ``fc_norm``       ``S(0)`` (out)
branch first conv ``[m, fin]``, its norm     ``m`` (out), ``S(b)`` (in)
depthwise conv ``[m, 1]``, its norm          ``m``
branch last conv ``[fout, m]``               ``S(b + 1)`` (out), ``m`` (in)
``shortcut.0`` / ``shortcut.1.conv``         ``S(b)`` / ``S(b + 1)`` (out), ``S(b)`` (in)
``spade.param_free_norm``                    ``S(b)``
modulation first convs ``[h, label_nc]``     ``h`` (out); label channels all kept
modulation last conv ``[2 fin, h]``          ``S(b)`` then ``fin + S(b)`` (out), ``h`` (in)
``conv_img`` ``[out_nc, c]``                 ``S(last)`` (in)
==========================================  ==========================================

Running statistics follow their channels; ``num_batches_tracked`` is copied. Dropped
branches and the modulation networks of blocks left without branches are left out. A plan
keeping everything reproduces the teacher tensor for tensor (minus CAT's idle modulation
networks, which the loader already dropped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from nas_prune.families.common import branch_modules as _branch_modules, map_tensors as _map
from nas_prune.families.spade.plan import stream_segments

if TYPE_CHECKING:  # pragma: no cover
    import torch


def spade_slice_state_dict(
    plan, teacher_state_dict: Mapping[str, "torch.Tensor"]
) -> dict[str, "torch.Tensor"]:
    """The student's state dict (CAT's SPADE layout) for ``plan.student_arch()``."""
    t = plan.teacher
    k = plan.kept
    sd = teacher_state_dict
    out: dict[str, "torch.Tensor"] = {}
    student = plan.student_arch()
    seg_of = {i: n for n, seg in enumerate(stream_segments(t)) for i in seg}

    def S(i: int) -> list[int]:
        return list(k[f"stream.{seg_of[i]}"])

    _map(out, sd, "fc_norm", "fc_norm", rows=S(0))
    _map(out, sd, "fc", "fc", rows=S(0))
    for b, (name, tblock) in enumerate(zip(t.block_names, t.blocks)):
        sin, sout, fin = S(b), S(b + 1), t.fin(b)
        for kind, last in (("res", "1.conv"), ("dw", "2.conv")):
            for ti, si, m in _branch_modules(tblock.widths(kind), k, f"{name}.{kind}"):
                src, dst = f"{name}.{kind}_ops.{ti}", f"{name}.{kind}_ops.{si}"
                _map(out, sd, f"{src}.0.conv", f"{dst}.0.conv", rows=m, cols=sin)
                _map(out, sd, f"{src}.0.norm", f"{dst}.0.norm", rows=m)
                if kind == "dw":
                    _map(out, sd, f"{src}.1.conv", f"{dst}.1.conv", rows=m)
                    _map(out, sd, f"{src}.1.norm", f"{dst}.1.norm", rows=m)
                _map(out, sd, f"{src}.{last}", f"{dst}.{last}", rows=sout, cols=m)
        if t.fin(b) != t.fout(b):
            _map(out, sd, f"{name}.shortcut.0", f"{name}.shortcut.0", rows=sin)
            _map(out, sd, f"{name}.shortcut.1.conv", f"{name}.shortcut.1.conv", rows=sout, cols=sin)
        if student.blocks[b].is_identity:
            continue
        sp = f"{name}.spade"
        gamma_beta = sin + [fin + c for c in sin]
        _map(out, sd, f"{sp}.param_free_norm", f"{sp}.param_free_norm", rows=sin)
        for ti, si, h in _branch_modules(tblock.spade_res, k, f"{name}.spade_res"):
            src, dst = f"{sp}.res_ops.{ti}", f"{sp}.res_ops.{si}"
            _map(out, sd, f"{src}.0.conv", f"{dst}.0.conv", rows=h)
            _map(out, sd, f"{src}.0.norm", f"{dst}.0.norm", rows=h)
            _map(out, sd, f"{src}.1", f"{dst}.1", rows=gamma_beta, cols=h)
        for ti, si, h in _branch_modules(tblock.spade_dw, k, f"{name}.spade_dw"):
            src, dst = f"{sp}.dw_ops.{ti}", f"{sp}.dw_ops.{si}"
            _map(out, sd, f"{src}.0.conv", f"{dst}.0.conv", rows=h)
            _map(out, sd, f"{src}.0.norm", f"{dst}.0.norm", rows=h)
            _map(out, sd, f"{src}.1.conv", f"{dst}.1.conv", rows=h)
            _map(out, sd, f"{src}.1.norm", f"{dst}.1.norm", rows=h)
            _map(out, sd, f"{src}.2", f"{dst}.2", rows=gamma_beta, cols=h)
    _map(out, sd, "conv_img", "conv_img", cols=S(t.n_blocks))
    return out
