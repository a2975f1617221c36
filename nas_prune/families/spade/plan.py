"""One-step pruning of inception SPADE generators: what is pruned, and the MACs formula.

What CAT prunes (``utils/common.py: shrink_spade_model``, ``utils/prune.py: get_bn_to_prune``)
and how it appears here, all under one global threshold ``t`` on ``|gamma|``:

* **the first conv of every res and dw branch of every block**, and **the first conv of
  every res and dw branch of every modulation network** (``B.res_ops.i.0.norm``,
  ``B.dw_ops.i.0.norm``, ``B.spade.res_ops.i.0.norm``, ``B.spade.dw_ops.i.0.norm``: all
  affine batch norms): a branch keeps its channels with ``|gamma| > t`` and may reach 0.
  Layer names ``B.res.J``, ``B.dw.J``, ``B.spade_res.J``, ``B.spade_dw.J`` (``J`` the
  kernel-size slot). The depthwise conv of a dw branch follows its 1x1 conv's channels.
* **the stream widths (CAT's ngf)**, by ``fc_norm``'s ``|gamma|`` under the same
  threshold (layer ``stream.0``): CAT keeps ``max(count(|gamma| > t) // d, prune_cin_lb) * d``
  channels after ``fc`` (``d = 16``, 32 for ``most``) and rebuilds every block at that
  ngf, so every stream width keeps its ratio to the teacher's (1024 : 512 : 256 : 128 : 64).
  Here ``d`` is the smallest multiple that keeps all ratios integral (16 / 32 for CAT's
  teachers), the floor is ``min_channels * d`` (CAT's ``--prune_cin_lb 16``: ngf >= 16),
  and the other stream segments (``stream.1`` .. after each learned shortcut) follow
  ``stream.0``'s width; they are not thresholded.

What keeps its width: ``fc``'s input (the label channels), ``conv_img``'s output, the
``2 * fin`` gamma/beta outputs of the modulation networks (they follow the stream), and the
ratios between stream widths. A block left without res/dw branches returns
``shortcut(x)``; its modulation network never runs and is dropped with it.

Departures from CAT, and why:

* CAT re-initialises the pruned student; here it inherits the teacher's weights, so each
  stream segment must choose which channels it keeps. ``stream.0`` keeps its top
  ``fc_norm`` ``|gamma|``; the later segments (whose channels no affine norm scales right
  after they are made) keep their top channels by the importance criterion's score for
  them (:mod:`nas_prune.families.spade.importance`).
* CAT bisects ``t`` on floats and profiles each candidate; here the exact search over the
  sorted scores of :mod:`nas_prune.plan` runs on :class:`SpadeMacsFormula`, and the fill
  pass may add channels below the threshold (``fill=False`` gives CAT's plain threshold).
"""

from __future__ import annotations

import math
from typing import Mapping

from nas_prune.errors import NasPruneError
from nas_prune.families.common import check_convention
from nas_prune.families.common import PrunableLayer
from nas_prune.families.spade.arch import BRANCH_KINDS, SpadeArch, SpadeBlock
from nas_prune.families.spade.macs import check_spade_size


def stream_segments(arch: SpadeArch) -> list[list[int]]:
    """Stream indices grouped by coupling: ``i`` and ``i + 1`` share channels when block ``i``
    adds its input unchanged (``fin == fout``, no learned shortcut)."""
    segments = [[0]]
    for i in range(arch.n_blocks):
        if arch.fin(i) == arch.fout(i):
            segments[-1].append(i + 1)
        else:
            segments.append([i + 1])
    return segments


def stream_unit(arch: SpadeArch) -> int:
    """Smallest granularity ``d`` of ``stream.0`` keeping every segment's ratio to it integral."""
    t0 = arch.stream[0]
    d = 1
    for seg in stream_segments(arch)[1:]:
        tk = arch.stream[seg[0]]
        d = math.lcm(d, t0 // math.gcd(t0, tk))
    return d


def spade_prunable_layers(arch: SpadeArch) -> list[PrunableLayer]:
    """``stream.0`` (thresholded), ``stream.K`` (follow ``stream.0``), then every branch in forward order."""
    segs = stream_segments(arch)
    layers = [PrunableLayer("stream.0", "stream", arch.stream[0], 0, unit=stream_unit(arch))]
    layers += [
        PrunableLayer(f"stream.{k}", "stream", arch.stream[seg[0]], k, follows="stream.0")
        for k, seg in enumerate(segs) if k > 0
    ]
    for n, (name, block) in enumerate(zip(arch.block_names, arch.blocks)):
        for kind in BRANCH_KINDS:
            for j, w in enumerate(block.widths(kind)):
                if w > 0:
                    layers.append(PrunableLayer(f"{name}.{kind}.{j}", kind, w, j, n))
    return layers


def spade_complete_widths(teacher: SpadeArch, widths: Mapping[str, int]) -> dict[str, int]:
    """``widths`` with the followed stream widths set from ``stream.0`` (same ratios as the
    teacher) and the modulation branches of blocks without res/dw branches set to 0."""
    out = dict(widths)
    w0, t0 = out["stream.0"], teacher.stream[0]
    for k, seg in enumerate(stream_segments(teacher)):
        if k:
            out[f"stream.{k}"] = w0 * teacher.stream[seg[0]] // t0
    for name, block in zip(teacher.block_names, teacher.blocks):
        alive = any(out.get(f"{name}.{kind}.{j}", 0) for kind in ("res", "dw") for j in range(len(block.res)))
        if not alive:
            for kind in ("spade_res", "spade_dw"):
                for j, w in enumerate(block.widths(kind)):
                    if w:
                        out[f"{name}.{kind}.{j}"] = 0
    return out


def spade_arch_from_widths(teacher: SpadeArch, widths: Mapping[str, int]) -> SpadeArch:
    """The student of ``teacher`` with these prunable-layer widths (missing branches are 0)."""
    widths = spade_complete_widths(teacher, widths)
    stream = [0] * len(teacher.stream)
    for k, seg in enumerate(stream_segments(teacher)):
        for i in seg:
            stream[i] = widths[f"stream.{k}"]
    blocks = []
    for name, block in zip(teacher.block_names, teacher.blocks):
        blocks.append(SpadeBlock(**{
            kind: tuple(widths.get(f"{name}.{kind}.{j}", 0) for j in range(len(block.widths(kind))))
            for kind in BRANCH_KINDS
        }))
    return teacher.with_widths(stream=stream, blocks=blocks)


def spade_student_widths(student: SpadeArch, teacher: SpadeArch) -> dict[str, int]:
    """The student's width for every prunable layer name of ``teacher``."""
    out = {}
    segs = stream_segments(teacher)
    for layer in spade_prunable_layers(teacher):
        if layer.kind == "stream":
            out[layer.name] = student.stream[segs[layer.index][0]]
        else:
            out[layer.name] = student.blocks[layer.block].widths(layer.kind)[layer.index]
    return out


def spade_layer_rule(layer: PrunableLayer, min_channels: int, round_to: int | None, teacher: SpadeArch) -> tuple[int, int]:
    """``(step, floor)`` of a thresholded layer: widths are multiples of ``step``, at least ``floor``.

    Branches: ``step = round_to`` (or 1), no floor. ``stream.0``: ``step`` is ``unit`` times
    what makes every stream width a multiple of ``round_to``; the floor is
    ``min_channels * unit`` rounded up to a step and capped at the teacher's width.
    """
    r = round_to or 1
    if layer.kind != "stream":
        return r, 0
    unit = layer.unit
    t0 = teacher.stream[0]
    q = 1
    for seg in stream_segments(teacher):
        u_k = unit * teacher.stream[seg[0]] // t0
        q = math.lcm(q, r // math.gcd(r, u_k))
    step = unit * q
    floor = min(layer.width, -(-min_channels * unit // step) * step)
    return step, floor


class SpadeMacsFormula:
    """MACs of one SPADE teacher's students as a closed formula of the widths.

    Equal to :func:`nas_prune.macs.count_macs` of :func:`spade_arch_from_widths` exactly (a
    test checks it), without building an architecture. ``widths`` must be completed
    (:func:`spade_complete_widths`).
    """

    def __init__(self, teacher: SpadeArch, *, input_size=256, convention: str = "fvcore"):
        check_convention(convention)
        H, W = check_spade_size(teacher, input_size)
        self.fv = convention == "fvcore"
        self.teacher = teacher
        n = teacher.n_upsampling
        self.p0 = (H >> n) * (W >> n)
        self.pf = H * W
        self.segs = {i: k for k, seg in enumerate(stream_segments(teacher)) for i in seg}
        self.blocks = []
        for i, (name, block, s) in enumerate(zip(teacher.block_names, teacher.blocks, teacher.block_scales())):
            slots = {kind: [(f"{name}.{kind}.{j}", k) for j, (k, w) in enumerate(zip(teacher.kernel_sizes, block.widths(kind))) if w]
                     for kind in BRANCH_KINDS}
            self.blocks.append((self.p0 * s * s, teacher.upsampled_before(i), self.segs[i], self.segs[i + 1], slots))

    def __call__(self, widths: Mapping[str, int]) -> int:
        fv, L = self.fv, self.teacher.label_nc
        a1, a0 = (2, 1) if fv else (1, 0)  # per-element charge of an affine / affine-free batch norm
        rs = 1 if fv else 0  # resize / upsample
        ml = 0 if fv else 1  # modulation multiply, final leaky_relu
        c0 = widths["stream.0"]
        total = (rs * L + c0 * L * 9 + a1 * c0) * self.p0
        for p, up, sin, sout, slots in self.blocks:
            fin, fout = widths[f"stream.{sin}"], widths[f"stream.{sout}"]
            cost = rs * fin if up else 0
            body = 0
            for name, k in slots["res"]:
                m = widths.get(name, 0)
                body += m * (fin * k * k + a1 + fout * k * k)
            for name, k in slots["dw"]:
                m = widths.get(name, 0)
                body += m * (fin + a1 + k * k + a0 + fout)
            if body:
                mod = 0
                for name, k in slots["spade_res"]:
                    h = widths.get(name, 0)
                    mod += h * (L * k * k + a1 + 2 * fin * k * k)
                for name, k in slots["spade_dw"]:
                    h = widths.get(name, 0)
                    mod += h * (L + a1 + k * k + a1 + 2 * fin)
                cost += body + mod + a0 * fin + ml * fin + (rs * L if mod else 0)
            if sin != sout:
                cost += a1 * fin + fin * fout
            total += cost * p
        c = widths[f"stream.{self.segs[len(self.teacher.stream) - 1]}"]
        total += (ml * c + c * self.teacher.output_nc * 9) * self.pf
        return total


def check_spade_criterion(name: str) -> None:
    if name == "activation":
        raise NasPruneError(
            "importance activation: not available for SPADE generators (it needs semantic-map calibration "
            "inputs); use gamma (CAT's) or l1"
        )
