"""How long BSDS-style boundary evaluation takes: in-process vs a process pool, one run.

Synthetic BSDS-sized data (481 x 321, 5 annotators per image): each annotator draws the
boundaries of a jittered Voronoi segmentation with some regions merged; the prediction is
a blurred, slightly shifted boundary-probability map over a smoothed-noise texture. Prints seconds per image in
process, the wall time of all images on a pool of every core, and the ratio.

    .venv/bin/python benchmarks/boundary_eval.py --images 200 --serial-images 10
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.spatial import cKDTree

from pag_model.metrics import BoundaryMeter

HEIGHT, WIDTH = 321, 481


def voronoi_boundaries(seeds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose region differs from the right or lower neighbour."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    _, nearest = cKDTree(seeds).query(np.stack([ys.ravel(), xs.ravel()], axis=1))
    region = labels[nearest].reshape(HEIGHT, WIDTH)
    edges = np.zeros((HEIGHT, WIDTH), dtype=bool)
    edges[:, :-1] |= region[:, :-1] != region[:, 1:]
    edges[:-1, :] |= region[:-1, :] != region[1:, :]
    return edges


def synthetic_image(rng: np.random.Generator, annotators: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """One (prediction, annotations) pair of BSDS size."""
    seeds = rng.uniform([0, 0], [HEIGHT, WIDTH], size=(int(rng.integers(15, 40)), 2))
    gts = []
    for _ in range(annotators):
        jittered = seeds + rng.normal(0, 1.5, seeds.shape)
        labels = np.arange(len(seeds))
        merge = rng.random(len(seeds)) < 0.2
        labels[merge] = rng.integers(0, len(seeds), int(merge.sum()))
        gts.append(voronoi_boundaries(jittered, labels))
    consensus = voronoi_boundaries(seeds + rng.normal(0, 1.0, seeds.shape), np.arange(len(seeds)))
    distance = distance_transform_edt(~np.roll(consensus, 1, axis=1))
    strength = rng.uniform(0.4, 1.0)
    # Background texture: smoothed noise, zero on about half the image, up to about 0.3.
    texture = 2.0 * np.clip(gaussian_filter(rng.random((HEIGHT, WIDTH)), 1.5) - 0.5, 0, None)
    prob = strength * np.exp(-(distance**2) / 4.0) + texture
    return np.clip(prob, 0, 1), gts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--serial-images", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = [synthetic_image(rng) for _ in range(args.images)]
    probs = [p for p, _ in data]
    gts = [g for _, g in data]

    serial = BoundaryMeter(workers=1)
    start = time.perf_counter()
    serial.update(probs[: args.serial_images], gts[: args.serial_images])
    per_image = (time.perf_counter() - start) / args.serial_images

    with BoundaryMeter(workers=args.workers) as pooled:
        pooled.update(probs[:1] * args.workers, gts[:1] * args.workers)  # start the pool (not timed)
        pooled._counts.clear()
        start = time.perf_counter()
        pooled.update(probs, gts)
        wall = time.perf_counter() - start
        scores = pooled.compute()
    np.testing.assert_array_equal(pooled.counts()[: args.serial_images], serial.counts())

    print(f"images: {args.images} of {WIDTH}x{HEIGHT}, 5 annotators, 99 thresholds, cores: {os.cpu_count()}")
    print(f"{'':28s}{'seconds':>10s}{'ratio':>8s}")
    print(f"{'in-process, per image':28s}{per_image:10.3f}{1.0:8.2f}")
    print(f"{'in-process, all (projected)':28s}{per_image * args.images:10.1f}{1.0:8.2f}")
    print(f"{f'pool of {args.workers}, all (measured)':28s}{wall:10.1f}{per_image * args.images / wall:8.2f}")
    print(f"ODS {scores['ods_f']:.3f}  OIS {scores['ois_f']:.3f}  AP {scores['ap']:.3f}")


if __name__ == "__main__":
    main()
