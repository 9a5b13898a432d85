"""Report figures in the style of the PAG paper: Fig. 1 (input, predictions, ponder map) and
Fig. 5 (accuracy against the computation saved by rho).

- `ponder_figure(image, ponder, layers, path)`: input | ponder map (sum of the binary gate
  masks, Sec. 3.3) on a discrete colour bar of 0..layers gated layers, titled with the mean.
- `prediction_figure(image, targets, predictions, path, class_names, num_classes)`: one row per
  task, input | ground truth | prediction: semantic classes with a legend of the classes
  present, depth in metres on a shared colour bar, normals as RGB, boundaries in grey.
- `front_figure(points, metric, path, time_points)`: the metric against % multiply-adds saved,
  x = 100 (1 - macs_ratio): PAG as a labelled line, baselines by method, the dense control as
  a star, sweep trials as grey dots; a second panel against % wall-clock time saved when
  points carry a `time_ratio`.

Every figure is a `matplotlib.figure.Figure` on an Agg canvas (no pyplot, no global backend),
written atomically by `save_figure` when a path is given, and returned so callers and tests
can read the artists back.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipelines.atomic import atomic_path
from pipelines.datasets.schema import IGNORE, IMAGENET_MEAN, IMAGENET_STD

DPI = 100
PANEL_INCHES = 3.0  # height of one image panel; its width follows the image's aspect ratio
Array = torch.Tensor | np.ndarray


class Point(Protocol):
    """What `front_figure` reads of a point (`pipelines.tracking.front.FrontPoint` has it)."""

    name: str
    cost: float
    score: float
    extra: dict


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG to `path` atomically (hidden temporary, then a rename); returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    return path


def new_figure(width: float, height: float) -> Figure:
    """A Figure of `width` x `height` inches on its own Agg canvas, laid out by constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def denormalise(image: Array) -> np.ndarray:
    """(3, H, W) ImageNet-normalised network input -> (H, W, 3) RGB in [0, 1] for display."""
    x = _numpy(image).astype(np.float64)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {x.shape}")
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    return np.clip(x * std + mean, 0.0, 1.0).transpose(1, 2, 0)


def ponder_figure(image: Array, ponder: Array, layers: int, path: Optional[str | Path] = None) -> Figure:
    """Input beside its ponder map, written to `path` when given.

    Args:
        image: (3, H, W) the network's normalised input.
        ponder: (H, W) number of gated layers that computed each pixel, 0..layers.
        layers: the number of gated layers: the colour bar runs over 0..layers, one colour each.
        path: the PNG to write (atomically); None only builds the figure.
    """
    rgb = denormalise(image)
    ponder = _numpy(ponder).astype(np.float64)
    if ponder.shape != rgb.shape[:2]:
        raise ValueError(f"ponder map must be (H, W) = {rgb.shape[:2]} like the image, got {ponder.shape}")
    if layers < 1 or ponder.min() < 0 or ponder.max() > layers:
        raise ValueError(f"ponder values must lie in 0..layers={layers}, got {ponder.min():g}..{ponder.max():g}")
    h, w = ponder.shape
    fig = new_figure(2 * PANEL_INCHES * w / h + 1.2, PANEL_INCHES + 0.5)
    ax_image, ax_ponder = fig.subplots(1, 2)
    _show(ax_image, rgb, "input")
    cmap = colormaps["viridis"].resampled(layers + 1)
    norm = BoundaryNorm(np.arange(layers + 2) - 0.5, cmap.N)  # one colour per count, centred on it
    shown = _show(ax_ponder, ponder, "ponder map", cmap=cmap, norm=norm)
    bar = fig.colorbar(shown, ax=ax_ponder, ticks=integer_ticks(layers), fraction=0.05, pad=0.02)
    bar.set_label("gated layers computed")
    fig.suptitle(f"mean ponder {ponder.mean():.2f} of {layers} gated layers")
    if path is not None:
        save_figure(fig, path)
    return fig


def integer_ticks(top: int, most: int = 11) -> list[int]:
    """0..top as evenly spaced integers, at most about `most` of them, `top` always included."""
    step = max(1, math.ceil(top / (most - 1)))
    ticks = list(range(0, top + 1, step))
    if ticks[-1] != top:
        if top - ticks[-1] < step / 2:  # too close to the last tick to read both
            ticks.pop()
        ticks.append(top)
    return ticks


def class_palette(num_classes: int) -> np.ndarray:
    """(256, 3) float RGB: qualitative colours by class id (tab10/tab20, or 60 tab20* colours,
    then seeded random ones), black for the ignore label."""
    if num_classes <= 10:
        base = colormaps["tab10"].colors
    elif num_classes <= 20:
        base = colormaps["tab20"].colors
    else:
        base = sum((list(colormaps[n].colors) for n in ("tab20", "tab20b", "tab20c")), [])
    rest = np.random.default_rng(12345).uniform(0.15, 1.0, size=(256 - len(base), 3))
    colours = np.concatenate([np.asarray(base)[:, :3], rest])[:256]
    colours[IGNORE] = 0.0
    return colours


def prediction_figure(
    image: Array,
    targets: Mapping[str, Array],
    predictions: Mapping[str, Array],
    path: Optional[str | Path] = None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
) -> Figure:
    """Input | ground truth | prediction, one row per predicted task, written to `path` when given.

    Args:
        image: (3, H, W) the network's normalised input.
        targets: one image's batch fields: semantic (H, W) ids with IGNORE; depth (H, W) metres
            and depth_valid (H, W); normals (3, H, W) and normals_valid (H, W); boundary (H, W)
            0/1/IGNORE or boundary_annotators (K, H, W).
        predictions: task -> `TaskSpec.predict` of one image: semantic (H, W) ids, depth (H, W)
            metres, normals (3, H, W) unit vectors, boundary (H, W) probabilities.
        class_names: semantic class names by id (ids are shown when None).
        num_classes: semantic classes (default: len(class_names), else the largest id + 1).
    """
    rgb = denormalise(image)
    h, w = rgb.shape[:2]
    rows = list(predictions)
    unknown = [t for t in rows if t not in _ROWS]
    if unknown:
        raise ValueError(f"no picture for tasks {unknown}; known: {sorted(_ROWS)}")
    fig = new_figure(3 * PANEL_INCHES * w / h + 2.4, len(rows) * PANEL_INCHES + 0.4)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for task, (ax_image, ax_target, ax_pred) in zip(rows, axes):
        _show(ax_image, rgb, "input")
        _ROWS[task](fig, ax_target, ax_pred, targets, _numpy(predictions[task]), class_names, num_classes)
        ax_target.set_title(f"{task}: ground truth")
        ax_pred.set_title(f"{task}: prediction")
    if path is not None:
        save_figure(fig, path)
    return fig


def _semantic_row(fig, ax_target, ax_pred, targets, pred, class_names, num_classes) -> None:
    """Class colours by id, one legend (beside the prediction) of the classes in either map."""
    target = _numpy(_field(targets, "semantic")).astype(np.int64)
    pred = pred.astype(np.int64)
    k = num_classes or (len(class_names) if class_names else int(max(target[target != IGNORE].max(initial=0), pred.max())) + 1)
    for name, ids in (("ground truth", target[target != IGNORE]), ("prediction", pred)):
        if ids.size and (ids.min() < 0 or ids.max() >= k):
            raise ValueError(f"semantic {name} has class ids {ids.min()}..{ids.max()}, expected 0..{k - 1} or {IGNORE}")
    palette = class_palette(k)
    _show(ax_target, palette[target])
    _show(ax_pred, palette[pred])
    present = sorted(set(np.unique(target).tolist()) | set(np.unique(pred).tolist()))
    handles = [Patch(facecolor=palette[c], edgecolor="0.3", label=class_label(c, class_names)) for c in present]
    ax_pred.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                   fontsize=7, frameon=False, ncols=1 + len(handles) // 16, title="classes", title_fontsize=8)


def class_label(class_id: int, class_names: Optional[Sequence[str]]) -> str:
    """The legend's name for a class id: its name, else the id; IGNORE is "ignore"."""
    if class_id == IGNORE:
        return "ignore"
    return class_names[class_id] if class_names else str(class_id)


def _depth_row(fig, ax_target, ax_pred, targets, pred, class_names, num_classes) -> None:
    """Ground truth (invalid pixels black) and prediction on one colour scale in metres: the
    valid ground truth's range (the prediction's where none is valid); the bar shows clipping."""
    target = _numpy(_field(targets, "depth")).astype(np.float64)
    valid = _numpy(targets["depth_valid"]).astype(bool) if "depth_valid" in targets else target > 0
    scale = target[valid] if valid.any() else pred
    norm = Normalize(float(scale.min()), float(max(scale.max(), scale.min() + 1e-6)))
    cmap = colormaps["plasma_r"].with_extremes(bad="black")  # near bright, far dark blue
    _show(ax_target, np.ma.masked_array(target, ~valid), cmap=cmap, norm=norm)
    shown = _show(ax_pred, pred, cmap=cmap, norm=norm)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    bar = _side_bar(fig, ax_pred, shown, extend[bool(pred.min() < norm.vmin), bool(pred.max() > norm.vmax)])
    bar.set_label("depth (m)")


def _normals_row(fig, ax_target, ax_pred, targets, pred, class_names, num_classes) -> None:
    """Unit normals (x, y, z) in [-1, 1] shown as RGB (n + 1) / 2; invalid ground truth black."""
    target = _numpy(_field(targets, "normals")).astype(np.float64)
    valid = _numpy(targets["normals_valid"]).astype(bool) if "normals_valid" in targets else np.abs(target).sum(0) > 0
    _show(ax_target, np.clip((target.transpose(1, 2, 0) + 1) / 2, 0, 1) * valid[..., None])
    _show(ax_pred, np.clip((pred.transpose(1, 2, 0) + 1) / 2, 0, 1))


def _boundary_row(fig, ax_target, ax_pred, targets, pred, class_names, num_classes) -> None:
    """Dark on white, 0..1: the annotators' mean (else the label, IGNORE in mid grey) and the
    predicted probability."""
    if "boundary_annotators" in targets:
        target = np.ma.masked_array(_numpy(targets["boundary_annotators"]).astype(np.float64).mean(0))
    else:
        label = _numpy(_field(targets, "boundary"))
        target = np.ma.masked_array((label == 1).astype(np.float64), label == IGNORE)
    cmap = colormaps["gray_r"].with_extremes(bad="0.5")
    _show(ax_target, target, cmap=cmap, norm=Normalize(0, 1))
    shown = _show(ax_pred, pred, cmap=cmap, norm=Normalize(0, 1))
    _side_bar(fig, ax_pred, shown).set_label("boundary probability")


def _side_bar(fig: Figure, ax: Axes, shown, extend: str = "neither"):
    """A colour bar just right of `ax` (where the semantic row has its legend), so that every
    row keeps the same panel sizes; it serves the row's ground truth and prediction alike."""
    return fig.colorbar(shown, cax=ax.inset_axes([1.04, 0.0, 0.045, 1.0]), extend=extend)


_ROWS = {"semantic": _semantic_row, "depth": _depth_row, "normals": _normals_row, "boundary": _boundary_row}

# How each kind of point is drawn on the front; baselines by method (unknown methods get "X").
_BASELINES = {
    "truncated": dict(marker="s", color="C1", label="truncated (fewer layers)"),
    "layer_skip": dict(marker="^", color="C2", label="layer skipping"),
    "static_mask": dict(marker="D", color="C4", label="static mask (PerforatedCNN)"),
}


def front_figure(
    points: Sequence[Point],
    metric: str,
    path: Optional[str | Path] = None,
    time_points: bool = True,
    cost_label: str = "multiply-adds per image",
) -> Figure:
    """Accuracy against computation saved, one panel for multiply-adds and (when any point has
    a finite `extra["time_ratio"]` and `time_points`) one for wall-clock time.

    Args:
        points: FrontPoints; `extra` may carry kind ("pag" when missing, "baseline", "control",
            "trial"), method, macs_ratio (else cost / dense_macs), time_ratio, rho, label (the
            annotation; default "ρ=<rho>", else the name) and on_front (trials: ringed, labelled).
        metric: the score's name, the y axis label.
        path: the PNG to write (atomically); None only builds the figure.
        time_points: draw the wall-clock panel when time ratios exist.
        cost_label: x axis label when some point has no macs ratio: x is then the raw cost.
    """
    ratios = [_macs_ratio(p) for p in points]
    saved = all(r is not None for r in ratios)
    x_macs = [100 * (1 - r) if saved else p.cost for p, r in zip(points, ratios)]
    x_time = [100 * (1 - t) if (t := _number(p.extra.get("time_ratio"))) is not None else None for p in points]
    with_time = time_points and any(x is not None for x in x_time)
    fig = new_figure(12.0 if with_time else 8.0, 4.6)
    axes = fig.subplots(1, 2 if with_time else 1, sharey=True, squeeze=False)[0]
    xlabel = "computation saved (% of dense multiply-adds)" if saved else cost_label
    _draw_front(axes[0], points, x_macs, xlabel)
    if with_time:
        _draw_front(axes[1], points, x_time, "wall-clock time saved (% of dense time)")
    for ax in axes if saved else ():  # 0 % (the dense model) always in view
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, -0.04 * (hi - lo)), hi)
    axes[0].set_ylabel(metric)
    handles = {}
    for ax in axes:  # one legend for both panels, outside them: PAG first, trials last
        lines = sorted(ax.get_lines(), key=lambda line: _KIND_ORDER[line.get_gid()])
        handles.update({line.get_label(): line for line in lines if line.get_label() not in handles})
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    fig.suptitle(f"{metric} vs computation saved" if saved else f"{metric} vs {cost_label}")
    if path is not None:
        save_figure(fig, path)
    return fig


def _draw_front(ax: Axes, points: Sequence[Point], xs: Sequence[Optional[float]], xlabel: str) -> None:
    """Every point with an x (None: left out of this panel), drawn by kind; each kind's Line2D
    carries the kind as its gid (the figure's legend orders by it)."""
    groups: dict[tuple[str, str], list[tuple[float, Point]]] = {}
    for p, x in zip(points, xs):
        if x is not None:
            kind = p.extra.get("kind", "pag")
            if kind not in _KIND_ORDER:
                raise ValueError(f"front point {p.name!r} has kind {kind!r}; expected one of {sorted(_KIND_ORDER)}")
            groups.setdefault((kind, p.extra.get("method", kind)), []).append((x, p))
    for (kind, method), members in sorted(groups.items(), key=lambda g: -_KIND_ORDER[g[0][0]]):
        members.sort(key=lambda m: m[0])
        x, y = [m[0] for m in members], [m[1].score for m in members]
        if kind == "trial":
            ax.plot(x, y, ls="none", marker="o", ms=3.5, color="0.65", label="sweep trials", zorder=1, gid="trial")
            front = [m for m in members if m[1].extra.get("on_front")]
            if front:
                ax.plot([m[0] for m in front], [m[1].score for m in front], ls="none", marker="o", ms=9,
                        mfc="none", mec="C3", mew=1.4, label="Pareto front (trials)", zorder=2, gid="trial")
                _annotate(ax, front, "C3")
        elif kind == "control":
            label = method if method != "control" else "dense"
            ax.plot(x, y, ls="none", marker="*", ms=16, color="gold", mec="k", label=label, zorder=4, gid="control")
        elif kind == "baseline":
            style = _BASELINES.get(method, dict(marker="X", color="C5", label=method))
            ax.plot(x, y, ls="--", lw=1, ms=7, **style, zorder=3, gid="baseline")
        else:
            ax.plot(x, y, ls="-", lw=1.8, marker="o", ms=7, color="C0", label="PAG", zorder=3, gid="pag")
            _annotate(ax, members, "C0")
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.35)


_KIND_ORDER = {"pag": 0, "baseline": 1, "control": 2, "trial": 3}  # legend order; drawn in reverse


def _annotate(ax: Axes, members: Sequence[tuple[float, Point]], colour: str) -> None:
    for x, p in members:
        ax.annotate(point_text(p), (x, p.score), xytext=(5, 5), textcoords="offset points", fontsize=8, color=colour)


def point_text(point: Point) -> str:
    """A point's annotation: extra["label"], else "ρ=<rho>", else its name."""
    if "label" in point.extra:
        return str(point.extra["label"])
    rho = _number(point.extra.get("rho"))
    return f"ρ={rho:g}" if rho is not None else point.name


def _macs_ratio(point: Point) -> Optional[float]:
    """Multiply-adds as a fraction of dense: extra["macs_ratio"], else cost / extra["dense_macs"]."""
    ratio = _number(point.extra.get("macs_ratio"))
    dense = _number(point.extra.get("dense_macs"))
    if ratio is None and dense:
        ratio = point.cost / dense
    return ratio


def _number(value: Any) -> Optional[float]:
    """`value` as a finite float, None for missing, NaN, infinite or non-numbers ("" from a CSV)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _show(ax: Axes, picture: np.ndarray, title: Optional[str] = None, **kwargs):
    """imshow with square pixels and no ticks; returns the AxesImage."""
    shown = ax.imshow(picture, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return shown


def _field(targets: Mapping[str, Array], key: str) -> Array:
    if key not in targets:
        raise ValueError(f"the {key!r} row needs targets[{key!r}]; targets have {sorted(targets)}")
    return targets[key]


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
