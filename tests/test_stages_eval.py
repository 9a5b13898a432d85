"""End-of-stage evaluation helpers: the near-boundary mask and the ponder ratio, by hand."""
from __future__ import annotations

import torch

from pipelines.atomic import write_json
from pipelines.scoring import IGNORE, boundary_mask


def test_boundary_mask_hand_example():
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    labels[:, :, 4:] = 1  # one vertical edge between columns 3 and 4
    near = boundary_mask(labels, radius=1)
    expected = torch.zeros(1, 4, 8, dtype=torch.bool)
    expected[:, :, 3:5] = True  # the two columns whose 3x3 window sees both labels
    assert torch.equal(near, expected)


def test_boundary_across_an_unlabelled_band():
    labels = torch.zeros(1, 3, 7, dtype=torch.long)
    labels[:, :, 3] = IGNORE
    labels[:, :, 4:] = 2
    near = boundary_mask(labels, radius=1)
    assert near[:, :, 3].all() and not near[:, :, [0, 1, 2, 4, 5, 6]].any()
    # radius 2: columns 2 and 4 now see both labels too
    assert boundary_mask(labels, radius=2)[0, 0].tolist() == [False, False, True, True, True, False, False]


def test_uniform_or_unlabelled_images_have_no_boundary():
    assert not boundary_mask(torch.full((2, 5, 5), 7)).any()
    assert not boundary_mask(torch.full((1, 5, 5), IGNORE)).any()


def test_write_json_is_atomic(tmp_path):
    path = write_json(tmp_path / "sub" / "metrics.json", {"a": 1.5})
    assert path.read_text().strip().startswith("{") and '"a": 1.5' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
