// CUDA implementation of the upfirdn2d kernel (after NVlabs stylegan3 upfirdn2d.cu, its general "large"
// kernel). Compiled only into the CUDA build (-DSTYLEFACE_WITH_CUDA); the receptive-field math and the
// inner product live in upfirdn2d.h, shared with the CPU implementation.
//
// stylegan3 also has shared-memory "small" kernels specialised per filter size and scaling factor; they
// are a speed optimisation for common shapes and are not ported here: every shape takes this path.
#include <c10/util/Half.h>
#include <c10/cuda/CUDAGuard.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/Dispatch.h>

#include "upfirdn2d.h"

namespace styleface {

template <class T>
__global__ void upfirdn2d_kernel_large(upfirdn2d_kernel_params p)
{
    typedef typename InternalType<T>::scalar_t scalar_t;

    // Thread -> (outY, minor) along grid x, outX along grid y, major along grid z.
    int minorBase = blockIdx.x * blockDim.x + threadIdx.x;
    int outY = minorBase / p.launchMinor;
    minorBase -= outY * p.launchMinor;
    int outXBase = blockIdx.y * p.loopX * blockDim.y + threadIdx.y;
    int majorBase = blockIdx.z * p.loopMajor;
    if (outXBase >= p.outSize.x || outY >= p.outSize.y || majorBase >= p.sizeMajor)
        return;

    int inY, h, filterY;
    upfirdn2d_receptive_field(outY, p.up.y, p.down.y, p.pad0.y, p.filterSize.y, p.inSize.y, p.flip != 0, inY, h, filterY);
    const int filterStepX = (p.flip ? p.up.x : -p.up.x) * p.filterStride.x;
    const int filterStepY = (p.flip ? p.up.y : -p.up.y) * p.filterStride.y;

    for (int majorIdx = 0, major = majorBase; majorIdx < p.loopMajor && major < p.sizeMajor; majorIdx++, major++)
    for (int minorIdx = 0, minor = minorBase; minorIdx < p.loopMinor && minor < p.sizeMinor; minorIdx++, minor += p.launchMinor)
    {
        int nc = major * p.sizeMinor + minor;
        int n = nc / p.inSize.z;
        int c = nc - n * p.inSize.z;
        for (int loopX = 0, outX = outXBase; loopX < p.loopX && outX < p.outSize.x; loopX++, outX += blockDim.y)
        {
            int inX, w, filterX;
            upfirdn2d_receptive_field(outX, p.up.x, p.down.x, p.pad0.x, p.filterSize.x, p.inSize.x, p.flip != 0, inX, w, filterX);
            const T* xp = &((const T*)p.x)[inX * p.inStride.x + inY * p.inStride.y + c * p.inStride.z + n * p.inStride.w];
            const float* fp = &p.f[filterX * p.filterStride.x + filterY * p.filterStride.y];
            scalar_t v = upfirdn2d_window<T, scalar_t>(xp, fp, w, h, p.inStride.x, p.inStride.y, filterStepX, filterStepY);
            v *= (scalar_t)p.gain;
            ((T*)p.y)[outX * p.outStride.x + outY * p.outStride.y + c * p.outStride.z + n * p.outStride.w] = (T)v;
        }
    }
}

void upfirdn2d_cuda(upfirdn2d_kernel_params& p, const at::Tensor& x)
{
    const at::cuda::OptionalCUDAGuard device_guard(x.device());
    void* kernel = NULL;
    AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&]
    {
        kernel = (void*)upfirdn2d_kernel_large<scalar_t>;
    });
    TORCH_CHECK(kernel, "upfirdn2d: no CUDA kernel for dtype ", x.scalar_type());

    // Channels innermost in memory (channels_last): neighbouring threads take neighbouring channels;
    // otherwise they take neighbouring output columns. Either way the loads coalesce.
    const bool channelsLast = (p.inStride.z == 1);
    p.loopMinor = channelsLast ? 4 : 1;
    p.loopX = channelsLast ? 1 : 4;
    p.loopMajor = (p.sizeMajor - 1) / 16384 + 1;  // keeps gridDim.z within its 65535 limit
    p.launchMinor = (p.sizeMinor - 1) / p.loopMinor + 1;
    const int launchMajor = (p.sizeMajor - 1) / p.loopMajor + 1;

    dim3 blockSize(4, 32, 1);
    dim3 gridSize(((p.outSize.y - 1) / blockSize.x + 1) * p.launchMinor,
                  (p.outSize.x - 1) / (blockSize.y * p.loopX) + 1,
                  launchMajor);
    void* args[] = {&p};
    AT_CUDA_CHECK(cudaLaunchKernel(kernel, gridSize, blockSize, args, 0, at::cuda::getCurrentCUDAStream()));
}

}  // namespace styleface
