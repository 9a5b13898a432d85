"""The training loop every Ray Train worker runs: one stage of the curriculum, or one sweep trial.

`train_loop_per_worker(config)` unpacks its config at the top, takes its dataset shard,
builds and prepares the model (DDP through Ray Train: gloo on CPU, NCCL on GPU), then runs
the configured optimiser (SGD with momentum, the paper's; or Adam/AdamW) with the poly LR policy on the task losses + lambda * sum_l KL(rho || g_l)
(paper Eq. 6), annealing the Gumbel temperature. Nothing here knows about stages or
trials: the caller passes the model arguments, the schedule and where to start from.

Checkpoints (a directory with `state.pt`, written through `ray.train.report`, so Ray makes
them atomic) hold the model, optimizer, scheduler, iteration, tau schedule, the MLflow run
id and the model/stage settings needed to rebuild the network. A non-finite loss stops every
worker at the same iteration and reports `nonfinite_loss`; the last good checkpoint stays.
The loop prints nothing: rank 0 sends its progress to the driver's console
(`pipelines.train.progress`), which shows it once.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from pag_model import TauSchedule, sparsity_loss, task_loss
from pipelines.checkpoint import build_model, load_state, save_state
from pipelines.datasets import storage
from pipelines.datasets.eval_reader import eval_batches
from pipelines.datasets.ray_pipeline import TorchCollate
from pipelines.scoring import evaluate_model
from pipelines.tracking.tracker import RankZeroLogger
from pipelines.train.progress import Progress, ProgressSender, Resumed


def poly_scheduler(optimizer: torch.optim.Optimizer, iterations: int, power: float) -> Any:
    """The paper's poly policy: LR = base LR * (1 - it / iterations) ** power, 0 after the end."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=iterations, power=power)


def make_optimizer(net: nn.Module, lr: float, train: dict[str, Any]) -> torch.optim.Optimizer:
    """`train["optimizer"]` (sgd with momentum, adam or adamw) over the trainable parameters;
    the gates' parameters (names with `.gate.`) in a group at `lr * train["gate_lr_mult"]`."""
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    gates = [p for n, p in params if ".gate." in n]
    rest = [p for n, p in params if ".gate." not in n]
    groups = [{"params": rest, "lr": lr}]
    if gates:
        groups.append({"params": gates, "lr": lr * train.get("gate_lr_mult", 1.0)})
    name = train.get("optimizer", "sgd")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train["momentum"], weight_decay=train["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=train["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=train["weight_decay"])
    raise ValueError(f"train.optimizer={name!r}: expected sgd, adam or adamw")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. Keys of `config`:

    model (dict, ModelConfig fields), stage (dict, StageConfig fields), train (dict,
    TrainConfig fields), init_checkpoint
    (previous stage: local dir or ray.train.Checkpoint, or None),
    tracking_uri and run_id (MLflow; None disables logging), eval (dict of evaluate.py's
    `eval_batches` arguments, or None), nonfinite_marker (URI written if the loss goes
    non-finite, or None).
    """
    import ray.train
    import ray.train.torch


    model_cfg: dict = config["model"]
    stage: dict = config["stage"]
    train: dict = config["train"]
    init_checkpoint: Any = config.get("init_checkpoint")
    eval_cfg: Optional[dict] = config.get("eval")
    iterations: int = stage["iterations"]
    rho: Optional[float] = stage.get("rho")

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    seed = train["seed"] if stage.get("seed") is None else stage["seed"]
    torch.manual_seed(seed + rank)
    device = ray.train.torch.get_device()

    net = build_model(model_cfg, stage)
    resume = ray.train.get_checkpoint()
    state: dict[str, Any] = {}
    if resume is not None:
        with resume.as_directory() as ckpt_dir:
            state = load_state(ckpt_dir)
        net.load_state_dict(state["model"])
    elif isinstance(init_checkpoint, (str, Path)):
        net.load_stage_state(load_state(init_checkpoint)["model"])
    elif init_checkpoint is not None:  # a ray.train.Checkpoint, possibly on S3
        with init_checkpoint.as_directory() as ckpt_dir:
            net.load_stage_state(load_state(ckpt_dir)["model"])
    run_id = state.get("run_id") or config.get("run_id")

    model = ray.train.torch.prepare_model(net)
    optimizer = make_optimizer(net, stage["lr"], train)
    scheduler = poly_scheduler(optimizer, iterations, train["poly_power"])
    tau_iters = stage.get("tau_iters") or iterations
    tau = TauSchedule(stage["tau_start"], stage["tau_end"], tau_iters, stage["tau_shape"])
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        tau.load_state_dict(state["tau"])
    it = int(state.get("iteration", 0))

    shard = ray.train.get_dataset_shard("train")
    logger = RankZeroLogger(config.get("tracking_uri"), run_id, rank)
    console = ProgressSender(rank)
    use_bf16 = bool(train["bf16"]) and device.type == "cuda"
    tasks = tuple(model_cfg["tasks"])
    window: list[float] = []
    tick = time.perf_counter()
    steady = SteadyTimer(start_iteration=it)
    if state:
        logger.log_metrics({"train/resumed_from": it}, it)
        console.send(Resumed(stage["name"], it))

    while it < iterations:
        model.train()
        for batch in shard.iter_torch_batches(
            batch_size=train["batch_size"], collate_fn=TorchCollate(), drop_last=True
        ):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            net.set_tau(tau.value(it))
            loss, loss_sparse, parts, densities = forward_loss(model, net, batch, tasks, rho, stage["lam"], use_bf16)
            if not _all_finite(loss, world, device):
                _stop_nonfinite(stage["name"], it, float(loss), logger, rank, config.get("nonfinite_marker"))
                return
            sgd_step(loss, optimizer, scheduler)
            it += 1
            window.append(float(loss.detach()))
            steady.tick(it)

            if it % train["log_every"] == 0 or it == iterations:
                now = time.perf_counter()
                metrics = {
                    "train/loss": sum(window) / len(window),
                    "train/sparsity_loss": float(loss_sparse.detach()),
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/tau": tau.value(it),
                    "train/sec_per_iter": (now - tick) / len(window),
                    **{f"train/loss_{k}": float(v.detach()) for k, v in parts.items()},
                    **{f"train/density/{k}": float(v.detach().mean()) for k, v in densities.items()},
                }
                logger.log_metrics(metrics, it)
                console.send(_progress(stage["name"], it, iterations, metrics, len(densities)))
                window, tick = [], now
            if eval_cfg and train["eval_every"] and it % train["eval_every"] == 0 and it < iterations:
                _periodic_eval(net, eval_cfg, model_cfg, rank, logger, it, device)
            if it % train["checkpoint_every"] == 0 or it == iterations:
                _report(net, optimizer, scheduler, tau, it, run_id, model_cfg, stage, rank, float(loss), steady)
            if it >= iterations:
                break


def _progress(stage: str, it: int, iterations: int, metrics: dict[str, float], gates: int) -> Progress:
    """The console's view of one logged window (density: mean over the gated layers)."""
    density = sum(v for k, v in metrics.items() if k.startswith("train/density/")) / gates if gates else None
    return Progress(stage, it, iterations, metrics["train/loss"], density, metrics["train/sec_per_iter"])


def forward_loss(
    model: nn.Module,
    net: nn.Module,
    batch: dict[str, torch.Tensor],
    tasks: tuple[str, ...],
    rho: Optional[float],
    lam: float,
    use_bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """Eq. 6: task losses + lambda * sum_l KL(rho || g_l) (no sparsity term when rho is None).

    `model` may be the DDP wrapper of `net`; the gates are read from `net`.
    Returns (loss, sparsity part, {task: loss}, {gate: (B,) densities}).
    """
    device_type = batch["image"].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
        outputs = model(batch["image"])
        loss_task, parts = task_loss(outputs, batch, tasks)
        if rho is None:
            loss_sparse, densities = loss_task.new_zeros(()), {}
        else:
            loss_sparse, densities = sparsity_loss(net, rho, lam)
    return loss_task + loss_sparse, loss_sparse, parts, densities


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


class SteadyTimer:
    """Seconds per iteration after `warmup` iterations (first batches pay pipeline start-up)."""

    def __init__(
        self,
        start_iteration: int = 0,
        warmup: int = 5,
    ) -> None:
        """
        Args:
            start_iteration: iteration the loop starts (or resumes) at.
            warmup: iterations left out of the timing.
        """
        self.first = start_iteration + warmup
        self.t0: Optional[float] = None
        self.last_it = self.first
        self.t_last: Optional[float] = None

    def tick(self, it: int) -> None:
        now = time.perf_counter()
        if it == self.first:
            self.t0 = now
        if self.t0 is not None:
            self.last_it, self.t_last = it, now

    def sec_per_iter(self) -> float:
        if self.t0 is None or self.last_it == self.first:
            return float("nan")
        return (self.t_last - self.t0) / (self.last_it - self.first)


def _all_finite(loss: torch.Tensor, world: int, device: torch.device) -> bool:
    """Whether every worker's loss is finite (one tiny all-reduce, so all stop together)."""
    bad = torch.tensor([0.0 if math.isfinite(float(loss.detach())) else 1.0], device=device)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad.item() == 0.0


def _stop_nonfinite(stage: str, it: int, loss: float, logger: Any, rank: int, marker: Optional[str]) -> None:
    """Record the failure for the driver (a marker file: Ray's result keeps only metrics
    reported with checkpoints) and end this worker's loop."""
    import json

    import ray.train


    logger.log_metrics({"train/nonfinite_loss": 1.0}, it)
    if rank == 0 and marker:
        storage.write_bytes(marker, json.dumps({"stage": stage, "iteration": it, "loss": str(loss)}).encode())
    # Every worker reports once, without a checkpoint: the last good one stays the latest.
    ray.train.report({"nonfinite_loss": 1.0, "iteration": it, "loss_value": str(loss), "stage": stage})


def _report(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tau: TauSchedule,
    it: int,
    run_id: Optional[str],
    model_cfg: dict,
    stage: dict,
    rank: int,
    loss: float,
    steady: "SteadyTimer",
) -> None:
    """Checkpoint from rank 0 (DDP keeps weights identical), metrics from all (a barrier)."""
    import ray.train

    metrics = {"iteration": it, "loss": loss, "sec_per_iter_steady": steady.sec_per_iter()}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_state(
            tmp,
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "tau": tau.state_dict(),
                "iteration": it,
                "run_id": run_id,
                "model_config": model_cfg,
                "stage": stage,
            },
        )
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_{it:08d}",
        )


def _periodic_eval(
    net: nn.Module,
    eval_cfg: dict,
    model_cfg: dict,
    rank: int,
    logger: Any,
    it: int,
    device: torch.device,
) -> None:
    """Rank 0 scores the eval split and logs it; other ranks go on (no collective inside)."""
    if rank != 0:
        return
    metrics = evaluate_model(net, eval_batches(**eval_cfg), tuple(model_cfg["tasks"]), model_cfg["num_classes"])
    logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, it)
