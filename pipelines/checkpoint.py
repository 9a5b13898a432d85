"""The checkpoint format: one directory with `state.pt`, written by the train loop.

`state.pt` holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: no pickled code runs when a checkpoint is read, whoever
wrote the directory. Keys:

    model        the PAGNet's state dict
    optimizer    the optimizer's state dict
    scheduler    the LR scheduler's state dict
    tau          the Gumbel temperature schedule's state dict
    iteration    iterations trained in the stage
    run_id       the stage's MLflow run (so a restarted job logs to the same run)
    model_config the `model:` section (ModelConfig fields) that rebuilds the network
    stage        the stage's settings (StageConfig fields: MultiPool, gated blocks, ...)

Ray Train makes a reported checkpoint directory atomic; `as_checkpoint` and
`checkpoint_uri` convert between `ray.train.Checkpoint` and URIs (local path or s3://).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pag_model import PAGNet
from pipelines.atomic import atomic_path, write_json
from pipelines.datasets import storage

STATE_FILE = "state.pt"


GRANULARITY = {"pag": "pixel", "truncated": "pixel", "layer_skip": "image", "static_mask": "static"}


def build_model(model: dict[str, Any], stage: dict[str, Any]) -> PAGNet:
    """The PAGNet of one stage: fixed model settings + the stage's MultiPool and gates.

    The stage's kind (`StageConfig`) decides the gates: pixel-wise (pag), one per image
    (layer_skip), input-independent (static_mask), none (dense); a truncated stage's top
    `truncate` gated blocks have their gates closed (their 3x3 conv never runs) and the
    others open (so nothing is learned or sparsified).
    """
    kind = stage.get("kind") or "pag"
    gated = () if kind == "dense" else tuple(stage.get("gated") or ())
    net = PAGNet(
        backbone=model["backbone"],
        tasks=tuple(model["tasks"]),
        num_classes=model["num_classes"],
        multipool=stage.get("multipool"),
        multipool_variant=model["multipool_variant"],
        dilations=tuple(model["dilations"]),
        gated=gated,
        pretrained=model.get("pretrained"),
        head_channels=model["head_channels"],
        head_upsample=model.get("head_upsample", "deconv"),
        gate_granularity=GRANULARITY.get(kind, "pixel"),
        init_open_prob=stage.get("gate_init", 0.95),
    )
    if kind == "truncated" and stage.get("truncate") is not None:
        truncate(net, int(stage["truncate"]))
    return net


def truncate(net: PAGNet, blocks: int) -> None:
    """Close the gates of the top `blocks` gated blocks (their 3x3 conv is removed), open the rest.

    Raises:
        ValueError: more blocks than the network gates.
    """
    gated = net.gated_blocks()
    if not 1 <= blocks <= len(gated):
        raise ValueError(f"truncate={blocks}: the network has {len(gated)} gated blocks")
    for i, (_, block) in enumerate(gated):
        block.gate.set_mode("closed" if i >= len(gated) - blocks else "open")
        block.gate.requires_grad_(False)  # nothing to learn (and DDP needs every trained parameter used)


def save_state(directory: str | Path, state: dict[str, Any]) -> None:
    """Write `state` (the keys above) as `<directory>/state.pt`."""
    torch.save(state, Path(directory) / STATE_FILE)


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The dict saved by `save_state` in a local checkpoint directory (no unpickling of code)."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint of this pipeline (no {STATE_FILE})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError for torn files
        raise ValueError(f"{path}: unreadable checkpoint state ({type(err).__name__}: {err})") from err


def load_checkpoint_model(checkpoint_dir: str | Path) -> PAGNet:
    """The network saved in a local checkpoint directory, on CPU, in eval mode."""
    state = load_state(checkpoint_dir)
    net = build_model(state["model_config"], state["stage"])
    net.load_state_dict(state["model"])
    return net.eval()


def checkpoint_uri(checkpoint: Any) -> str:
    """A Ray Checkpoint's location as a URI (s3:// for S3, a plain path locally)."""
    fs_type = type(checkpoint.filesystem).__name__
    return f"s3://{checkpoint.path}" if fs_type == "S3FileSystem" else checkpoint.path


def as_checkpoint(uri: str) -> Any:
    """A `ray.train.Checkpoint` for a URI written by `checkpoint_uri`."""
    from ray.train import Checkpoint

    fs, path = storage.filesystem(uri)
    return Checkpoint(path, filesystem=fs)


# A logged (exported) model: the same network without the optimizer, in files that load
# without executing code: `weights.safetensors` (tensors only) and `model.json` (the model
# and stage settings that rebuild it with `build_model`).
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILE = "model.json"


def export_model(directory: str | Path, net: PAGNet, model: dict[str, Any], stage: dict[str, Any]) -> Path:
    """Write `net`'s weights and the settings that rebuild it into `directory`; returns it."""
    from safetensors.torch import save_file


    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / MODEL_FILE, {"format": 1, "model_config": model, "stage": stage})
    return directory


def load_exported_model(directory: str | Path) -> PAGNet:
    """The PAGNet written by `export_model`, on CPU, in eval mode (no pickle is read)."""
    import json

    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (WEIGHTS_FILE, MODEL_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: not an exported PAG model (no {name})")
    spec = json.loads((directory / MODEL_FILE).read_text())
    net = build_model(spec["model_config"], spec["stage"])
    net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return net.eval()
