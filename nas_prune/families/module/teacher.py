"""The teacher-shaped module of a :class:`.arch.ModuleArch` and its traces, cached.

Every question the family answers about an arch (groups, MACs at a size, taps, shapes) is
read from a trace of the module the user's code builds with the arch's args (fresh weights:
structure only), made once per input size and kept in a small LRU. :func:`fresh` refuses a
changed source file, naming both hashes, unless ``--allow-changed-source``
(:data:`nas_prune.families.base.CHANGED_SOURCE_ALLOWED`) or the arch allows it.
"""

from __future__ import annotations

from collections import OrderedDict

from nas_prune.errors import NasPruneError
from nas_prune.families.base import CHANGED_SOURCE_ALLOWED


#: Side of the square input a module is traced at when the command names none.
DEFAULT_TRACE_SIDE = 256


class _Lru(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


TRACES = _Lru(8)     # (code key, input shape) -> Trace of the teacher-shaped module
TEMPLATES = _Lru(8)  # arch -> built module (copied by build)
SHAPES = _Lru(16)    # arch -> {module path: output shape} at the arch's input size
CRITERION: dict = {}  # code key -> the criterion of the last importance run


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:240]}"


def allowed(arch) -> bool:
    """Whether a changed source file may be built for ``arch`` now."""
    return bool(arch.allow_changed_source or CHANGED_SOURCE_ALLOWED.get())


def fresh(arch):
    """The teacher-shaped module from the user's code (fresh weights, eval mode, on the CPU)."""
    import torch

    from nas_prune.families.module.spec import load_model_spec

    with torch.device("cpu"):
        module, _, sha = load_model_spec(arch.model, args=arch.args)
    if sha != arch.source_sha256 and not allowed(arch):
        raise NasPruneError(
            f"the source of {arch.model} changed since this architecture was made (sha256 "
            f"{arch.source_sha256} then, {sha} now); pass --allow-changed-source to build it anyway")
    return module


def trace_of(arch, size: tuple[int, int] | None = None, *, module=None):
    """The trace of the teacher-shaped module at ``size`` (default: the arch's), cached."""
    import torch

    from nas_prune.families.module.trace import trace_groups

    shape = tuple(arch.input_size) if size is None else (1, arch.input_nc, int(size[0]), int(size[1]))
    key = (arch.code_key(), shape, allowed(arch))  # what was built while allowed is not reused unallowed
    if key in TRACES:
        TRACES.move_to_end(key)
        return TRACES[key]
    module = fresh(arch) if module is None else module
    try:
        trace = trace_groups(module, torch.zeros(shape), keep=list(arch.keep))
    except NasPruneError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's forward pass
        raise NasPruneError(f"--input-size {shape[2]}x{shape[3]}: the module does not run at this size "
                            f"({_one_line(err)})") from None
    return TRACES.put(key, trace)


def unit_of(g) -> int:
    return len(g.units[0]) if g.units else 1


def teacher_kept(trace) -> tuple:
    return tuple((g.id, tuple(sorted(r for u in g.units for r in u))) for g in trace.prunable)
