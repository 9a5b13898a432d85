// Perforated convolution, CUDA device code: the gather and scatter kernels and their launchers.
//
// Deliberately free of torch headers, so nvcc's per-architecture passes parse only this file
// (the host glue with at::mm lives in perforated_cuda.cpp, compiled once by the C++ compiler).
//   gather:  patch rows (n, k*k*C) from a channels-last input; consecutive threads copy
//            consecutive channels of one tap, so global reads and writes are coalesced.
//   scatter: res (n, Co) [channels-last out] or (Co, n) [NCHW out] + bias, ReLU (in fp32 for
//            half types) written to the active pixels of out; consecutive threads write
//            consecutive channels (channels-last) or consecutive active pixels of one plane.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "perforated_cuda.h"

namespace pag_perforated {
namespace {

constexpr int kThreads = 256;

template <typename T> struct Math { using type = T; };
template <> struct Math<__half> { using type = float; };
template <> struct Math<__nv_bfloat16> { using type = float; };

template <typename T> __device__ inline typename Math<T>::type up(T v) { return v; }
template <> __device__ inline float up(__half v) { return __half2float(v); }
template <> __device__ inline float up(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ inline T down(typename Math<T>::type v) { return v; }
template <> __device__ inline __half down<__half>(float v) { return __float2half_rn(v); }
template <> __device__ inline __nv_bfloat16 down<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T> __device__ inline T zero() { return down<T>(typename Math<T>::type(0)); }

inline unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20));
}

template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ x, Geometry g, const int64_t* __restrict__ index,
                                   int64_t n, T* __restrict__ rows) {
  const int64_t taps = g.k * g.k;
  const int64_t total = n * taps * g.channels;
  const int64_t plane = g.height * g.width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % g.channels;
    const int64_t tap = (e / g.channels) % taps;
    const int64_t p = index[e / (g.channels * taps)];
    const int64_t b = p / plane;
    const int64_t hh = (p % plane) / g.width - g.pad + (tap / g.k) * g.dilation;
    const int64_t ww = p % g.width - g.pad + (tap % g.k) * g.dilation;
    T v = zero<T>();
    if (hh >= 0 && hh < g.height && ww >= 0 && ww < g.width) {
      v = x[b * g.xs0 + hh * g.xs2 + ww * g.xs3 + c];
    }
    rows[e] = v;
  }
}

template <typename T>
__global__ void scatter_kernel(const T* __restrict__ res, const T* __restrict__ bias, Geometry g,
                               const int64_t* __restrict__ index, int64_t n, bool relu,
                               T* __restrict__ out) {
  using M = typename Math<T>::type;
  const int64_t total = n * g.out_channels;
  const int64_t plane = g.height * g.width;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = g.channels_last_out ? e / g.out_channels : e % n;
    const int64_t co = g.channels_last_out ? e % g.out_channels : e / n;
    const int64_t p = index[i];
    const int64_t b = p / plane, h = (p % plane) / g.width, w = p % g.width;
    M v = up(res[e]);
    if (bias != nullptr) v += up(bias[co]);
    if (relu && v < M(0)) v = M(0);
    out[b * g.os0 + co * g.os1 + h * g.os2 + w * g.os3] = down<T>(v);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_gather(const T* x, const Geometry& g, const int64_t* index, int64_t n, T* rows,
                          cudaStream_t stream) {
  gather_rows_kernel<T><<<blocks_for(n * g.k * g.k * g.channels), kThreads, 0, stream>>>(x, g, index, n, rows);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_scatter(const T* res, const T* bias, const Geometry& g, const int64_t* index, int64_t n,
                           bool relu, T* out, cudaStream_t stream) {
  scatter_kernel<T><<<blocks_for(n * g.out_channels), kThreads, 0, stream>>>(res, bias, g, index, n, relu, out);
  return cudaGetLastError();
}

#define PAG_INSTANTIATE(T)                                                                          \
  template cudaError_t launch_gather<T>(const T*, const Geometry&, const int64_t*, int64_t, T*,      \
                                        cudaStream_t);                                              \
  template cudaError_t launch_scatter<T>(const T*, const T*, const Geometry&, const int64_t*, int64_t, \
                                         bool, T*, cudaStream_t);
PAG_INSTANTIATE(float)
PAG_INSTANTIATE(double)
PAG_INSTANTIATE(__half)
PAG_INSTANTIATE(__nv_bfloat16)
#undef PAG_INSTANTIATE

}  // namespace pag_perforated
