"""Convert a dataset in its publisher's format to Parquet shards on disk or S3.

    python -m pipelines.datasets.convert --dataset nyuv2 --root /data/nyuv2 \
        --out s3://bucket/shards/nyuv2 [--splits train test] [--on-error skip] [--shard-mb 128]

Each sample is read by the dataset's reader, checked (shapes, dtypes, label ranges) and
encoded (`shards.encode_sample`); rows go into shards of about `--shard-mb` megabytes, each
published atomically when complete. Reruns are idempotent: samples already in a complete
shard are not read again, new shards only hold what is missing, and the manifest is
rewritten only when its content changes, so rerunning a finished conversion writes nothing.
After a run the shards hold exactly what the reader lists: a shard holding a sample the
source no longer lists in that split (e.g. a frame moved to another split) is rewritten
without it. Temporary files left by a killed run are removed by the next one.
With `--on-error skip`, bad files are left out and listed with their reasons in the manifest
(and retried on the next run, in case they were fixed); dataset-level files (split lists,
class mappings) are checked first and always fail the run, as does a split whose every
sample was skipped.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from pipelines.datasets import shards, storage
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.schema import IGNORE, SCHEMA_VERSION, Sample
from pipelines.datasets.storage import StorageOptions

log = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")


@dataclass
class ConvertReport:
    """What one conversion run did.

    Args:
        manifest: the manifest as written (or as found, when nothing changed).
        shards_written: shards published by this run.
        samples_written: samples in those shards.
        skipped: files left out by this run (`--on-error skip`).
        manifest_written: whether this run rewrote the manifest.
        shards_removed: stale shards deleted (they held samples the reader no longer lists).
    """

    manifest: dict[str, Any]
    shards_written: int = 0
    samples_written: int = 0
    skipped: int = 0
    manifest_written: bool = False
    shards_removed: int = 0


def check_sample(sample: Sample, num_classes: int) -> None:
    """Raise DatasetError naming the sample's file if it breaks the schema or label ranges.

    Args:
        sample: a reader's output.
        num_classes: valid semantic ids are 0..num_classes-1 and IGNORE.
    """
    try:
        sample.check()
    except ValueError as exc:
        problem = str(exc).removeprefix(f"{sample.source}: ")
        raise DatasetError(sample.source, problem) from exc
    for field, value in sample.targets().items():
        expected = shards.FIELD_DTYPES[field]
        if value.dtype != expected:
            raise DatasetError(
                sample.source, f"{field} has dtype {value.dtype}, expected {np.dtype(expected)}"
            )
    if sample.semantic is not None:
        labels = np.unique(sample.semantic)
        bad = labels[(labels >= num_classes) & (labels != IGNORE)]
        if bad.size:
            raise DatasetError(
                sample.source,
                f"semantic label(s) {bad.tolist()} out of range: "
                f"expected 0..{num_classes - 1} or {IGNORE}",
            )
    for field, allowed in (("boundary", (0, 1, IGNORE)), ("boundary_annotators", (0, 1))):
        value = getattr(sample, field)
        if value is not None:
            bad = np.setdiff1d(np.unique(value), allowed)
            if bad.size:
                problem = f"{field} value(s) {bad.tolist()} not in {allowed}"
                raise DatasetError(sample.source, problem)
    for field in ("depth", "normals"):
        value = getattr(sample, field)
        if value is not None and not np.isfinite(value).all():
            raise DatasetError(sample.source, f"{field} has non-finite values")


def _base_manifest(reader: Any, image_format: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": reader.name,
        "tasks": list(reader.tasks),
        "class_names": list(reader.class_names()),
        "image_format": image_format,
        "splits": {},
    }


def _load_existing(
    out: str,
    reader: Any,
    options: Optional[StorageOptions],
) -> Optional[dict[str, Any]]:
    if not storage.exists(shards.manifest_uri(out), options):
        return None
    manifest = shards.read_manifest(out, options)
    if manifest["dataset"] != reader.name:
        raise shards.ShardError(
            f"{shards.manifest_uri(out)}: holds dataset {manifest['dataset']!r}, "
            f"not {reader.name!r}; choose another --out"
        )
    return manifest


def _check_out(out: str) -> None:
    """ShardError unless local `out` is a directory or can be created as one."""
    if storage.is_s3(out):
        return
    path = Path(out).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise shards.ShardError(
                    f"--out {out}: {candidate} is a file, not a directory; expected a directory "
                    f"(created if missing) or s3://bucket/prefix"
                )
            return


def _listed_ids(reader: Any, split: str) -> list[str]:
    """The reader's ids of `split` (listing also checks the dataset-level files; the readers
    refuse a split whose folders are missing). An empty split is only warned about: the
    input pipeline refuses to train or evaluate on it, naming it."""
    ids = list(reader.sample_ids(split))
    if not ids:
        log.warning("dataset %r: split %r lists no samples", reader.name, split)
    return ids


def _check_unchosen(
    reader: Any,
    out: str,
    old: Optional[dict[str, Any]],
    chosen: Sequence[str],
    options: Optional[StorageOptions],
) -> None:
    """ShardError naming them if a split kept from an earlier run holds samples the reader
    no longer lists in it (the shards must hold exactly what the reader lists)."""
    for split in sorted((old or {}).get("splits", {})):
        if split in chosen:
            continue
        try:
            listed = set(reader.sample_ids(split))
        except DatasetError as exc:
            raise shards.ShardError(
                f"{out}: split {split!r} was converted before, but the reader can no longer list it "
                f"({exc}); convert it again or into another --out"
            ) from exc
        held = [sid for shard in shards.existing_shards(out, split, options) for sid in shard["sample_ids"]]
        stale = sorted(set(held) - listed)
        if stale:
            raise shards.ShardError(
                f"{out}: split {split!r} holds {len(stale)} sample(s) the reader no longer lists in it: "
                f"{stale[:10]}; convert that split again (add it to --splits) to drop them"
            )


def _convert_split(
    reader: Any,
    split: str,
    ids: Sequence[str],
    out: str,
    on_error: str,
    shard_bytes: int,
    image_format: str,
    options: Optional[StorageOptions],
    report: ConvertReport,
) -> tuple[dict[str, Any], list[str]]:
    """Write the missing samples of one split.

    Returns:
        Its manifest entry and the URIs of its stale shards: shards holding samples the
        reader no longer lists in this split, left out of the entry, their other samples
        written again; the caller deletes them once the new manifest is published.
    """
    listed = set(ids)
    existing, stale = [], []
    for shard in shards.existing_shards(out, split, options):
        (existing if set(shard["sample_ids"]) <= listed else stale).append(shard)
    if stale:
        gone = sorted({sid for s in stale for sid in s["sample_ids"]} - listed)
        log.info("%s: %d shard(s) hold sample(s) no longer listed (%s); rewriting them", split, len(stale), gone[:10])
    done = {sid for shard in existing for sid in shard["sample_ids"]}
    next_index = max((s["index"] for s in existing + stale), default=-1) + 1
    num_classes = len(reader.class_names())
    skipped: list[dict[str, str]] = []
    rows: list[dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal next_index, rows, size
        name = f"{split}/{shards.shard_name(next_index)}"
        info = shards.write_shard(rows, storage.join(out, name), options)
        existing.append({"file": name, "index": next_index, **info})
        log.info("wrote %s (%d samples, %.1f MB)", name, info["count"], info["bytes"] / 2**20)
        report.shards_written += 1
        report.samples_written += info["count"]
        next_index, rows, size = next_index + 1, [], 0

    for sample_id in ids:
        if sample_id in done:
            continue
        try:
            sample = reader.read(split, sample_id)
            check_sample(sample, num_classes)
        except DatasetError as exc:
            if on_error == "raise":
                raise
            log.warning("skipped %s", exc)
            skipped.append({"sample_id": sample_id, "path": exc.path, "problem": exc.problem})
            continue
        row = shards.encode_sample(sample, image_format)
        rows.append(row)
        size += sum(len(v) for v in row.values() if isinstance(v, bytes))
        if size >= shard_bytes:
            flush()
    if rows:
        flush()
    if skipped and not existing:
        first = skipped[0]
        kinds = len({(s["path"], s["problem"]) for s in skipped})
        raise DatasetError(
            first["path"],
            f"{first['problem']}; all {len(skipped)} sample(s) of split {split!r} were skipped "
            f"({kinds} distinct problem(s)), so nothing was converted: a dataset-level file is "
            f"probably missing or wrong",
        )
    report.skipped += len(skipped)
    field_sets = [set(s["fields"]) for s in existing]
    fields = sorted(set.intersection(*field_sets)) if field_sets else []
    entry = {
        "count": sum(s["count"] for s in existing),
        "fields": fields,
        "shards": [{"file": s["file"], "count": s["count"], "bytes": s["bytes"]} for s in existing],
        "skipped": skipped,
    }
    return entry, [storage.join(out, s["file"]) for s in stale]


def convert_reader(
    reader: Any,
    out: str,
    splits: Optional[Sequence[str]] = None,
    on_error: str = "raise",
    shard_mb: float = 128.0,
    image_format: str = "png",
    options: Optional[StorageOptions] = None,
) -> ConvertReport:
    """Convert what `reader` reads (see `readers.get_reader`) to shards under `out`.

    Before any sample is read: the output is checked, every chosen split is listed (which
    checks the dataset's shared files), and splits kept from an
    earlier run must not hold samples the reader no longer lists. Afterwards each split's
    shards hold exactly the samples the reader lists (less skipped ones): shards holding a
    sample it no longer lists are rewritten without it.

    Args:
        reader: has name, tasks, splits(), sample_ids(split), read(split, id), class_names().
        out: a local directory or s3://bucket/prefix.
        splits: which splits (default: all the reader has).
        on_error: "raise" stops at the first bad file; "skip" records it in the manifest
            (but a split whose every sample is bad is an error).
        shard_mb: target shard size in MB (a shard closes once its rows reach this size).
        image_format: "png" (lossless) or "jpeg" (quality 95).
        options: S3 settings (default: from the AWS environment variables).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error {on_error!r} is not one of {ON_ERROR}")
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    _check_out(out)
    available = list(reader.splits())
    chosen = list(splits) if splits else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ValueError(f"dataset {reader.name!r} has no split(s) {unknown}; it has {available}")
    ids = {split: _listed_ids(reader, split) for split in chosen}
    with storage.exclusive(out):
        for directory in [out] + [storage.join(out, split) for split in available]:
            for path in storage.remove_temp_files(directory, options):
                log.info("removed %s, left by an unfinished write", path)
        old = _load_existing(out, reader, options)
        _check_unchosen(reader, out, old, chosen, options)
        manifest = _base_manifest(reader, image_format)
        if old is not None:
            manifest["splits"] = dict(old["splits"])
        report = ConvertReport(manifest=manifest)
        stale: list[str] = []
        for split in chosen:
            manifest["splits"][split], split_stale = _convert_split(
                reader, split, ids[split], out, on_error, int(shard_mb * 2**20), image_format, options, report
            )
            stale += split_stale
        if manifest != old:
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            storage.write_bytes(shards.manifest_uri(out), text.encode(), options)
            report.manifest_written = True
        for uri in stale:  # only now: the published manifest no longer lists them
            storage.delete_file(uri, options)
            report.shards_removed += 1
    return report


def convert(
    dataset: str,
    root: str,
    out: str,
    **kwargs: Any,
) -> ConvertReport:
    """`convert_reader` on `readers.get_reader(dataset, root)`; same keyword arguments."""
    from pipelines.datasets.readers import get_reader

    return convert_reader(get_reader(dataset, root), out, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.datasets.convert",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("--dataset", required=True, help="a name readers.get_reader knows")
    parser.add_argument("--root", required=True, help="the dataset as its publisher ships it")
    parser.add_argument("--out", required=True, help="output directory or s3://bucket/prefix")
    parser.add_argument("--splits", nargs="+", default=None, help="default: every split")
    parser.add_argument("--on-error", choices=ON_ERROR, default="raise")
    parser.add_argument("--shard-mb", type=float, default=128.0)
    parser.add_argument("--image-format", choices=shards.IMAGE_FORMATS, default="png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = convert(
            args.dataset,
            args.root,
            args.out,
            splits=args.splits,
            on_error=args.on_error,
            shard_mb=args.shard_mb,
            image_format=args.image_format,
        )
    except (DatasetError, shards.ShardError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: e["count"] for s, e in report.manifest["splits"].items()}
    print(
        f"{args.out}: {report.shards_written} shard(s) with {report.samples_written} sample(s) "
        f"written, {report.skipped} skipped, {report.shards_removed} stale shard(s) removed; "
        f"samples per split {counts}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
