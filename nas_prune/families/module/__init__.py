"""The ``module`` family: one-step pruning of any generator class the user has.

:class:`ModuleFamily` (:mod:`.family`, registered as ``module``) puts the engine below behind
the family protocol, with :class:`ModuleArch` (:mod:`.arch`) as its architecture: the
import spec, args, source hash, trace input and kept indices per group. So ``nas-prune
profile|search|distill|evaluate|export ... --model nets.py:NAME`` work as for a shipped family.
:mod:`.teacher` holds the arch's teacher-shaped module and its traces (cached); :mod:`.groups`
the trace's data, :mod:`.cut` the structural edit.

Point it at your code and weights; nas-prune traces the module once, finds the channels that
must be pruned together (Torch-Pruning's dependency graph, with the corrections listed in
:mod:`.trace` and applied by :mod:`.rules`), scores them (``|gamma|`` or L1, :mod:`.importance`), searches one global
threshold to a MACs target on a closed-form count (:mod:`.macs`, :mod:`.select`), cuts the
module with explicit indices and writes a JSON record from which the student is rebuilt
with the user's code alone (:mod:`.prune`). Importing the user's code *runs* it; weights
are always loaded safely (:mod:`.spec`).

Public API (keyword-only options)::

    from nas_prune.families.module import (
        load_model_spec, load_weights, trace_groups, select_channels, prune_module, rebuild,
        default_taps, measure_macs,
    )
    net, spec, sha = load_model_spec("nets.py:ResnetGenerator", args={"ngf": 16})
    load_weights(net, "latest_net_G.pth")
    x = torch.zeros(1, 3, 256, 256)
    trace = trace_groups(net, x, keep=["head"])           # groups, scores, MACs model
    sel = select_channels(trace, target_macs=2_600_000_000, convention="paper")
    student, record = prune_module(net, sel.kept, example_input=x, keep=["head"], trace=trace,
                                   spec=spec, args={"ngf": 16}, source_sha256=sha)
    same = rebuild(record)                                # from the record + the code alone
    taps = default_taps(trace)                            # children at ~1/4, 1/2, 3/4 of the MACs

* :func:`load_model_spec` ``(spec, *, args, cwd) -> (module, normalised spec, source sha256)``:
  ``nets.py:NAME`` or ``package.module:NAME``; NAME a class or a factory returning an nn.Module.
* :func:`load_weights` ``(module, path)``: strict, safe; mismatches listed in one line.
* :func:`trace_groups` ``(module, example_input, *, keep) -> Trace``: ``trace.groups`` (id
  ``<root path>:out``, units, min multiple, criterion, scores, ``prunable``/``reason``) and
  ``trace.macs`` (``macs(counts, convention=...)``, ``teacher``).
* :func:`select_channels` ``(trace, *, target_macs, convention, min_channels, fill) -> Selection``;
  :func:`group_rows` ``(trace, selection)``: one summary row per group (criterion, or why left whole).
* :func:`prune_module` ``(module, kept, *, example_input, keep, trace, spec, args,
  source_sha256) -> (module, record)``; :func:`rebuild` ``(record, *, source_check,
  allow_changed_source, cwd)``; :func:`check_record`.
* :func:`default_taps` ``(trace) -> [module path]``; :func:`measure_macs` ``(module, x, *,
  convention)`` (fvcore / torchprofile on a real forward pass).
"""

from nas_prune.families.module.arch import ModuleArch
from nas_prune.families.module.family import ModuleFamily  # registers the family
from nas_prune.families.module.macs import MacsModel, measure_macs
from nas_prune.families.module.prune import check_record, default_taps, prune_module, rebuild
from nas_prune.families.module.select import Selection, group_rows, select_channels
from nas_prune.families.module.spec import load_model_spec, load_weights, read_state_dict, sha256_file
from nas_prune.families.module.trace import Group, Trace, trace_groups

__all__ = [
    "Group", "MacsModel", "ModuleArch", "ModuleFamily", "Selection", "Trace", "check_record", "default_taps", "group_rows", "load_model_spec",
    "load_weights", "measure_macs", "prune_module", "read_state_dict", "rebuild", "select_channels",
    "sha256_file", "trace_groups",
]
