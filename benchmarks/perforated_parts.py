"""Where a perforated layer's time goes: the whole CPU kernel vs its GEMM alone.

One thread, thread CPU time, density 0.5, Res4 and Res5 shapes (64x64, batch 1), fp32 and
bf16: the dense conv + bias + ReLU, the in-place packed kernel (`PackedConv.run_into_`),
the same number of rows through oneDNN's matmul with the same packed weight in 256-row
tiles (what the kernel calls, without gather or store), and building the index list.

    .venv/bin/python benchmarks/perforated_parts.py
"""
import time, torch, torch.nn.functional as F
from pag_model.ops.cpu import PackedConv
from pag_model.ops.reference import active_indices
torch.set_num_threads(1)
def best(fn, r=5):
    fn(); b = 1e9
    for _ in range(r):
        t = time.thread_time(); fn(); b = min(b, time.thread_time() - t)
    return b
for dt in (torch.float32, torch.bfloat16):
  for C, d in ((256, 2), (512, 4)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, C, 64, 64, generator=g).to(dt).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(C, C, 3, 3, generator=g) * 0.02).to(dt); b = torch.zeros(C, dtype=dt)
    pc = PackedConv(w, b, d); rows, bias, packed = pc.for_dtype(dt)
    mask = torch.rand(1, 64, 64, generator=g) < 0.5
    n = int(mask.sum())
    A = torch.randn(n, 9 * C).to(dt)
    def gemm():
        for s in range(0, n, 256):
            torch.ops.mkldnn._linear_pointwise(A[s:s + 256], packed, bias, "relu", [], "")
    t_conv = best(lambda: torch.relu_(F.conv2d(x, w, b, padding=d, dilation=d)))
    t_full = best(lambda: pc.run_into_(x, x, mask, True))
    t_gemm = best(gemm)
    t_idx = best(lambda: active_indices(mask))
    print(f"{dt} C={C} d={d} density={n/4096:.3f}: dense conv {t_conv*1e3:.2f} ms; perforated {t_full*1e3:.2f} ms "
          f"= {t_full/t_conv:.3f} x dense; its GEMM alone (same rows, 256-row tiles, fused bias+ReLU) {t_gemm*1e3:.2f} ms "
          f"({t_gemm/t_conv:.3f} x dense, {t_gemm/t_full:.0%} of perforated); gather+store+rest {(t_full-t_gemm)*1e3:.2f} ms; "
          f"index list {t_idx*1e3:.3f} ms", flush=True)
