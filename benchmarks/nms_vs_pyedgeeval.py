"""Our BSDS boundary evaluation against pyEdgeEval's (a published Python port) on the same maps.

pyEdgeEval is not a project dependency: install it in a scratch venv and pass its python.
Both sides get the same 8-bit predictions (BSDS size, 5 annotators each) and prepare them
with their own NMS; pyEdgeEval's `fast_nms` smooths with convTri(E, 1) as HED does. Counts
of both are aggregated by our `boundary_scores`, so the differences printed come from the
NMS, thinning and matching alone.

    python -m venv /tmp/pee && /tmp/pee/bin/pip install numpy scipy cython setuptools wheel \\
        opencv-python-headless scikit-image matplotlib pillow \\
        && /tmp/pee/bin/pip install --no-build-isolation pyEdgeEval
    .venv/bin/python benchmarks/nms_vs_pyedgeeval.py --pyedgeeval-python /tmp/pee/bin/python --images 12
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from pag_model.metrics import HED_NMS, RCF_NMS, boundary_counts, boundary_scores
from pag_model.metrics.boundary_image import benchmark_thresholds
from pag_model.metrics.boundary_nms import quantize_png

HEIGHT, WIDTH = 321, 481

# Run by the pyEdgeEval python: reads maps.npz, writes its (N, K, 4) counts.
PYEDGEEVAL_SIDE = """
import sys
import numpy as np
from pyEdgeEval.common.binary_label.evaluate_boundaries import evaluate_boundaries_threshold_multiple_gts
data = np.load(sys.argv[1])
probs, gts, thresholds = data["probs"], data["gts"], data["thresholds"]
counts = []
for prob, annotators in zip(probs, gts):
    cnt_r, sum_r, cnt_p, sum_p = evaluate_boundaries_threshold_multiple_gts(
        thresholds, prob, list(annotators), max_dist=0.0075, apply_thinning=True, apply_nms=True)
    counts.append(np.stack([cnt_r, sum_r, cnt_p, sum_p], axis=1))
np.save(sys.argv[2], np.stack(counts).astype(np.int64))
"""


def synthetic_image(rng: np.random.Generator, annotators: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) 8-bit-level prediction and (A, H, W) annotations: boundaries of random discs."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    centres = rng.uniform([0, 0], [HEIGHT, WIDTH], size=(12, 2))
    radii = rng.uniform(20, 90, size=12)
    gts = []
    for _ in range(annotators):
        label = np.zeros((HEIGHT, WIDTH), np.int64)
        for k, ((cy, cx), r) in enumerate(zip(centres + rng.normal(0, 1.0, centres.shape), radii)):
            label[(ys - cy) ** 2 + (xs - cx) ** 2 < r**2] = k + 1
        edge = np.zeros((HEIGHT, WIDTH), bool)
        edge[:, :-1] |= label[:, :-1] != label[:, 1:]
        edge[:-1, :] |= label[:-1, :] != label[1:, :]
        gts.append(edge)
    distance = distance_transform_edt(~gts[0])
    texture = 2.0 * np.clip(gaussian_filter(rng.random((HEIGHT, WIDTH)), 1.5) - 0.5, 0, None)
    prob = rng.uniform(0.5, 1.0) * np.exp(-(distance**2) / rng.uniform(2.0, 8.0)) + texture
    return quantize_png(np.clip(prob, 0, 1)), np.stack(gts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyedgeeval-python", required=True, help="python of a venv with pyEdgeEval")
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = [synthetic_image(rng) for _ in range(args.images)]
    probs = np.stack([p for p, _ in data])
    gts = np.stack([g for _, g in data])
    thresholds = benchmark_thresholds()
    with tempfile.TemporaryDirectory() as tmp:
        maps, out = Path(tmp) / "maps.npz", Path(tmp) / "counts.npy"
        np.savez(maps, probs=probs, gts=gts, thresholds=thresholds)
        subprocess.run([args.pyedgeeval_python, "-c", PYEDGEEVAL_SIDE, str(maps), str(out)], check=True)
        theirs = boundary_scores(np.load(out), thresholds)
    variants = {
        "HED_NMS, 8-bit output": dict(nms_reference=HED_NMS, quantize=True),
        "HED_NMS, float output": dict(nms_reference=HED_NMS, quantize=False),
        "unsmoothed r=1 (before)": dict(nms_reference=dataclasses.replace(RCF_NMS, nms_radius=1), quantize=True),
        "RCF_NMS (r=2)": dict(nms_reference=RCF_NMS, quantize=True),
    }
    print(f"{args.images} images of {WIDTH}x{HEIGHT}, 5 annotators; pyEdgeEval: "
          f"ODS {theirs['ods_f']:.4f} OIS {theirs['ois_f']:.4f} AP {theirs['ap']:.4f}")
    print(f"{'ours minus pyEdgeEval':26s}{'ODS':>9s}{'OIS':>9s}{'AP':>9s}")
    for name, options in variants.items():
        counts = np.stack([boundary_counts(p, list(g), thresholds, **options) for p, g in zip(probs, gts)])
        ours = boundary_scores(counts, thresholds)
        print(f"{name:26s}" + "".join(f"{ours[k] - theirs[k]:+9.4f}" for k in ("ods_f", "ois_f", "ap")))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
