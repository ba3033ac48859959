// CUDA implementation of the bias_act kernel (after NVlabs stylegan3 bias_act.cu). Compiled only into
// the CUDA build (-DSTYLEFACE_WITH_CUDA); the element math lives in bias_act.h, shared with the CPU.
#include <c10/util/Half.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/Dispatch.h>

#include "bias_act.h"

namespace styleface {

template <class T, int A>
__global__ void bias_act_kernel(bias_act_kernel_params p)
{
    typedef typename InternalType<T>::scalar_t scalar_t;
    const scalar_t alpha = (scalar_t)p.alpha;
    const scalar_t gain = (scalar_t)p.gain;
    const scalar_t clamp = (scalar_t)(T)p.clamp;  // as T holds it (see bias_act.cpp)

    // Each thread handles loopX elements, blockDim.x apart (coalesced loads).
    int xi = blockIdx.x * p.loopX * blockDim.x + threadIdx.x;
    for (int loopIdx = 0; loopIdx < p.loopX && xi < p.sizeX; loopIdx++, xi += blockDim.x)
    {
        scalar_t x = (scalar_t)((const T*)p.x)[xi];
        scalar_t b = (p.b) ? (scalar_t)((const T*)p.b)[(xi / p.stepB) % p.sizeB] : (scalar_t)0;
        scalar_t xref = (p.xref) ? (scalar_t)((const T*)p.xref)[xi] : (scalar_t)0;
        scalar_t yref = (p.yref) ? (scalar_t)((const T*)p.yref)[xi] : (scalar_t)0;
        scalar_t dy = (p.dy) ? (scalar_t)((const T*)p.dy)[xi] : (scalar_t)1;
        scalar_t y = bias_act_element<scalar_t, A>(p.grad, x, b, xref, yref, dy, alpha, gain, clamp);
        ((T*)p.y)[xi] = (T)y;
    }
}

template <class T>
static void* choose_bias_act_kernel(int act)
{
    switch (act)
    {
        case ACT_LINEAR:   return (void*)bias_act_kernel<T, ACT_LINEAR>;
        case ACT_RELU:     return (void*)bias_act_kernel<T, ACT_RELU>;
        case ACT_LRELU:    return (void*)bias_act_kernel<T, ACT_LRELU>;
        case ACT_TANH:     return (void*)bias_act_kernel<T, ACT_TANH>;
        case ACT_SIGMOID:  return (void*)bias_act_kernel<T, ACT_SIGMOID>;
        case ACT_ELU:      return (void*)bias_act_kernel<T, ACT_ELU>;
        case ACT_SELU:     return (void*)bias_act_kernel<T, ACT_SELU>;
        case ACT_SOFTPLUS: return (void*)bias_act_kernel<T, ACT_SOFTPLUS>;
        case ACT_SWISH:    return (void*)bias_act_kernel<T, ACT_SWISH>;
    }
    return NULL;
}

void bias_act_cuda(const bias_act_kernel_params& params, const at::Tensor& x)
{
    const at::cuda::OptionalCUDAGuard device_guard(x.device());
    bias_act_kernel_params p = params;
    void* kernel = NULL;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&]
    {
        kernel = choose_bias_act_kernel<scalar_t>(p.act);
    });
    TORCH_CHECK(kernel, "bias_act: no CUDA kernel for activation id ", p.act);

    p.loopX = 4;
    int blockSize = 4 * 32;
    int gridSize = (p.sizeX - 1) / (p.loopX * blockSize) + 1;
    void* args[] = {&p};
    AT_CUDA_CHECK(cudaLaunchKernel(kernel, gridSize, blockSize, args, 0, at::cuda::getCurrentCUDAStream()));
}

}  // namespace styleface
