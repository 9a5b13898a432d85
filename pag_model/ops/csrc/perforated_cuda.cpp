// Perforated convolution, CUDA host glue (PerforatedCNNs, Figurnov et al. 2016; PAG, Kong & Fowlkes).
//
// Same contract as perforated_cpu.cpp: a stride-1, "same"-padded k x k convolution computed
// only at the active pixels listed in `index` and written in place into `out` (pre-filled by
// the caller with `fill` or zeros). Per chunk of active pixels: gather kernel (perforated_cuda.cu)
// -> at::mm, i.e. cuBLAS/cuBLASLt in the input's dtype (fp32 honours
// torch.backends.cuda.matmul.allow_tf32; fp16/bf16 run on tensor cores with fp32
// accumulation) -> scatter kernel with bias and ReLU fused. All on the current stream, no host
// synchronisation (the caller's nonzero() that produced `index` is the only one).
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "perforated_cuda.h"

namespace {

template <typename scalar_t> struct Device { using type = scalar_t; };
template <> struct Device<at::Half> { using type = __half; };
template <> struct Device<at::BFloat16> { using type = __nv_bfloat16; };

template <typename scalar_t>
const typename Device<scalar_t>::type* dptr(const at::Tensor& t) {
  return reinterpret_cast<const typename Device<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

template <typename scalar_t>
typename Device<scalar_t>::type* dptr_mut(at::Tensor& t) {
  return reinterpret_cast<typename Device<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "perforated_conv2d_cuda_: ", what, " failed: ", cudaGetErrorString(err));
}

at::Tensor perforated_conv2d_cuda_(at::Tensor out, const at::Tensor& x, const at::Tensor& weight_rows,
                                   const at::Tensor& index, const c10::optional<at::Tensor>& bias,
                                   int64_t k, int64_t dilation, bool relu, int64_t chunk) {
  TORCH_CHECK(x.is_cuda() && out.is_cuda() && weight_rows.is_cuda() && index.is_cuda(),
              "perforated_conv2d_cuda_: all tensors must be CUDA tensors");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4, "perforated_conv2d_cuda_: expected 4-D input/out");
  TORCH_CHECK(x.stride(1) == 1 || x.size(1) == 1,
              "perforated_conv2d_cuda_: input must be channels-last (unit channel stride)");
  TORCH_CHECK(weight_rows.is_contiguous() && weight_rows.dim() == 2,
              "perforated_conv2d_cuda_: weight_rows must be a contiguous (Co, k*k*C) matrix");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous(),
              "perforated_conv2d_cuda_: index must be contiguous int64");
  TORCH_CHECK(out.scalar_type() == x.scalar_type() && weight_rows.scalar_type() == x.scalar_type(),
              "perforated_conv2d_cuda_: input, weight and out must share a dtype");
  pag_perforated::Geometry g{};
  g.channels = x.size(1);
  g.height = x.size(2);
  g.width = x.size(3);
  g.out_channels = out.size(1);
  g.k = k;
  g.dilation = dilation;
  g.pad = dilation * (k / 2);
  g.xs0 = x.stride(0);
  g.xs2 = x.stride(2);
  g.xs3 = x.stride(3);
  g.os0 = out.stride(0);
  g.os1 = out.stride(1);
  g.os2 = out.stride(2);
  g.os3 = out.stride(3);
  g.channels_last_out = out.stride(1) == 1 || g.out_channels == 1;
  const int64_t row_len = k * k * g.channels;
  TORCH_CHECK(weight_rows.size(0) == g.out_channels && weight_rows.size(1) == row_len,
              "perforated_conv2d_cuda_: weight_rows shape ", weight_rows.sizes(), " expected (",
              g.out_channels, ", ", row_len, ")");
  TORCH_CHECK(g.channels_last_out || out.stride(3) == 1,
              "perforated_conv2d_cuda_: out must be contiguous or channels-last");
  const int64_t n_active = index.numel();
  if (n_active == 0) return out;
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (chunk <= 0) chunk = std::max<int64_t>(1, (int64_t(64) << 20) / row_len);  // <= 64M elements
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();
  const at::Tensor weight_t = weight_rows.t();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "perforated_cuda", [&] {
    const auto* bp = bias_c.defined() ? dptr<scalar_t>(bias_c) : nullptr;
    for (int64_t start = 0; start < n_active; start += chunk) {
      const int64_t n = std::min(chunk, n_active - start);
      const int64_t* idx = index.data_ptr<int64_t>() + start;
      at::Tensor rows = at::empty({n, row_len}, x.options());
      check(pag_perforated::launch_gather(dptr<scalar_t>(x), g, idx, n, dptr_mut<scalar_t>(rows), stream),
            "gather kernel launch");
      at::Tensor res = g.channels_last_out ? at::mm(rows, weight_t) : at::mm(weight_rows, rows.t());
      check(pag_perforated::launch_scatter(dptr<scalar_t>(res), bp, g, idx, n, relu, dptr_mut<scalar_t>(out),
                                           stream),
            "scatter kernel launch");
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("perforated_conv2d_", &perforated_conv2d_cuda_,
        "Perforated convolution at active pixels, written in place into out (CUDA)");
}
