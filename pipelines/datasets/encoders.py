"""Encoders from a rendered `Scene` to each dataset's files (used by `write_formats`).

Each function writes exactly the containers, dtypes and encodings the publisher uses (see
DATASETS.md). Class maps from the scene's classes to each dataset's label space are module
constants so tests can state the expected decoded labels.
"""
from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

from pipelines.atomic import atomic_path, write_json
from pipelines.datasets.files import write_jpeg, write_mat, write_png
from pipelines.datasets.scenes import CITYSCAPES_CAMERA, Scene, scaled_intrinsics

N_ANNOTATORS = 5
ROOM_TO_NYU40 = {"wall": 0, "floor": 1, "cabinet": 2, "table": 6, "door": 7, "ceiling": 21, "lamp": 34}
N_RAW_LABELS = 894
ROOM_TO_S2D3D = {"wall": "wall", "floor": "floor", "ceiling": "ceiling", "cabinet": "bookcase",
                 "table": "table", "door": "door", "lamp": "clutter"}
S2D3D_VOID_INDEX = 0x0D0D0D  # colour of missing pixels in the real semantic PNGs
STREET_TO_LABEL_ID = {"road": 7, "sidewalk": 8, "building": 11, "vegetation": 21, "sky": 23,
                      "person": 24, "car": 26}
CITYSCAPES_THINGS = ("person", "car")
EGO_VEHICLE_ID = 1
EGO_ROWS = 0.08  # bottom fraction of Cityscapes frames covered by the ego vehicle
CITYSCAPES_BASELINE = 0.209313


def region_boundaries(regions: np.ndarray) -> np.ndarray:
    """(H, W) uint8: 1 where the right or lower neighbour lies in another region."""
    out = np.zeros(regions.shape, bool)
    out[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    out[:-1, :] |= regions[:-1, :] != regions[1:, :]
    return out.astype(np.uint8)


def bsds_annotators(scene: Scene, seed: int, k: int = N_ANNOTATORS) -> tuple[np.ndarray, np.ndarray]:
    """Simulated annotators: annotator 0 keeps every segment; the others each merge all
    segments of randomly chosen classes into one region (humans disagree on detail).

    Returns:
        Segmentation (K, H, W) uint16 regions 1..n and Boundaries (K, H, W) uint8 0/1.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(scene.semantic)
    segs, bounds = [], []
    for a in range(k):
        regions = scene.segments.astype(np.int64) + 1  # 0 (sky, void) becomes its own region
        merged = classes[rng.random(len(classes)) < 0.4] if a else classes[:0]
        for c in merged:
            regions = np.where(scene.semantic == c, -1 - int(c), regions)
        _, relabeled = np.unique(regions, return_inverse=True)
        relabeled = relabeled.reshape(regions.shape) + 1
        segs.append(relabeled.astype(np.uint16))
        bounds.append(region_boundaries(relabeled))
    return np.stack(segs), np.stack(bounds)


def write_bsds(root: Path, split: str, sample_id: str, scene: Scene, seed: int) -> None:
    """One BSDS500 image (jpg) and its groundTruth .mat (v5, 1 x K cell of structs)."""
    data = root / "BSR" / "BSDS500" / "data"
    segs, bounds = bsds_annotators(scene, seed)
    cell = np.empty((1, len(segs)), dtype=object)
    for a in range(len(segs)):
        cell[0, a] = {"Segmentation": segs[a], "Boundaries": bounds[a]}
    write_jpeg(data / "images" / split / f"{sample_id}.jpg", scene.image)
    write_mat(data / "groundTruth" / split / f"{sample_id}.mat", {"groundTruth": cell})


def nyu_class_mapping(seed: int) -> np.ndarray:
    """(894,) synthetic mapClass: raw id r -> 1..40, a seeded shuffle covering every class."""
    values = np.resize(np.arange(1, 41), N_RAW_LABELS)
    return np.random.default_rng([seed, 40]).permutation(values).astype(np.float64)


def nyu_raw_labels(scene: Scene, map_class: np.ndarray, seed: int) -> np.ndarray:
    """(H, W) raw ids 1..894 whose mapClass gives each segment's NYU40 class; 0 on boundaries."""
    rng = np.random.default_rng(seed)
    raw = np.zeros(scene.semantic.shape, np.uint16)
    for segment in np.unique(scene.segments[scene.segments > 0]):
        where = scene.segments == segment
        nyu40 = ROOM_TO_NYU40[scene.class_names[int(scene.semantic[where][0])]]
        candidates = np.flatnonzero(map_class == nyu40 + 1) + 1
        raw[where] = rng.choice(candidates)
    raw[scene.boundaries > 0] = 0  # annotators leave thin unlabeled gaps between objects
    return raw


def _matlab_v73_header(path: Path) -> None:
    """Stamp the 128-byte MATLAB header into the HDF5 user block, as MATLAB does."""
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {time.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 ."
    header = text.encode("ascii").ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def write_nyuv2(root: Path, scenes: list[tuple[str, int, Scene]], seed: int) -> None:
    """nyu_depth_v2_labeled.mat (v7.3), splits.mat and classMapping40.mat for (split, 1-based index, scene)."""
    from pipelines.datasets.nyuv2 import (
        CLASSES_40,  # the names; no cycle at import time
    )

    root.mkdir(parents=True, exist_ok=True)
    map_class = nyu_class_mapping(seed)
    n = max(index for _, index, _ in scenes)
    h, w = scenes[0][2].image.shape[:2]
    images = np.zeros((n, 3, w, h), np.uint8)
    depths = np.zeros((n, w, h), np.float32)
    labels = np.zeros((n, w, h), np.uint16)
    for _, index, scene in scenes:
        images[index - 1] = scene.image.transpose(2, 1, 0)
        depths[index - 1] = scene.depth.T
        labels[index - 1] = nyu_raw_labels(scene, map_class, seed + index).T
    raw_depths = np.where(labels == 0, 0, depths).astype(np.float32)  # Kinect holes at edges
    with atomic_path(root / "nyu_depth_v2_labeled.mat") as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            for key, array, cls in (("images", images, "uint8"), ("depths", depths, "single"),
                                    ("rawDepths", raw_depths, "single"), ("labels", labels, "uint16")):
                # One frame per chunk, deflated: MATLAB's -v7.3 compresses every variable.
                ds = f.create_dataset(key, data=array, chunks=(1,) + array.shape[1:], compression="gzip",
                                      compression_opts=3)
                ds.attrs["MATLAB_class"] = np.bytes_(cls)
        _matlab_v73_header(tmp)
    splits = {"train": [], "test": []}
    for split, index, _ in scenes:
        splits[split].append(index)
    write_mat(root / "splits.mat", {"trainNdxs": np.array(splits["train"], float).reshape(-1, 1),
                                    "testNdxs": np.array(splits["test"], float).reshape(-1, 1)})
    names = np.empty((1, len(CLASSES_40)), dtype=object)
    names[0, :] = list(CLASSES_40)
    write_mat(root / "classMapping40.mat", {"mapClass": map_class.reshape(1, -1), "className": names})


def write_stanford(root: Path, scenes: list[tuple[str, Scene]]) -> None:
    """2D-3D-S panoramas (sample id "<area>/<stem>", scene) and assets/semantic_labels.json."""
    labels = ["<UNK>_0_<UNK>_0_0"]
    for sample_id, scene in scenes:
        area, stem = sample_id.split("/", 1)
        pano = root / area / "pano"
        area_num = area.split("_", 1)[1]
        index = np.full(scene.semantic.shape, S2D3D_VOID_INDEX, np.int64)
        for segment in np.unique(scene.segments[scene.segments > 0]):
            where = scene.segments == segment
            cls = ROOM_TO_S2D3D[scene.class_names[int(scene.semantic[where][0])]]
            index[where] = len(labels)
            labels.append(f"{cls}_{segment}_office_1_{area_num}")
        semantic = np.stack([index >> 16, (index >> 8) & 255, index & 255], -1).astype(np.uint8)
        depth = np.where(scene.valid, np.clip(np.rint(scene.depth * 512), 0, 65534), 65535).astype(np.uint16)
        normals = np.clip(np.rint(scene.normals * 127.5 + 127.5), 0, 255)
        normals = np.where(scene.valid[..., None], normals, 128).astype(np.uint8)
        write_png(pano / "rgb" / f"{stem}_rgb.png", scene.image)
        write_png(pano / "depth" / f"{stem}_depth.png", depth)
        write_png(pano / "normal" / f"{stem}_normals.png", normals)
        write_png(pano / "semantic" / f"{stem}_semantic.png", semantic)
    write_json(root / "assets" / "semantic_labels.json", labels)


def cityscapes_ids(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelIds uint8, instanceIds uint16, ego-vehicle mask) of a street scene."""
    h = scene.semantic.shape[0]
    lut = np.array([STREET_TO_LABEL_ID[c] for c in scene.class_names], np.uint8)
    label_ids = lut[scene.semantic]
    instance_ids = label_ids.astype(np.uint16)
    for cls in CITYSCAPES_THINGS:
        c = scene.class_names.index(cls)
        for k, segment in enumerate(np.unique(scene.segments[scene.semantic == c])):
            instance_ids[scene.segments == segment] = STREET_TO_LABEL_ID[cls] * 1000 + k
    ego = np.zeros(scene.semantic.shape, bool)
    ego[h - int(round(EGO_ROWS * h)):] = True
    label_ids[ego] = EGO_VEHICLE_ID
    instance_ids[ego] = EGO_VEHICLE_ID
    return label_ids, instance_ids, ego


def write_cityscapes(root: Path, split: str, sample_id: str, scene: Scene) -> None:
    """One Cityscapes frame: image, labelIds, instanceIds, disparity and camera json."""
    city = sample_id.rsplit("_", 2)[0]
    fx, fy, cx, cy = scene.intrinsics or scaled_intrinsics(CITYSCAPES_CAMERA, scene.image.shape[:2])
    label_ids, instance_ids, ego = cityscapes_ids(scene)
    image = np.where(ego[..., None], 40, scene.image).astype(np.uint8)
    valid = scene.valid & ~ego
    disparity = CITYSCAPES_BASELINE * fx / np.where(valid, scene.depth, 1.0)
    pixels = np.where(valid, np.clip(np.rint(disparity * 256 + 1), 2, 65535), 0).astype(np.uint16)
    camera = {"extrinsic": {"baseline": CITYSCAPES_BASELINE, "pitch": 0.0, "roll": 0.0, "yaw": 0.0,
                            "x": 1.7, "y": 0.0, "z": 1.3},
              "intrinsic": {"fx": fx, "fy": fy, "u0": cx, "v0": cy}}
    stem = f"{split}/{city}/{sample_id}"
    write_png(root / "leftImg8bit" / f"{stem}_leftImg8bit.png", image)
    write_png(root / "gtFine" / f"{stem}_gtFine_labelIds.png", label_ids)
    write_png(root / "gtFine" / f"{stem}_gtFine_instanceIds.png", instance_ids)
    write_png(root / "disparity" / f"{stem}_disparity.png", pixels)
    write_json(root / "camera" / f"{stem}_camera.json", camera)
