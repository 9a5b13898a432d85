"""Datasets: readers for BSDS500, NYUv2, Stanford-2D-3D and Cityscapes in their published
formats, generated scenes written in those formats, and (elsewhere in this package) Parquet
shards and the Ray Data input pipeline. Import the submodules you need; nothing runs here."""
