// Interface between the perforated convolution's CUDA kernels (perforated_cuda.cu, no torch
// headers) and its host glue (perforated_cuda.cpp). Types T: float, double, __half,
// __nv_bfloat16 (at::Half / at::BFloat16 have the same layout and are passed reinterpreted).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pag_perforated {

struct Geometry {
  int64_t channels, height, width, out_channels, k, dilation, pad;
  int64_t xs0, xs2, xs3;            // input strides for b, h, w (channel stride is 1)
  int64_t os0, os1, os2, os3;       // output strides for b, c, h, w
  bool channels_last_out;           // res is (n, Co) if true, else (Co, n)
};

template <typename T>
cudaError_t launch_gather(const T* x, const Geometry& g, const int64_t* index, int64_t n, T* rows,
                          cudaStream_t stream);

template <typename T>
cudaError_t launch_scatter(const T* res, const T* bias, const Geometry& g, const int64_t* index, int64_t n,
                           bool relu, T* out, cudaStream_t stream);

}  // namespace pag_perforated
