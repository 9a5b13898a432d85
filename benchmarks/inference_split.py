"""Thread CPU time of the gated 3x3 layers vs the rest of PAG-ResNet-50, dense and perforated.

The setting of benchmarks/inference.py (gated model, 512x512, density 0.5, channels-last, BN
folded), one thread; forward hooks time conv2 (dense) or sparse_conv2 (perforated) of every
gated block. Minimum of 2 timed forwards each. Argument: fp32 or bf16.

    .venv/bin/python benchmarks/inference_split.py bf16
"""
import sys, time, torch

from inference import build, set_density
from pag_model.sparse import to_perforated, _detach_sparse, _attach_sparse, fold_batchnorms
from pag_model.blocks import PAGBottleneck
torch.set_num_threads(1)
prec = sys.argv[1]
acc = {"layers": 0.0}
def pre(m, i): acc["t0"] = time.thread_time()
def post(m, i, o): acc["layers"] += time.thread_time() - acc["t0"]
with torch.inference_mode():
    model = build("gated", None)
    images = torch.randn(1, 3, 512, 512).contiguous(memory_format=torch.channels_last)
    set_density(model, images, 0.5, 1); to_perforated(model); sp = _detach_sparse(model); fold_batchnorms(model)
    if prec == "bf16": model, images = model.to(torch.bfloat16), images.to(torch.bfloat16)
    blocks = [m for m in model.modules() if isinstance(m, PAGBottleneck)]
    hooks = []
    for b in blocks:
        hooks += [b.conv2.register_forward_pre_hook(pre), b.conv2.register_forward_hook(post)]
    for _, _, s in sp:
        hooks += [s.register_forward_pre_hook(pre), s.register_forward_hook(post)]
    res = {}
    for rep in range(3):
        for mode in ("dense", "perforated"):
            if mode == "dense": _detach_sparse(model); model.set_gate_mode("open")
            else: set_density(model, images, 0.5, 1); _attach_sparse(sp)
            acc["layers"] = 0.0
            t = time.thread_time(); model(images); total = time.thread_time() - t
            if rep and (mode not in res or total < res[mode][0]): res[mode] = (total, acc["layers"])
    for mode, (total, layers) in res.items():
        print(f"{prec} {mode}: forward {total*1e3:.0f} ms, gated 3x3 layers (conv2 / sparse_conv2) {layers*1e3:.0f} ms, rest {(total-layers)*1e3:.0f} ms")
