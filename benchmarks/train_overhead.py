"""Ray Train overhead of the staged training loop: seconds per iteration, one run, side by side.

    python benchmarks/train_overhead.py [--iterations 60] [--repeats 2]

Both sides train the same stage (resnet_tiny with MultiPool at Res5 and gates in Res4-5,
rho 0.9, semantic + depth, 64x64 crops, batch 4) on the same generated NYUv2 shards read
through the same Ray Data pipeline, with the same step code (`forward_loss`, `sgd_step`):

- plain:     one Python process iterating the Ray Data dataset itself;
- ray-train: `train_loop_per_worker` under a TorchTrainer with 1 worker (CPU: 1), its
             dataset shard from Ray Train, checkpointing only at the end, no MLflow.

Both use one torch thread (Ray sets OMP_NUM_THREADS=1 for a 1-CPU worker) and time the
iterations after the first 5 (pipeline start-up). The sides alternate `--repeats` times and
the fastest of each is compared: the machine is shared, so the minimum is the least noisy.
Target: ratio ray-train / plain <= 1.10.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path


import torch

from pipelines.config import load_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
STAGE = "gate-res4-5"


def plain_loop(config, shards: str, iterations: int) -> float:
    """The loop body of train_loop_per_worker in this process; steady seconds per iteration."""
    from pag_model import TauSchedule
    from pipelines.datasets.ray_pipeline import DataResources, to_torch_batch, train_dataset
    from pipelines.checkpoint import build_model
    from pipelines.train.loop import SteadyTimer, _all_finite, forward_loss, poly_scheduler, sgd_step

    torch.set_num_threads(1)
    stage = next(s for s in config.stages if s.name == STAGE)
    train = config.train
    torch.manual_seed(train.seed)
    net = build_model(config.to_dict()["model"], asdict(stage))
    optimizer = torch.optim.SGD(net.parameters(), lr=stage.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    scheduler = poly_scheduler(optimizer, iterations, train.poly_power)
    tau = TauSchedule(stage.tau_start, stage.tau_end, iterations, stage.tau_shape)
    ds = train_dataset(shards, "train", config.data.crop, config.model.tasks, seed=train.seed,
                       resources=DataResources(cpu=1.0, object_store_bytes=256 << 20))
    timer = SteadyTimer()
    it = 0
    net.train()
    while it < iterations:
        for batch in ds.iter_torch_batches(batch_size=train.batch_size, collate_fn=to_torch_batch, drop_last=True):
            net.set_tau(tau.value(it))
            loss, *_ = forward_loss(net, net, batch, config.model.tasks, stage.rho, stage.lam, False)
            if not _all_finite(loss, 1, torch.device("cpu")):
                raise RuntimeError(f"non-finite loss at iteration {it}")
            sgd_step(loss, optimizer, scheduler)
            it += 1
            timer.tick(it)
            if it >= iterations:
                break
    return timer.sec_per_iter()


def ray_train_loop(config, shards: str, iterations: int, storage: str, name: str) -> float:
    """train_loop_per_worker under TorchTrainer (1 worker); its steady seconds per iteration."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.datasets.ray_pipeline import DataResources, ingest_options, train_dataset
    from pipelines.train.loop import train_loop_per_worker

    stage = asdict(next(s for s in config.stages if s.name == STAGE))
    stage["iterations"] = iterations
    train = asdict(config.train)
    train.update(checkpoint_every=iterations, log_every=iterations)
    limits = DataResources(cpu=1.0, object_store_bytes=256 << 20)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": config.to_dict()["model"], "stage": stage, "train": train,
                           "init_checkpoint": None, "tracking_uri": None, "run_id": None, "eval": None},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=storage),
        datasets={"train": train_dataset(shards, "train", config.data.crop, config.model.tasks,
                                         seed=config.train.seed, resources=limits)},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest_options(limits)),
    )
    return float(trainer.fit().metrics["sec_per_iter_steady"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import ray
    from ray.data import DataContext

    from tests.support.staged_data import make_shards

    with tempfile.TemporaryDirectory() as tmp:
        shards = str(make_shards(Path(tmp), train=64, test=2, size=(96, 128)))
        config = load_config(CONFIG, [f"data.uri={shards}", "data.crop=[64, 64]"])
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        plain, train = [], []
        for r in range(args.repeats):
            start = time.monotonic()
            plain.append(plain_loop(config, shards, args.iterations))
            train.append(ray_train_loop(config, shards, args.iterations, str(Path(tmp) / "runs"), f"bench-{r}"))
            print(f"repeat {r}: plain {plain[-1]:.4f} s/it, ray-train {train[-1]:.4f} s/it "
                  f"({time.monotonic() - start:.0f}s)", flush=True)
        ray.shutdown()
    best_plain, best_train = min(plain), min(train)
    print(f"{'':<12}{'s/iter':>10}")
    print(f"{'plain':<12}{best_plain:>10.4f}")
    print(f"{'ray-train':<12}{best_train:>10.4f}")
    print(f"ratio ray-train / plain = {best_train / best_plain:.3f} (target <= 1.10); "
          f"{args.iterations} iterations, first 5 untimed, best of {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
