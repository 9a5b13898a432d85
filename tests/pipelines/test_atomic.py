"""The one atomic-write helper: complete files or none, temporaries cleaned up."""
from __future__ import annotations

import pytest

from pipelines.atomic import TEMP_TAG, atomic_path, write_json


def test_write_json_is_atomic_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "sub" / "metrics.json", {"a": 1.5})
    assert path.read_text().strip().startswith("{") and '"a": 1.5' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = write_json(tmp_path / "m.json", {"old": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert TEMP_TAG in tmp.name and tmp.name.startswith(".") and tmp.suffix == ".json"
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert '"old": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
