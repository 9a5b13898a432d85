"""The task table: fields against the data schema, losses against Eqs. 7-10 by hand,
prediction transforms by hand, and the heads the network builds from it."""
import math

import pytest
import torch

from pag_model import PAGNet, TASKS, eval_fields, target_fields, task_loss
from pag_model.heads import BoundaryHead, DenseHead, NormalsHead


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_the_table_names_the_four_tasks_and_the_schema_fields():
    assert list(TASKS) == ["boundary", "semantic", "depth", "normals"]
    assert all(spec.name == name for name, spec in TASKS.items())
    # Field names of pipelines/datasets/schema.py (the batches the data pipeline yields).
    assert target_fields(["semantic", "depth", "normals", "boundary"]) == [
        "semantic", "depth", "depth_valid", "normals", "normals_valid", "boundary"]
    assert eval_fields(["boundary"]) == ["boundary", "boundary_annotators"]
    assert eval_fields(["semantic"]) == ["semantic", "instances"]
    # Optional fields only where the split has them; required ones must be there.
    assert eval_fields(["semantic", "depth"], available=["semantic", "depth", "depth_valid"]) == [
        "semantic", "depth", "depth_valid"]
    with pytest.raises(ValueError, match=r"evaluating 'boundary' needs fields \['boundary_annotators'\]"):
        eval_fields(["boundary"], available=["boundary"])
    with pytest.raises(ValueError, match="unknown task 'edges'; allowed: boundary, semantic, depth, normals"):
        target_fields(["edges"])
    with pytest.raises(ValueError, match="name a task twice"):
        target_fields(["depth", "depth"])


def test_output_channels():
    assert [TASKS[t].channels(40) for t in TASKS] == [1, 40, 1, 3]
    with pytest.raises(ValueError, match="num_classes must be >= 2 for the semantic task, got 1"):
        TASKS["semantic"].channels(1)


def test_table_losses_are_the_papers_equations_by_hand():
    # Eq. 7 on a 1x2 image, one side branch + the fusion: Y = 2 pixels, one positive, so
    # beta+ = |Y-|/|Y| = 1/2 and beta- = 1/2; per branch sum_j beta * -log P(y_j) / |Y|.
    side, fused = torch.tensor([[[[1.0, -2.0]]]]), torch.tensor([[[[0.5, 0.25]]]])
    label = torch.tensor([[[1, 0]]])
    def eq7(l):
        return (0.5 * -math.log(sig(l[0])) + 0.5 * -math.log(1 - sig(l[1]))) / 2
    boundary = eq7([1.0, -2.0]) + eq7([0.5, 0.25])
    # Eq. 8: cross-entropy, label 255 ignored.
    logits = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (1, 2, 1, 2)
    semantic = -math.log(math.exp(1.0) / (math.exp(2.0) + math.exp(1.0)))
    # Eq. 9 (gamma = 2) on log depth: residuals 0.5 and -1 at the valid pixels.
    log_depth = torch.tensor([[[[math.log(3.0) + 0.5, math.log(2.0) - 1.0]]]])
    depth = (0.5**2 + 2 * 0.5 + 1.0**2 + 2 * 1.0) / 2
    # Eq. 10 (lambda = 4): one valid pixel at 90 degrees: -cos + 4 * acos = 0 + 4 * pi / 2.
    normals_pred = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]]]])
    normals_gt = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]])
    normals = 4 * math.pi / 2
    outputs = {"boundary": fused, "boundary_sides": [side], "semantic": logits, "depth": log_depth,
               "normals": normals_pred}
    batch = {
        "boundary": label,
        "semantic": torch.tensor([[[1, 255]]]),
        "depth": torch.tensor([[[3.0, 2.0]]]),
        "depth_valid": torch.tensor([[[True, True]]]),
        "normals": normals_gt,
        "normals_valid": torch.tensor([[[True, False]]]),
    }
    expected = {"boundary": boundary, "semantic": semantic, "depth": depth, "normals": normals}
    for task, value in expected.items():
        assert TASKS[task].loss(outputs, batch).item() == pytest.approx(value, rel=1e-5), task
    weights = {"boundary": 2.0, "depth": 0.5}
    total, parts = task_loss(outputs, batch, list(TASKS), weights)
    assert {t: v.item() for t, v in parts.items()} == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(2 * boundary + semantic + 0.5 * depth + normals, rel=1e-5)


def test_prediction_transforms_by_hand():
    outputs = {
        "semantic": torch.tensor([[[[0.1, 5.0]], [[2.0, -1.0]], [[1.0, 4.0]]]]),  # (1, 3, 1, 2)
        "depth": torch.tensor([[[[0.0, math.log(4.0)]]]]),
        "boundary": torch.tensor([[[[0.0, math.log(3.0)]]]]),
        "normals": torch.tensor([[[[3.0]], [[0.0]], [[4.0]]]]),
    }
    assert TASKS["semantic"].predict(outputs).tolist() == [[[1, 0]]]
    torch.testing.assert_close(TASKS["depth"].predict(outputs), torch.tensor([[[1.0, 4.0]]]))
    torch.testing.assert_close(TASKS["boundary"].predict(outputs), torch.tensor([[[0.5, 0.75]]]))
    torch.testing.assert_close(TASKS["normals"].predict(outputs), torch.tensor([[[[0.6]], [[0.0]], [[0.8]]]]))


def test_network_builds_each_tasks_head_from_the_table():
    net = PAGNet("resnet_tiny", tasks=("normals", "boundary", "depth", "semantic"), num_classes=6)
    assert list(net.heads) == ["normals", "boundary", "depth", "semantic"]
    assert type(net.heads["semantic"]) is DenseHead and net.heads["semantic"].predict.out_channels == 6
    assert type(net.heads["depth"]) is DenseHead and net.heads["depth"].predict.out_channels == 1
    assert type(net.heads["normals"]) is NormalsHead and net.heads["normals"].predict.out_channels == 3
    boundary = net.heads["boundary"]
    assert type(boundary) is BoundaryHead and len(boundary.sides) == 4  # Res2..Res5 (resnet_tiny: 64..512)
    assert [c.in_channels for c in boundary.sides] == [64, 128, 256, 512]
    out = net.eval()(torch.randn(1, 3, 16, 24))
    assert set(out) == {"normals", "boundary", "boundary_sides", "depth", "semantic"}
    # Checkpoints written before the table keep loading: the heads' parameter names are unchanged.
    keys = set(net.state_dict())
    for key in ("heads.semantic.reduce.0.weight", "heads.semantic.deconv.weight", "heads.semantic.predict.bias",
                "heads.normals.conv2.0.weight", "heads.boundary.sides.3.weight", "heads.boundary.side_up.0.weight",
                "heads.boundary.top.predict.weight", "heads.boundary.fuse.weight"):
        assert key in keys, key
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        PAGNet("resnet_tiny", tasks=("semantic",), num_classes=1)
    PAGNet("resnet_tiny", tasks=("depth",), num_classes=0)  # K matters only to the semantic head


def test_semantic_label_changes_by_hand():
    labels = torch.zeros(1, 3, 7, dtype=torch.long)
    labels[:, :, 3] = 255  # an unlabelled band between classes 0 and 2
    labels[:, :, 4:] = 2
    near, counted = TASKS["semantic"].label_changes({"semantic": labels}, 1)
    assert near[0, 0].tolist() == [False, False, False, True, False, False, False]
    assert counted[0, 0].tolist() == [True, True, True, False, True, True, True]
    near, _ = TASKS["semantic"].label_changes({"semantic": labels}, 2)
    assert near[0, 0].tolist() == [False, False, True, True, True, False, False]
    assert not TASKS["semantic"].label_changes({"semantic": torch.full((1, 5, 5), 7)}, 8)[0].any()


def test_boundary_label_changes_are_within_radius_of_any_annotators_boundary():
    ann = torch.zeros(1, 2, 1, 9, dtype=torch.uint8)
    ann[0, 0, 0, 2] = 1  # annotator 1 at x = 2, annotator 2 at x = 7
    ann[0, 1, 0, 7] = 1
    near, counted = TASKS["boundary"].label_changes({"boundary_annotators": ann}, 1)
    assert near[0, 0].tolist() == [False, True, True, True, False, False, True, True, True]
    assert counted.all()
    label = torch.tensor([[[0, 0, 0, 0, 1, 0, 0, 0, 0]]])
    near, _ = TASKS["boundary"].label_changes({"boundary": label}, 2)
    assert near[0, 0].tolist() == [False, False, True, True, True, True, True, False, False]
    assert TASKS["depth"].label_changes is None and TASKS["normals"].label_changes is None


def test_semantic_label_changes_on_one_vertical_edge_and_on_uniform_images():
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    labels[:, :, 4:] = 1  # one vertical edge between columns 3 and 4
    near, _ = TASKS["semantic"].label_changes({"semantic": labels}, 1)
    expected = torch.zeros(1, 4, 8, dtype=torch.bool)
    expected[:, :, 3:5] = True  # the two columns whose 3x3 window sees both labels
    assert torch.equal(near, expected)
    assert not TASKS["semantic"].label_changes({"semantic": torch.full((2, 5, 5), 7)}, 1)[0].any()
    assert not TASKS["semantic"].label_changes({"semantic": torch.full((1, 5, 5), 255)}, 1)[0].any()
