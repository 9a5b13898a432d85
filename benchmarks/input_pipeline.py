"""Input pipeline throughput: the Ray Data pipeline vs a torch DataLoader, in one run.

Both read the same Parquet shards and do the same work per sample, in a new random order
every epoch: read the sample's row from its shard, decode (PNG image and labels, raw float
arrays), random flip + crop (`shard_rows.SampleLoader`), collate into the training layout
(`ray_pipeline.to_torch_batch`).

- Ray Data: `ray_pipeline.train_dataset(...).iter_torch_batches(collate_fn=TorchCollate())`
  on a local 2-CPU Ray instance.
- DataLoader: a map-style dataset over the same row addresses, `shuffle=True`, 2 worker
  processes doing the read/decode/augment/collate.

Epochs alternate between the two (so drifting load on a shared machine hits both alike);
samples per second are the median over the epochs after a warm-up epoch each, with the
machine's busy cores over the same epochs (from /proc/stat: all processes, so read it on an
idle machine) and the benchmark's own CPU time per sample (its process tree from /proc: the
driver, the DataLoader's workers, the local Ray's processes), which other load leaves out. Data:
NYUv2-format scenes from `write_formats` converted with `pipelines.datasets.convert`.

Ray Data ships depth and normals in the compact dtypes of `pipelines/datasets/wire.py`
(`--with-float32` adds the old float32 path to the interleave); the DataLoader keeps float32
(casts would only cost it time).

    python benchmarks/input_pipeline.py [--samples 64] [--size 240 320] [--crop 224 304]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pag_model.tasks import target_fields  # noqa: E402
from pipelines.datasets import convert, ray_pipeline, shard_rows, shards  # noqa: E402
from pipelines.datasets.write_formats import write_dataset  # noqa: E402

TASKS = ("semantic", "depth", "normals")


class ShardSamples(Dataset):
    """The split's samples by index, read, decoded and augmented on access (DataLoader side).

    Args:
        files: shard paths.
        crop: (h, w) random crop.
    """

    def __init__(
        self,
        files: list[str],
        crop: tuple[int, int],
    ) -> None:
        fields = target_fields(TASKS)
        reader = shard_rows.RowReader(files, ray_pipeline._columns(fields))
        self.addresses = shard_rows.row_addresses(files)
        # float32 as decoded: the compact dtypes would only add casts to a DataLoader, whose
        # workers collate in place and hand over torch tensors in shared memory.
        self.loader = shard_rows.SampleLoader(reader, fields, crop, compact=False)

    def __len__(self) -> int:
        return len(self.addresses)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.loader.load(*self.addresses[index])


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return ray_pipeline.to_torch_batch({k: np.stack([it[k] for it in items]) for k in items[0]})


def _worker_init(worker_id: int) -> None:
    shard_rows.forget_open_files()  # do not share the parent's file handles


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _tree_cpu_seconds() -> float:
    """CPU time (user + system) so far of this process and all its living descendants: the
    DataLoader's workers, and the local Ray's GCS, raylet and workers (children of the
    raylet), read from /proc. Unlike /proc/stat it leaves out other users of the machine."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])  # utime + stime, in ticks
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _epoch_rate(batches: Iterable[dict[str, torch.Tensor]]) -> tuple[float, float, float]:
    """Samples per second of one pass over `batches`, the machine's busy cores meanwhile
    (every process: only meaningful on an otherwise idle machine), and this benchmark's own
    CPU ms per sample (its process tree, whatever else runs)."""
    busy0, total0 = _cpu_ticks()
    cpu0 = _tree_cpu_seconds()
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += batch["image"].shape[0]
    rate = count / (time.perf_counter() - start)
    cpu_ms = 1e3 * (_tree_cpu_seconds() - cpu0) / max(1, count)
    busy1, total1 = _cpu_ticks()
    return rate, (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0), cpu_ms


def _interleaved(
    epochs: dict[str, Callable[[], Iterable[dict[str, torch.Tensor]]]],
    n_epochs: int,
) -> dict[str, list[tuple[float, float, float]]]:
    """Per-epoch (rate, busy cores, own CPU ms/sample) of each pipeline, alternating epochs so
    load drift hits all alike; the order rotates every round, so no pipeline always follows
    the same one (in two runs with a fixed order, the Ray path that always came right after
    a DataLoader epoch was the slower of the two)."""
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in epochs}
    names = list(epochs)
    for round_index in range(n_epochs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(_epoch_rate(epochs[name]()))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320))
    parser.add_argument("--crop", type=int, nargs=2, default=(224, 304))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="per pipeline, one of them warm-up")
    parser.add_argument("--task-cpus", type=float, default=1.0, help="Ray Data CPUs per task")
    parser.add_argument("--rows-per-task", type=int, default=32)
    parser.add_argument("--with-float32", action="store_true",
                        help="also run Ray Data shipping float32 depth/normals (the old path)")
    args = parser.parse_args()
    import ray

    work = tempfile.mkdtemp(prefix="b2bench", dir="/tmp")
    try:
        raw = write_dataset("nyuv2", os.path.join(work, "raw"), {"train": args.samples}, tuple(args.size))
        out = os.path.join(work, "shards")
        convert.convert("nyuv2", str(raw), out, splits=["train"], shard_mb=8)
        manifest = shards.read_manifest(out)
        files = shards.split_files(out, "train", manifest)
        crop = tuple(args.crop)
        print(f"{args.samples} NYUv2-format samples {tuple(args.size)}, crop {crop}, batch "
              f"{args.batch_size}, tasks {TASKS}, {len(files)} shards, {os.cpu_count()} cores; "
              f"Ray Data: {args.task_cpus} CPU per task, {args.rows_per_task} rows per task")

        loader = DataLoader(ShardSamples(files, crop), batch_size=args.batch_size, shuffle=True,
                            num_workers=2, collate_fn=_collate, persistent_workers=True,
                            worker_init_fn=_worker_init)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 * 2**20, _temp_dir=os.path.join(work, "ray"))
        ray.data.DataContext.get_current().enable_progress_bars = False
        resources = ray_pipeline.DataResources(task_cpus=args.task_cpus)
        ds = ray_pipeline.train_dataset(out, "train", crop, TASKS, seed=0, resources=resources,
                                        rows_per_task=args.rows_per_task,
                                        rows_per_block=args.batch_size)
        collate = ray_pipeline.TorchCollate()
        pipelines: dict[str, Callable[[], Iterable[dict[str, torch.Tensor]]]] = {
            "torch": lambda: loader,
            "ray": lambda: ds.iter_torch_batches(batch_size=args.batch_size, collate_fn=collate),
        }
        if args.with_float32:
            ds32 = ray_pipeline.train_dataset(out, "train", crop, TASKS, seed=0, resources=resources,
                                              rows_per_task=args.rows_per_task,
                                              rows_per_block=args.batch_size, compact=False)
            pipelines["ray32"] = lambda: ds32.iter_torch_batches(batch_size=args.batch_size,
                                                                 collate_fn=collate)
        rates = _interleaved(pipelines, args.epochs)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"load average at the end: {os.getloadavg()[0]:.1f} (busy cores count every process)")
    print("busy cores: the whole machine's; own cores, own CPU ms/sample: this benchmark's process "
          "tree only (driver, DataLoader workers, local Ray); medians over the steady epochs")
    print(f"{'pipeline':<30}{'samples/s':>10}{'busy cores':>11}{'own cores':>10}{'own CPU ms/sample':>18}"
          "   samples/s per epoch (first = warm-up)")
    median_rate = {}
    labels = {"torch": "torch DataLoader, 2 workers", "ray": "Ray Data, compact dtypes",
              "ray32": "Ray Data, float32 (old)"}
    for name in rates:
        steady = rates[name][1:]
        rate = float(np.median([r for r, _, _ in steady]))
        cores = float(np.median([c for _, c, _ in steady]))
        own_ms = float(np.median([m for _, _, m in steady]))
        own_cores = float(np.median([r * m / 1e3 for r, _, m in steady]))
        median_rate[name] = rate
        per_epoch = [round(r, 1) for r, _, _ in rates[name]]
        print(f"{labels[name]:<30}{rate:>10.1f}{cores:>11.2f}{own_cores:>10.2f}{own_ms:>18.1f}   {per_epoch}")
    # Per-epoch ratios pair each Ray epoch with the DataLoader epoch of the same round.
    for name in [n for n in rates if n != "torch"]:
        paired = [r / t for (r, _, _), (t, _, _) in zip(rates[name][1:], rates["torch"][1:])]
        print(f"ratio {labels[name]} / DataLoader: {median_rate[name] / median_rate['torch']:.2f} "
              f"(medians; per-epoch pairs {[round(p, 2) for p in paired]}; target >= 0.85)")


if __name__ == "__main__":
    main()
