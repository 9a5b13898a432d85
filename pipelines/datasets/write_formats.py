"""Write generated scenes in each dataset's real on-disk format.

`write_dataset(name, root, ...)` renders scenes (`scenes.render_scene`) and writes them the
way the publisher ships the dataset, so every reader runs end to end on them:

- bsds500:      BSR/BSDS500/data/{images,groundTruth}/<split>/<id>.{jpg,mat}, v5 .mat with
                K annotators who disagree on which same-class regions to merge;
- nyuv2:        nyu_depth_v2_labeled.mat as MATLAB v7.3 (HDF5, reversed axes), splits.mat
                and a classMapping40.mat whose raw ids are a seeded shuffle (not identity);
- stanford2d3d: area_*/pano/{rgb,depth,normal,semantic}/... PNGs + assets/semantic_labels.json;
- cityscapes:   leftImg8bit, gtFine labelIds/instanceIds, 16-bit disparity and camera json.

`planned_scenes` lists what `write_dataset` writes (split, sample id, scene seed, kind, size)
so tests can re-render the exact ground truth with `render_scene`. Every file is written
atomically. The format-specific encoders live in `encoders.py`.

    python -m pipelines.datasets.write_formats --dataset nyuv2 --out data/nyuv2 \
        --split train=16 --split test=4 --size 240x320 --seed 0
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.datasets import encoders
from pipelines.datasets.scenes import Scene, render_scene

DEFAULT_SPLITS = {
    "bsds500": {"train": 3, "val": 2, "test": 2},
    "nyuv2": {"train": 3, "test": 2},
    "stanford2d3d": {"train": 3, "val": 2},
    "cityscapes": {"train": 3, "val": 2, "test": 1},
}
DEFAULT_SIZES = {"bsds500": (64, 96), "nyuv2": (60, 80), "stanford2d3d": (128, 256), "cityscapes": (64, 128)}
STANFORD_AREAS = {"train": ("area_1", "area_2", "area_5a", "area_5b", "area_6"), "val": ("area_3", "area_4")}
CITIES = {"train": "aachen", "val": "frankfurt", "test": "berlin"}


@dataclass(frozen=True)
class PlannedScene:
    """One scene `write_dataset` writes: re-render it with render_scene(seed, size, kind)."""

    split: str
    index: int
    sample_id: str
    seed: int
    kind: str
    size: tuple[int, int]

    def render(self) -> Scene:
        return render_scene(self.seed, self.size, self.kind)


def _stanford_stem(seed: int, index: int) -> str:
    rng = np.random.default_rng([seed, index, 7])
    uuid = "".join(f"{v:02x}" for v in rng.integers(0, 256, 16))
    return f"camera_{uuid}_office_{index % 7 + 1}_{index}_frame_equirectangular_domain"


def planned_scenes(
    name: str,
    n_per_split: dict[str, int] | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
) -> list[PlannedScene]:
    """The scenes `write_dataset` with the same arguments writes, in writing order."""
    if name not in DEFAULT_SPLITS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DEFAULT_SPLITS)}")
    splits = DEFAULT_SPLITS[name] if n_per_split is None else n_per_split
    bad = sorted(set(splits) - set(DEFAULT_SPLITS[name]))
    if bad:
        raise ValueError(f"{name}: unknown split(s) {bad}; expected keys from {list(DEFAULT_SPLITS[name])}")
    size = tuple(int(v) for v in (size or DEFAULT_SIZES[name]))
    plans = []
    if name == "nyuv2":  # scattered 1-based indices, like the real splits
        total = sum(splits.values())
        order = np.random.default_rng([seed, 894]).permutation(total) + 1
    for s, split in enumerate(DEFAULT_SPLITS[name]):
        for i in range(splits.get(split, 0)):
            scene_seed = seed * 1_000_003 + s * 10_007 + i
            if name == "bsds500":
                kind, sample_id = ("room", "street")[i % 2], str(100_000 + 20_000 * seed + 1000 * s + i)
            elif name == "nyuv2":
                kind, sample_id = "room", f"{int(order[len(plans)]):04d}"
            elif name == "stanford2d3d":
                area = STANFORD_AREAS[split][i % len(STANFORD_AREAS[split])]
                kind, sample_id = "pano", f"{area}/{_stanford_stem(seed, s * 10_007 + i)}"
            else:
                kind, sample_id = "street", f"{CITIES[split]}_{i:06d}_000019"
            plans.append(PlannedScene(split, i, sample_id, scene_seed, kind, size))
    return plans


def write_dataset(
    name: str,
    root: str | Path,
    n_per_split: dict[str, int] | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
) -> Path:
    """Render scenes and write them under `root` in dataset `name`'s published format.

    Args:
        name: "bsds500", "nyuv2", "stanford2d3d" or "cityscapes".
        root: output directory (created); pass it to the dataset's reader.
        n_per_split: scenes per split (default: a few per split, see DEFAULT_SPLITS).
        size: (H, W) of each written image (default: DEFAULT_SIZES; for stanford2d3d the
            full panorama before the reader's 0.5 rescale, ideally H:W = 1:2).
        seed: base seed; the same arguments write the same files.

    Returns:
        `root` as a Path.
    """
    root = Path(root)
    plans = planned_scenes(name, n_per_split, size, seed)
    if not plans:
        raise ValueError(f"{name}: n_per_split={n_per_split} asks for no scenes")
    scenes = [(plan, plan.render()) for plan in plans]
    if name == "bsds500":
        for plan, scene in scenes:
            encoders.write_bsds(root, plan.split, plan.sample_id, scene, annotator_seed(plan))
    elif name == "nyuv2":
        encoders.write_nyuv2(root, [(p.split, int(p.sample_id), sc) for p, sc in scenes], seed)
    elif name == "stanford2d3d":
        encoders.write_stanford(root, [(p.sample_id, sc) for p, sc in scenes])
    else:
        for plan, scene in scenes:
            encoders.write_cityscapes(root, plan.split, plan.sample_id, scene)
    return root


def annotator_seed(plan: PlannedScene) -> int:
    """Seed of the simulated BSDS annotators for a planned scene."""
    return plan.seed + 77


def main(argv: list[str] | None = None) -> Path:
    """Command line: write one generated dataset tree and print its root."""
    parser = argparse.ArgumentParser(description="Write generated scenes in a dataset's published format.")
    parser.add_argument("--dataset", required=True, choices=sorted(DEFAULT_SPLITS))
    parser.add_argument("--out", required=True, help="output directory (the reader's root)")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=N", help="scenes per split (repeat)")
    parser.add_argument("--size", default=None, metavar="HxW", help="image size, e.g. 240x320")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        splits = {k: int(v) for k, v in (item.split("=") for item in args.split)} or None
        size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    except ValueError:
        parser.error(f"--split must be NAME=N and --size HxW, got {args.split} and {args.size!r}")
    if size is not None and len(size) != 2:
        parser.error(f"--size must be HxW, got {args.size!r}")
    try:
        root = write_dataset(args.dataset, args.out, splits, size, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(root)
    return root


if __name__ == "__main__":
    main()
