"""Atomic writes and readable JSON."""

from __future__ import annotations

import json

import pytest

from nas_prune.fileio import atomic_path, dumps_readable, write_json
from nas_prune.outputs import MANIFEST


def test_readable_json_round_trips_and_keeps_number_lists_on_one_line():
    obj = {"stem": [16, 31, 59], "blocks": [{"res": [1, 2], "dw": []}], "kept": {"stem.0": list(range(20))},
           "name": "x", "nested": [[1, 2], [3]], "empty": {}, "flag": True, "none": None, "f": 0.5}
    text = dumps_readable(obj)
    assert json.loads(text) == obj
    assert '"stem": [16, 31, 59]' in text
    assert '"stem.0": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]' in text


def test_atomic_path_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": [1]})
    assert json.loads(target.read_text()) == {"a": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "out.json"]
