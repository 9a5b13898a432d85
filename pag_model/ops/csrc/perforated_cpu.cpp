// Perforated convolution, CPU kernel (PerforatedCNNs, Figurnov et al. 2016; PAG, Kong & Fowlkes).
//
// Computes a stride-1, "same"-padded k x k convolution only at the active pixels listed in
// `index`, writing results in place into `out` (which holds the caller's fill at inactive
// pixels; the kernel never touches them). Active pixels are processed in tiles: each tile's
// k*k*C patch rows are gathered from a channels-last input with one memcpy per tap (a tile
// stays near L2 size) and multiplied with the weight by one GEMM, whose (n, Co) result rows
// are stored at their pixels with bias and ReLU. Tiles run in one at::parallel_for region
// (OpenMP's persistent pool: no thread start-up per call), handed out dynamically; each
// thread owns its buffers.
//
// GEMM engines (measured in benchmarks/RESULTS.md):
//   perforated_conv2d_        at::mm_out with the tap-major (Co, k*k*C) weight (MKL / oneDNN
//                             for bf16), bias and ReLU in the store loop.
//   perforated_conv2d_packed_ oneDNN's matmul (mkldnn::_linear_pointwise) with a weight
//                             reordered once per layer (mkldnn::_reorder_linear_weight) and
//                             bias + ReLU fused into the GEMM; the store is a row memcpy.
// Both accumulate in fp32 for bf16/fp16 inputs.
//
// In place with out == x (the PAG block: output = X at inactive pixels): every tile reads X
// around its pixels, so results are kept per tile and stored only after all tiles are
// computed (after the parallel region). Autograd stays in Python.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
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

// Bias (a copy in the accumulation type: float, or double for double) and ReLU on a result row.
template <typename scalar_t>
inline void epilogue_row(scalar_t* row, const at::opmath_type<scalar_t>* bias, int64_t n, bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t co = 0; co < n; ++co) {
    acc_t v = static_cast<acc_t>(row[co]);
    if (bias != nullptr) v += bias[co];
    if (relu && v < acc_t(0)) v = acc_t(0);  // NaN passes through, as torch.relu
    row[co] = static_cast<scalar_t>(v);
  }
}

// Store a tile's (n, Co) result rows (epilogue already applied) at their pixels.
template <typename scalar_t>
void store_rows(const scalar_t* res, int64_t n, const int64_t* idx, const Geometry& g,
                scalar_t* op, const int64_t* os) {
  const int64_t plane = g.height * g.width;
  const bool out_channels_last = os[1] == 1 || g.out_channels == 1;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = idx[i];
    const int64_t b = p / plane, h = (p % plane) / g.width, w = p % g.width;
    scalar_t* dst = op + b * os[0] + h * os[2] + w * os[3];
    const scalar_t* src = res + i * g.out_channels;
    if (out_channels_last) {
      std::memcpy(dst, src, sizeof(scalar_t) * g.out_channels);
    } else {
      for (int64_t co = 0; co < g.out_channels; ++co) dst[co * os[1]] = src[co];
    }
  }
}

// One GEMM engine: rows (n, taps*C) -> (n, Co) with bias and ReLU applied.
struct Engine {
  at::Tensor weight_t;  // mm: (taps*C, Co) view of the tap-major weight
  at::Tensor packed;    // oneDNN: the reordered weight
  c10::optional<at::Tensor> bias;  // fused by oneDNN (input dtype)
  bool relu = false;

  // Result rows for `rows`; `res` is a scratch (n, Co) tensor the mm engine may write into.
  at::Tensor run(const at::Tensor& rows, at::Tensor res, const at::Tensor& bias_acc) const {
    if (packed.defined()) {
      static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(
          "mkldnn::_linear_pointwise", "");
      torch::jit::Stack stack;
      stack.reserve(6);
      stack.emplace_back(rows);
      stack.emplace_back(packed);
      stack.emplace_back(bias);
      stack.emplace_back(std::string(relu ? "relu" : "none"));
      stack.emplace_back(c10::List<c10::optional<at::Scalar>>());
      stack.emplace_back(std::string(""));
      op.callBoxed(&stack);
      return stack[0].toTensor();
    }
    at::mm_out(res, rows, weight_t);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, res.scalar_type(), "epilogue", [&] {
      scalar_t* rp = res.data_ptr<scalar_t>();
      const int64_t co = res.size(1);
      const auto* bp = bias_acc.defined() ? bias_acc.data_ptr<at::opmath_type<scalar_t>>() : nullptr;
      for (int64_t i = 0; i < res.size(0); ++i) epilogue_row<scalar_t>(rp + i * co, bp, co, relu);
    });
    return res;
  }
};

template <typename scalar_t>
void run_tiles(const at::Tensor& x, const Engine& engine, const at::Tensor& index,
               const at::Tensor& bias_acc, at::Tensor& out, const Geometry& g, int64_t tile,
               bool deferred) {
  const int64_t n_active = index.numel();
  const int64_t row_len = g.taps * g.channels;
  const int64_t n_tiles = (n_active + tile - 1) / tile;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t* ip = index.data_ptr<int64_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t xs[4] = {x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
  const int64_t os[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  // Deferred (out aliases x): one result block per tile, stored after every tile is computed.
  std::vector<at::Tensor> results(deferred ? n_tiles : 0);
  at::Tensor all_res;
  if (deferred && !engine.packed.defined()) all_res = at::empty({n_active, g.out_channels}, x.options());

  // Tiles are handed out dynamically (an atomic counter) rather than in fixed halves: on a
  // shared machine a thread that is descheduled for a while no longer makes the other one
  // wait at the end of the region with half of the work undone.
  std::atomic<int64_t> next_tile{0};
  // PAG_PERFORATED_CPU_SERIAL_TILES=1: tiles in order on the calling thread, each GEMM free to
  // use every thread (an experiment for two-thread scaling; see benchmarks/RESULTS.md).
  const char* serial_env = std::getenv("PAG_PERFORATED_CPU_SERIAL_TILES");
  const bool serial = serial_env != nullptr && serial_env[0] == '1';
  const int64_t workers = serial ? 1 : std::min<int64_t>(n_tiles, std::max<int64_t>(1, at::get_num_threads()));
  auto work = [&](int64_t, int64_t) {
    at::Tensor rows_buf = at::empty({tile, row_len}, x.options());
    at::Tensor res_buf;
    if (!deferred && !engine.packed.defined()) res_buf = at::empty({tile, g.out_channels}, x.options());
    for (int64_t t = next_tile.fetch_add(1); t < n_tiles; t = next_tile.fetch_add(1)) {
      const int64_t start = t * tile;
      const int64_t n = std::min(tile, n_active - start);
      const int64_t* idx = ip + start;
      gather_rows<scalar_t>(xp, xs, idx, n, g, rows_buf.data_ptr<scalar_t>());
      at::Tensor rows = rows_buf.narrow(0, 0, n);
      at::Tensor scratch = deferred ? (all_res.defined() ? all_res.narrow(0, start, n) : at::Tensor())
                                    : (res_buf.defined() ? res_buf.narrow(0, 0, n) : at::Tensor());
      at::Tensor res = engine.run(rows, scratch, bias_acc);
      if (deferred) {
        results[t] = res;
      } else {
        store_rows<scalar_t>(res.data_ptr<scalar_t>(), n, idx, g, op, os);
      }
    }
  };
  if (workers == 1) {
    work(0, 1);  // tiles in order on this thread; each GEMM may use every thread
  } else {
    at::parallel_for(0, workers, 1, work);
  }
  if (!deferred) return;
  // In place: all tiles have read x; store the rows (a copy of n x Co values, a few percent
  // of the GEMM's time at most) on this thread, without a second parallel region.
  for (int64_t t = 0; t < n_tiles; ++t) {
    const int64_t start = t * tile;
    store_rows<scalar_t>(results[t].data_ptr<scalar_t>(), std::min(tile, n_active - start), ip + start, g, op, os);
  }
}

bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  if (!a.has_storage() || !b.has_storage()) return false;
  return a.storage().is_alias_of(b.storage());
}

at::Tensor run(at::Tensor out, const at::Tensor& x, const at::Tensor& weight_shape_src,
               int64_t out_channels, int64_t row_len, Engine& engine, const at::Tensor& index,
               const c10::optional<at::Tensor>& bias, int64_t k, int64_t dilation, int64_t tile,
               const char* name) {
  TORCH_CHECK(x.device().is_cpu(), name, ": input must be on the CPU");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4, name, ": expected 4-D input/out");
  TORCH_CHECK(x.stride(1) == 1 || x.size(1) == 1,
              name, ": input must be channels-last (unit channel stride)");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous() && index.dim() == 1,
              name, ": index must be a contiguous 1-D int64 tensor");
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && weight_shape_src.scalar_type() == x.scalar_type(),
              name, ": input ", x.scalar_type(), ", weight ", weight_shape_src.scalar_type(),
              " and out ", out.scalar_type(), " must share a dtype");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), out.size(1), k, dilation,
             dilation * (k / 2), k * k};
  TORCH_CHECK(out.size(0) == g.batch && out.size(2) == g.height && out.size(3) == g.width,
              name, ": out ", out.sizes(), " does not match input ", x.sizes());
  TORCH_CHECK(out_channels == g.out_channels && row_len == g.taps * g.channels, name,
              ": weight is (", out_channels, ", ", row_len, "), expected (", g.out_channels, ", ",
              g.taps * g.channels, ")");
  TORCH_CHECK(out.stride(1) == 1 || out.is_contiguous(),
              name, ": out must be contiguous or channels-last");
  if (index.numel() == 0) return out;
  const bool deferred = overlaps(out, x);
  if (deferred) {
    TORCH_CHECK(out.data_ptr() == x.data_ptr() && out.strides() == x.strides() && g.out_channels == g.channels,
                name, ": out may alias the input only as the very same tensor (in place)");
  }
  if (tile <= 0) {
    // Rows per GEMM: >= 128 so that the GEMM's per-call overhead is amortised, about 4 MiB of
    // gathered rows at most (two L2s' worth), and a tile count that is a multiple of the
    // thread count so that no thread idles at the end.
    const int64_t row_bytes = g.taps * g.channels * static_cast<int64_t>(x.element_size());
    const int64_t target = std::max<int64_t>(128, std::min<int64_t>(512, (int64_t(4) << 20) / row_bytes));
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    int64_t n_tiles = (index.numel() + target - 1) / target;
    n_tiles = ((n_tiles + threads - 1) / threads) * threads;
    tile = std::max<int64_t>(16, (index.numel() + n_tiles - 1) / n_tiles);
  }
  at::Tensor bias_acc;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == g.out_channels, name, ": bias has ", bias->numel(),
                " elements, expected ", g.out_channels);
    bias_acc = bias->to(at::toOpMathType(x.scalar_type())).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "perforated_conv2d_cpu", [&] {
    run_tiles<scalar_t>(x, engine, index, bias_acc, out, g, tile, deferred);
  });
  return out;
}

// out (B, Co, H, W) is written in place at the active pixels and returned. out may be x
// itself (then Co == C).
//   x: (B, C, H, W) with unit channel stride (channels-last); weight_rows: (Co, k*k*C)
//   tap-major contiguous; index: (N,) int64 ascending flat pixel indices; tile: pixels per
//   tile (0: chosen here).
at::Tensor perforated_conv2d_cpu_(at::Tensor out, const at::Tensor& x,
                                  const at::Tensor& weight_rows, const at::Tensor& index,
                                  const c10::optional<at::Tensor>& bias, int64_t k,
                                  int64_t dilation, bool relu, int64_t tile) {
  TORCH_CHECK(weight_rows.is_contiguous() && weight_rows.dim() == 2,
              "perforated_conv2d_: weight_rows must be a contiguous (Co, k*k*C) matrix");
  Engine engine;
  engine.weight_t = weight_rows.t();
  engine.relu = relu;
  return run(out, x, weight_rows, weight_rows.size(0), weight_rows.size(1), engine, index, bias, k,
             dilation, tile, "perforated_conv2d_");
}

// As perforated_conv2d_, with oneDNN's matmul on a weight packed once:
//   packed = torch.ops.mkldnn._reorder_linear_weight(weight_rows, tile_hint), an opaque
//   tensor; out_channels, row_len: weight_rows' shape; bias: (Co,) in x's dtype or None.
at::Tensor perforated_conv2d_packed_cpu_(at::Tensor out, const at::Tensor& x,
                                         const at::Tensor& packed, int64_t out_channels,
                                         int64_t row_len, const at::Tensor& index,
                                         const c10::optional<at::Tensor>& bias, int64_t k,
                                         int64_t dilation, bool relu, int64_t tile) {
  Engine engine;
  engine.packed = packed;
  engine.relu = relu;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == x.scalar_type(), "perforated_conv2d_packed_: bias ",
                bias->scalar_type(), " must have the input's dtype ", x.scalar_type());
    engine.bias = bias->contiguous();
  }
  // Bias and ReLU are fused by oneDNN: the store is a plain copy (no bias_acc).
  return run(out, x, x, out_channels, row_len, engine, index, c10::nullopt, k, dilation, tile,
             "perforated_conv2d_packed_");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("perforated_conv2d_", &perforated_conv2d_cpu_,
        "Perforated convolution at active pixels, written in place into out (CPU, at::mm)");
  m.def("perforated_conv2d_packed_", &perforated_conv2d_packed_cpu_,
        "Perforated convolution at active pixels, written in place into out (CPU, oneDNN "
        "matmul with a packed weight)");
}
