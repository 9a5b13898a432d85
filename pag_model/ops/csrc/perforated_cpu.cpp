// Perforated convolution, CPU kernel (PerforatedCNNs, Figurnov et al. 2016; PAG, Kong & Fowlkes).
//
// Computes a stride-1, "same"-padded k x k convolution only at the active pixels listed in
// `index`, writing results in place into `out` (pre-filled by the caller with `fill` or
// zeros). Active pixels are processed in tiles: each tile's k*k*C patch rows are gathered
// from a channels-last input with one memcpy per tap (a tile stays near L2 size), one BLAS GEMM
// (at::mm_out -> MKL/OpenBLAS) multiplies them with the tap-major weight, and the scatter
// adds the bias and applies ReLU on the way out. Tiles run in parallel with
// at::parallel_for; each thread owns its buffers. Autograd stays in Python.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

struct Geometry {
  int64_t batch, channels, height, width, out_channels, k, dilation, pad, taps;
};

// Gather n patch rows (n, taps * C) for active pixels index[0..n) from a channels-last input.
template <typename scalar_t>
void gather_rows(const scalar_t* x, const int64_t* x_stride, const int64_t* index, int64_t n,
                 const Geometry& g, scalar_t* rows) {
  const int64_t row_len = g.taps * g.channels;
  const int64_t plane = g.height * g.width;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = index[i];
    const int64_t b = p / plane;
    const int64_t h = (p % plane) / g.width;
    const int64_t w = p % g.width;
    scalar_t* row = rows + i * row_len;
    for (int64_t ki = 0; ki < g.k; ++ki) {
      const int64_t hh = h - g.pad + ki * g.dilation;
      for (int64_t kj = 0; kj < g.k; ++kj) {
        const int64_t ww = w - g.pad + kj * g.dilation;
        scalar_t* dst = row + (ki * g.k + kj) * g.channels;
        if (hh < 0 || hh >= g.height || ww < 0 || ww >= g.width) {
          std::memset(dst, 0, sizeof(scalar_t) * g.channels);
        } else {
          const scalar_t* src = x + b * x_stride[0] + hh * x_stride[2] + ww * x_stride[3];
          std::memcpy(dst, src, sizeof(scalar_t) * g.channels);
        }
      }
    }
  }
}

template <typename scalar_t>
inline scalar_t epilogue(scalar_t v, const scalar_t* bias, int64_t co, bool relu) {
  if (bias != nullptr) v += bias[co];
  if (relu && v < scalar_t(0)) v = scalar_t(0);  // NaN passes through, as torch.relu
  return v;
}

template <typename scalar_t>
void run_tiles(const at::Tensor& x, const at::Tensor& weight_rows, const at::Tensor& index,
               const scalar_t* bias, at::Tensor& out, const Geometry& g, bool relu,
               int64_t tile) {
  const int64_t n_active = index.numel();
  const int64_t row_len = g.taps * g.channels;
  const int64_t n_tiles = (n_active + tile - 1) / tile;
  const bool out_channels_last = out.stride(1) == 1 || g.out_channels == 1;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t* ip = index.data_ptr<int64_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t xs[4] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const int64_t os[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const int64_t plane = g.height * g.width;
  const at::Tensor weight_t = weight_rows.t();  // (taps * C, Co) view

  at::parallel_for(0, n_tiles, 1, [&](int64_t first, int64_t last) {
    at::Tensor rows_buf = at::empty({tile * row_len}, x.options());
    at::Tensor res_buf = at::empty({tile * g.out_channels}, x.options());
    std::vector<int64_t> out_offset(tile);  // offset of each active pixel's (b, 0, h, w) in out
    for (int64_t t = first; t < last; ++t) {
      const int64_t start = t * tile;
      const int64_t n = std::min(tile, n_active - start);
      const int64_t* idx = ip + start;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = idx[i];
        const int64_t b = p / plane, h = (p % plane) / g.width, w = p % g.width;
        out_offset[i] = b * os[0] + h * os[2] + w * os[3];
      }
      gather_rows<scalar_t>(xp, xs, idx, n, g, rows_buf.data_ptr<scalar_t>());
      at::Tensor rows = rows_buf.narrow(0, 0, n * row_len).view({n, row_len});
      if (out_channels_last) {
        // (n, Co): each active pixel's output channels are contiguous in `out`.
        at::Tensor res = res_buf.narrow(0, 0, n * g.out_channels).view({n, g.out_channels});
        at::mm_out(res, rows, weight_t);
        const scalar_t* rp = res.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; ++i) {
          scalar_t* dst = op + out_offset[i];
          const scalar_t* src = rp + i * g.out_channels;
          for (int64_t co = 0; co < g.out_channels; ++co) {
            dst[co] = epilogue(src[co], bias, co, relu);
          }
        }
      } else {
        // (Co, n): one output plane at a time, ascending pixels within it.
        at::Tensor res = res_buf.narrow(0, 0, n * g.out_channels).view({g.out_channels, n});
        at::mm_out(res, weight_rows, rows.t());
        const scalar_t* rp = res.data_ptr<scalar_t>();
        const int64_t* off = out_offset.data();
        for (int64_t co = 0; co < g.out_channels; ++co) {
          const scalar_t* src = rp + co * n;
          scalar_t* plane_out = op + co * os[1];
          for (int64_t i = 0; i < n; ++i) {
            plane_out[off[i]] = epilogue(src[i], bias, co, relu);
          }
        }
      }
    }
  });
}

// out (B, Co, H, W) is written in place at the active pixels and returned.
//   x: (B, C, H, W) with unit channel stride (channels-last); weight_rows: (Co, k*k*C)
//   tap-major contiguous; index: (N,) int64 ascending flat pixel indices; tile: pixels per
//   tile (0: chosen below).
at::Tensor perforated_conv2d_cpu_(at::Tensor out, const at::Tensor& x,
                                  const at::Tensor& weight_rows, const at::Tensor& index,
                                  const c10::optional<at::Tensor>& bias, int64_t k,
                                  int64_t dilation, bool relu, int64_t tile) {
  TORCH_CHECK(x.device().is_cpu(), "perforated_conv2d_cpu_: input must be on the CPU");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4, "perforated_conv2d_cpu_: expected 4-D input/out");
  TORCH_CHECK(x.stride(1) == 1 || x.size(1) == 1,
              "perforated_conv2d_cpu_: input must be channels-last (unit channel stride)");
  TORCH_CHECK(weight_rows.is_contiguous() && weight_rows.dim() == 2,
              "perforated_conv2d_cpu_: weight_rows must be a contiguous (Co, k*k*C) matrix");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous(),
              "perforated_conv2d_cpu_: index must be contiguous int64");
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && weight_rows.scalar_type() == x.scalar_type(),
              "perforated_conv2d_cpu_: input, weight and out must share a dtype");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), out.size(1), k, dilation,
             dilation * (k / 2), k * k};
  TORCH_CHECK(weight_rows.size(0) == g.out_channels && weight_rows.size(1) == g.taps * g.channels,
              "perforated_conv2d_cpu_: weight_rows shape ", weight_rows.sizes(), " expected (",
              g.out_channels, ", ", g.taps * g.channels, ")");
  TORCH_CHECK(out.stride(1) == 1 || out.stride(3) == 1,
              "perforated_conv2d_cpu_: out must be contiguous or channels-last");
  if (index.numel() == 0) return out;
  if (tile <= 0) {
    // Rows per BLAS call: >= 128 so that BLAS's per-call packing of the (Co, k*k*C) weight is
    // amortised, about 4 MiB of gathered rows at most (two L2s' worth), and a tile count that
    // is a multiple of the thread count so that no thread idles at the end.
    const int64_t row_bytes = g.taps * g.channels * static_cast<int64_t>(x.element_size());
    const int64_t target = std::max<int64_t>(128, std::min<int64_t>(512, (int64_t(4) << 20) / row_bytes));
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    int64_t n_tiles = (index.numel() + target - 1) / target;
    n_tiles = ((n_tiles + threads - 1) / threads) * threads;
    tile = std::max<int64_t>(16, (index.numel() + n_tiles - 1) / n_tiles);
  }
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "perforated_conv2d_cpu_", [&] {
    const scalar_t* bp = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
    run_tiles<scalar_t>(x, weight_rows, index, bp, out, g, relu, tile);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("perforated_conv2d_", &perforated_conv2d_cpu_,
        "Perforated convolution at active pixels, written in place into out (CPU)");
}
