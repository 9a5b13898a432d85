"""Report figures read back: the PNG written whole, the colour scales, legends and point
positions against hand-worked values (the artists of the returned Figure, not pixels)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.pictures import (
    denormalise,
    front_figure,
    integer_ticks,
    ponder_figure,
    prediction_figure,
)
from pipelines.sweeps.plot import as_drawn
from pipelines.tracking.front import FrontPoint

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
PNG = b"\x89PNG\r\n\x1a\n"


def normalised(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (3, H, W) the way the data pipeline normalises it."""
    return torch.tensor(((rgb - MEAN) / STD).transpose(2, 0, 1), dtype=torch.float32)


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG
    return Image.open(path).size


def only_png(tmp_path, name):
    """The directory holds just `name`: the atomic write left no temporary."""
    assert [p.name for p in tmp_path.iterdir()] == [name]
    return tmp_path / name


def test_denormalise_undoes_imagenet_normalisation_and_clips():
    rgb = np.zeros((2, 2, 3))
    rgb[0, 0] = (1.0, 0.5, 0.0)
    image = normalised(rgb)
    image[:, 1, 1] = 10.0  # beyond 1 after de-normalising: clipped
    shown = denormalise(image)
    assert shown.shape == (2, 2, 3)
    np.testing.assert_allclose(shown[0, 0], (1.0, 0.5, 0.0), atol=1e-6)
    np.testing.assert_allclose(shown[1, 1], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        denormalise(torch.zeros(2, 2, 3))


@pytest.mark.parametrize("h, w", [(20, 40), (40, 20)])
def test_ponder_figure_scale_is_the_gated_layers_and_title_the_mean(tmp_path, h, w):
    ponder = torch.zeros(h, w)
    ponder[: h // 2, : w // 2] = 4  # a quarter of the pixels ran 4 layers: mean 1.00
    fig = ponder_figure(normalised(np.full((h, w, 3), 0.5)), ponder, 5, tmp_path / "ponder_00.png")
    size = png_size(only_png(tmp_path, "ponder_00.png"))
    assert size == tuple(round(v) for v in fig.get_size_inches() * fig.dpi)
    image_ax, ponder_ax = fig.axes[:2]
    for ax in (image_ax, ponder_ax):  # square pixels: the panel has the image's aspect ratio
        box = ax.get_window_extent()
        assert box.width / box.height == pytest.approx(w / h, rel=0.03)
    drawn = ponder_ax.images[0]
    np.testing.assert_array_equal(drawn.get_array(), ponder.numpy())
    bar = drawn.colorbar
    assert list(bar.get_ticks()) == [0, 1, 2, 3, 4, 5]
    # One colour per count 0..5, centred on it: bins -0.5..5.5, six distinct colours.
    np.testing.assert_allclose(bar.norm.boundaries, [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    colours = {tuple(drawn.cmap(drawn.norm(k))) for k in range(6)}
    assert len(colours) == 6
    assert "1.00" in fig.get_suptitle() and "5 gated layers" in fig.get_suptitle()


def test_ponder_figure_rejects_values_beyond_the_layers_and_other_shapes():
    image = normalised(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="0..layers=3"):
        ponder_figure(image, torch.full((4, 4), 4.0), 3)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        ponder_figure(image, torch.zeros(4, 5), 3)


def test_integer_ticks_cover_zero_to_top():
    assert integer_ticks(1) == [0, 1]
    assert integer_ticks(9) == list(range(10))
    assert integer_ticks(20) == list(range(0, 21, 2))
    assert integer_ticks(21) == [0, 3, 6, 9, 12, 15, 18, 21]  # step 3 reaches 21 exactly
    assert integer_ticks(22) == [0, 3, 6, 9, 12, 15, 18, 22]  # 21 too close to 22: replaced
    assert integer_ticks(23) == [0, 3, 6, 9, 12, 15, 18, 21, 23]  # 2 from 21: both kept


def semantic_maps():
    target = torch.zeros(6, 8, dtype=torch.int64)
    target[:, 4:] = 2
    target[0] = 255
    pred = torch.zeros(6, 8, dtype=torch.int64)
    pred[:, 6:] = 3
    return target, pred  # classes present: 0, 2, 3 and ignore


def test_semantic_legend_lists_exactly_the_classes_present_by_name(tmp_path):
    target, pred = semantic_maps()
    names = ["wall", "floor", "chair", "table", "door"]
    fig = prediction_figure(normalised(np.zeros((6, 8, 3))), {"semantic": target}, {"semantic": pred},
                            tmp_path / "pred_00.png", class_names=names, num_classes=5)
    png_size(only_png(tmp_path, "pred_00.png"))
    image_ax, target_ax, pred_ax = fig.axes
    legend = pred_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["wall", "chair", "table", "ignore"]
    patches = {t.get_text(): p.get_facecolor()[:3] for t, p in zip(legend.get_texts(), legend.get_patches())}
    assert patches["ignore"] == (0.0, 0.0, 0.0)
    # The legend's colours are the ones painted: GT pixel (1, 5) is class 2, row 0 is ignore.
    painted = target_ax.images[0].get_array()
    np.testing.assert_allclose(painted[1, 5], patches["chair"])
    np.testing.assert_allclose(painted[0, 0], (0, 0, 0))
    np.testing.assert_allclose(pred_ax.images[0].get_array()[3, 7], patches["table"])
    assert len({patches[n] for n in patches}) == 4


def test_semantic_legend_uses_ids_without_names_and_checks_them():
    target, pred = semantic_maps()
    fig = prediction_figure(normalised(np.zeros((6, 8, 3))), {"semantic": target}, {"semantic": pred}, num_classes=4)
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["0", "2", "3", "ignore"]
    with pytest.raises(ValueError, match="0..2"):
        prediction_figure(normalised(np.zeros((6, 8, 3))), {"semantic": target}, {"semantic": pred}, num_classes=3)


def test_depth_row_shares_one_scale_in_metres_and_hides_invalid_pixels():
    depth = torch.tensor([[1.0, 2.0], [3.0, 40.0]])
    valid = torch.tensor([[True, True], [True, False]])  # the 40 m pixel is invalid
    pred = torch.tensor([[1.5, 2.0], [3.5, 0.5]])
    targets = {"semantic": torch.zeros(2, 2, dtype=torch.int64), "depth": depth, "depth_valid": valid}
    fig = prediction_figure(normalised(np.zeros((2, 2, 3))), targets,
                            {"semantic": torch.zeros(2, 2, dtype=torch.int64), "depth": pred}, num_classes=2)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "input", "semantic: ground truth", "semantic: prediction", "input", "depth: ground truth", "depth: prediction",
    ]
    target_image, pred_image = axes[4].images[0], axes[5].images[0]
    # Scale = the valid ground truth's range, 1..3 m, for both panels.
    for drawn in (target_image, pred_image):
        assert (drawn.norm.vmin, drawn.norm.vmax) == (1.0, 3.0)
    assert target_image.colorbar is None and pred_image.colorbar.ax.get_ylabel() == "depth (m)"
    assert pred_image.colorbar.extend == "both"  # 0.5 m and 3.5 m lie outside 1..3
    assert np.ma.getmaskarray(target_image.get_array()).tolist() == [[False, False], [False, True]]


def test_only_predicted_tasks_get_rows_normals_as_rgb_boundary_grey():
    n = torch.zeros(3, 2, 2)
    n[2] = 1.0  # every normal (0, 0, 1): RGB (0.5, 0.5, 1)
    targets = {"normals": n, "normals_valid": torch.tensor([[True, False], [True, True]]),
               "boundary": torch.tensor([[0, 1], [255, 0]])}
    fig = prediction_figure(normalised(np.zeros((2, 2, 3))), targets,
                            {"normals": n, "boundary": torch.tensor([[0.1, 0.9], [0.2, 0.3]])})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["input", "normals: ground truth", "normals: prediction",
                      "input", "boundary: ground truth", "boundary: prediction"]
    normals_gt = fig.axes[1].images[0].get_array()
    np.testing.assert_allclose(normals_gt[0, 0], (0.5, 0.5, 1.0))
    np.testing.assert_allclose(normals_gt[0, 1], (0, 0, 0))  # invalid: black
    boundary_gt = fig.axes[4].images[0]
    assert boundary_gt.cmap.name.startswith("gray")
    assert np.ma.getmaskarray(boundary_gt.get_array()).tolist() == [[False, False], [True, False]]
    with pytest.raises(ValueError, match="no picture for tasks"):
        prediction_figure(normalised(np.zeros((2, 2, 3))), {}, {"flow": n})
    with pytest.raises(ValueError, match="targets\\['depth'\\]"):
        prediction_figure(normalised(np.zeros((2, 2, 3))), {}, {"depth": n[0]})


def F(name, score, macs_ratio=None, **extra):
    if macs_ratio is not None:
        extra["macs_ratio"] = macs_ratio
    return FrontPoint(name, 1e9 * (macs_ratio or 1.0), score, extra)


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_front_puts_points_at_percent_saved_by_kind(tmp_path):
    points = [
        F("rho-0_5", 0.40, 0.5, rho=0.5),  # no kind: PAG, as today's curriculum points
        F("rho-0_9", 0.46, 0.9, kind="pag", method="pag", rho=0.9),
        F("rho-0_7", 0.44, 0.7, kind="pag", rho=0.7),
        F("trunc-0_7", 0.38, 0.7, kind="baseline", method="truncated"),
        F("skip-0_5", 0.30, 0.5, kind="baseline", method="layer_skip"),
        F("dense", 0.47, 1.0, kind="control", method="dense"),
        FrontPoint("t1", 8e8, 0.35, {"kind": "trial", "dense_macs": 1e9}),  # ratio 0.8 from dense_macs
    ]
    fig = front_figure(points, "semantic/miou", tmp_path / "front.png")
    png_size(only_png(tmp_path, "front.png"))
    assert len(fig.axes) == 1  # no time ratios: no time panel
    ax = fig.axes[0]
    lines = lines_by_label(ax)
    assert set(lines) == {"PAG", "truncated (fewer layers)", "layer skipping", "dense", "sweep trials"}
    np.testing.assert_allclose(lines["PAG"].get_xdata(), [10, 30, 50])  # sorted by saving
    np.testing.assert_allclose(lines["PAG"].get_ydata(), [0.46, 0.44, 0.40])
    np.testing.assert_allclose(lines["truncated (fewer layers)"].get_xdata(), [30])
    np.testing.assert_allclose(lines["layer skipping"].get_xdata(), [50])
    np.testing.assert_allclose(lines["dense"].get_xdata(), [0])
    assert lines["dense"].get_marker() == "*"
    np.testing.assert_allclose(lines["sweep trials"].get_xdata(), [20])
    assert len({lines[k].get_marker() for k in ("PAG", "truncated (fewer layers)", "layer skipping", "dense")}) == 4
    assert sorted(t.get_text() for t in ax.texts) == ["ρ=0.5", "ρ=0.7", "ρ=0.9"]
    assert [t.get_text() for t in fig.legends[0].get_texts()][0] == "PAG"
    assert "computation saved (%" in ax.get_xlabel() and ax.get_ylabel() == "semantic/miou"


def test_front_time_panel_leaves_out_points_without_a_time_ratio():
    points = [
        F("a", 0.46, 0.9, rho=0.9, time_ratio=0.95),
        F("b", 0.44, 0.7, rho=0.7, time_ratio=float("nan")),
        F("c", 0.40, 0.5, rho=0.5, time_ratio=0.75),
        F("d", 0.38, 0.7, kind="baseline", method="truncated"),
        F("dense", 0.47, 1.0, kind="control", method="dense", time_ratio=1.0),
    ]
    fig = front_figure(points, "semantic/miou")
    macs_ax, time_ax = fig.axes
    np.testing.assert_allclose(lines_by_label(macs_ax)["PAG"].get_xdata(), [10, 30, 50])
    time_lines = lines_by_label(time_ax)
    assert set(time_lines) == {"PAG", "dense"}
    np.testing.assert_allclose(time_lines["PAG"].get_xdata(), [5, 25])
    np.testing.assert_allclose(time_lines["dense"].get_xdata(), [0])
    assert "wall-clock" in time_ax.get_xlabel()
    assert len(front_figure(points, "m", time_points=False).axes) == 1


def test_front_without_macs_ratios_falls_back_to_the_raw_cost():
    points = [FrontPoint("a", 1.0, 0.5), FrontPoint("b", 2.0, 0.7)]
    ax = front_figure(points, "mIoU", cost_label="multiply-adds per image").axes[0]
    np.testing.assert_allclose(lines_by_label(ax)["PAG"].get_xdata(), [1.0, 2.0])
    assert ax.get_xlabel() == "multiply-adds per image"
    with pytest.raises(ValueError, match="kind 'bogus'"):
        front_figure([FrontPoint("a", 1.0, 0.5, {"kind": "bogus"})], "m")


def test_sweep_points_are_drawn_as_trials_and_curriculum_as_pag():
    trial = FrontPoint("t1", 5.0, 0.4, {"source": "trial", "rho": 0.5, "lam": 1e-3, "macs_ratio": 0.5})
    stage = FrontPoint("curriculum-rho-0_7", 7.0, 0.45, {"source": "curriculum", "rho": 0.7, "macs_ratio": 0.7})
    baseline = FrontPoint("trunc", 6.0, 0.3, {"source": "trial", "kind": "baseline", "method": "truncated"})
    drawn = [as_drawn(trial, True), as_drawn(stage, False), as_drawn(baseline, False)]
    assert [(d.extra["kind"], d.extra["on_front"]) for d in drawn] == [("trial", True), ("pag", False), ("baseline", False)]
    assert drawn[0].extra["label"] == "ρ=0.5, λ=1e-03" and trial.extra.get("kind") is None  # input untouched
    ax = front_figure(drawn[:2], "mIoU").axes[0]
    lines = lines_by_label(ax)
    np.testing.assert_allclose(lines["Pareto front (trials)"].get_xdata(), [50])
    assert math.isclose(lines["PAG"].get_xdata()[0], 30)


def test_scoring_writes_both_figures_per_image_under_the_old_names(tmp_path):
    from pag_model import PAGNet
    from pipelines.scoring import evaluate_model

    net = PAGNet("resnet_tiny", tasks=("semantic", "depth"), num_classes=3, multipool=None, gated=("res4", "res5"))
    batches = [{
        "image": torch.randn(1, 3, 30, 61),
        "semantic": torch.randint(0, 3, (1, 30, 61)),
        "depth": torch.rand(1, 30, 61) + 1,
        "depth_valid": torch.ones(1, 30, 61, dtype=torch.bool),
    } for _ in range(3)]
    metrics = evaluate_model(net, batches, ("semantic", "depth"), 3, png_dir=tmp_path, max_pngs=2,
                             class_names=["wall", "floor", "chair"])
    assert "semantic/miou" in metrics and "depth/delta1" in metrics
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ponder_00.png", "ponder_01.png", "pred_00.png", "pred_01.png"]
    for name in names:
        width, height = png_size(tmp_path / name)
        assert width > height  # the 61 x 30 image's panels side by side
