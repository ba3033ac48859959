// Entry point of the upfirdn2d kernel: argument checks, the C++ CPU implementation, and the dispatch to
// CUDA (upfirdn2d.cu) when built with -DSTYLEFACE_WITH_CUDA. Python side: styleface_cli/ops/upfirdn2d.py.
//
// Narrow includes instead of <torch/extension.h> (and Tensor methods instead of the ATen/ops headers):
// they halve the compile time of a build.
#include <torch/csrc/utils/pybind.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "upfirdn2d.h"

namespace styleface {

template <class T>
static void upfirdn2d_cpu(const upfirdn2d_kernel_params& p)
{
    typedef typename InternalType<T>::scalar_t scalar_t;
    const int64_t rows = (int64_t)p.outSize.w * p.outSize.z * p.outSize.y;  // one task per (n, c, outY)
    const int64_t grain = 1 + 32768 / ((int64_t)p.outSize.x * p.filterSize.x * p.filterSize.y + 1);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end)
    {
        for (int64_t row = begin; row < end; row++)
        {
            const int outY = (int)(row % p.outSize.y);
            const int c = (int)((row / p.outSize.y) % p.outSize.z);
            const int n = (int)(row / ((int64_t)p.outSize.y * p.outSize.z));
            int inY, h, filterY;
            upfirdn2d_receptive_field(outY, p.up.y, p.down.y, p.pad0.y, p.filterSize.y, p.inSize.y, p.flip != 0,
                                      inY, h, filterY);
            const int filterStepX = (p.flip ? p.up.x : -p.up.x) * p.filterStride.x;
            const int filterStepY = (p.flip ? p.up.y : -p.up.y) * p.filterStride.y;
            for (int outX = 0; outX < p.outSize.x; outX++)
            {
                int inX, w, filterX;
                upfirdn2d_receptive_field(outX, p.up.x, p.down.x, p.pad0.x, p.filterSize.x, p.inSize.x,
                                          p.flip != 0, inX, w, filterX);
                const T* xp = (const T*)p.x + ((int64_t)inX * p.inStride.x + (int64_t)inY * p.inStride.y +
                                               (int64_t)c * p.inStride.z + (int64_t)n * p.inStride.w);
                const float* fp = p.f + filterX * p.filterStride.x + filterY * p.filterStride.y;
                scalar_t v = upfirdn2d_window<T, scalar_t>(xp, fp, w, h, p.inStride.x, p.inStride.y, filterStepX,
                                                           filterStepY);
                v *= (scalar_t)p.gain;
                ((T*)p.y)[(int64_t)outX * p.outStride.x + (int64_t)outY * p.outStride.y +
                          (int64_t)c * p.outStride.z + (int64_t)n * p.outStride.w] = (T)v;
            }
        }
    });
}

}  // namespace styleface

// y [N, C, outH, outW] = downsample(filter(pad(upsample(x [N, C, H, W])))) with a 2-D float32 filter f [fh, fw].
// x may have any strides; y gets x's suggested memory format.
static at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                            int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain)
{
    TORCH_CHECK(x.is_floating_point(), "upfirdn2d: x must be a floating-point tensor, got ", x.scalar_type());
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must reside on the same device as x");
    TORCH_CHECK(f.scalar_type() == at::kFloat, "upfirdn2d: f must be float32");
    TORCH_CHECK(x.numel() <= INT_MAX, "upfirdn2d: x is too large");
    TORCH_CHECK(f.numel() <= INT_MAX, "upfirdn2d: f is too large");
    TORCH_CHECK(x.numel() > 0, "upfirdn2d: x has zero size");
    TORCH_CHECK(f.numel() > 0, "upfirdn2d: f has zero size");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be rank 4 [N, C, H, W]");
    TORCH_CHECK(f.dim() == 2, "upfirdn2d: f must be rank 2 [fh, fw]");
    TORCH_CHECK((x.size(0) - 1) * x.stride(0) + (x.size(1) - 1) * x.stride(1) + (x.size(2) - 1) * x.stride(2) +
                (x.size(3) - 1) * x.stride(3) <= INT_MAX, "upfirdn2d: x memory footprint is too large");
    TORCH_CHECK(upx >= 1 && upy >= 1, "upfirdn2d: upsampling factor must be at least 1");
    TORCH_CHECK(downx >= 1 && downy >= 1, "upfirdn2d: downsampling factor must be at least 1");
    TORCH_CHECK(x.size(3) * upx + padx0 + padx1 >= f.size(1) && x.size(2) * upy + pady0 + pady1 >= f.size(0),
                "upfirdn2d: the upsampled and padded input is smaller than the filter");

    const int64_t outW = (x.size(3) * upx + padx0 + padx1 - f.size(1) + downx) / downx;
    const int64_t outH = (x.size(2) * upy + pady0 + pady1 - f.size(0) + downy) / downy;
    TORCH_CHECK(outW >= 1 && outH >= 1, "upfirdn2d: output must be at least 1x1");
    // y keeps x's memory format: channels_last in, channels_last out.
    const int64_t N = x.size(0), C = x.size(1);
    const bool channelsLast = x.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
    at::Tensor y = channelsLast ? x.new_empty_strided({N, C, outH, outW}, {outH * outW * C, 1, outW * C, C})
                                : x.new_empty({N, C, outH, outW});
    TORCH_CHECK(y.numel() <= INT_MAX, "upfirdn2d: output is too large");
    TORCH_CHECK((y.size(0) - 1) * y.stride(0) + (y.size(1) - 1) * y.stride(1) + (y.size(2) - 1) * y.stride(2) +
                (y.size(3) - 1) * y.stride(3) <= INT_MAX, "upfirdn2d: output memory footprint is too large");

    styleface::upfirdn2d_kernel_params p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.up = {(int)upx, (int)upy};
    p.down = {(int)downx, (int)downy};
    p.pad0 = {(int)padx0, (int)pady0};
    p.flip = flip ? 1 : 0;
    p.gain = gain;
    p.inSize = {(int)x.size(3), (int)x.size(2), (int)x.size(1), (int)x.size(0)};
    p.inStride = {(int)x.stride(3), (int)x.stride(2), (int)x.stride(1), (int)x.stride(0)};
    p.filterSize = {(int)f.size(1), (int)f.size(0)};
    p.filterStride = {(int)f.stride(1), (int)f.stride(0)};
    p.outSize = {(int)y.size(3), (int)y.size(2), (int)y.size(1), (int)y.size(0)};
    p.outStride = {(int)y.stride(3), (int)y.stride(2), (int)y.stride(1), (int)y.stride(0)};
    p.sizeMajor = (p.inStride.z == 1) ? p.inSize.w : p.inSize.w * p.inSize.z;
    p.sizeMinor = (p.inStride.z == 1) ? p.inSize.z : 1;
    p.loopMinor = p.loopX = p.launchMinor = p.loopMajor = 1;

    if (x.is_cuda())
    {
#ifdef STYLEFACE_WITH_CUDA
        styleface::upfirdn2d_cuda(p, x);
#else
        TORCH_CHECK(false, "upfirdn2d: this is the CPU build of the kernel; x is on ", x.device());
#endif
    }
    else
    {
        TORCH_CHECK(x.device().is_cpu(), "upfirdn2d: x must be a CPU or CUDA tensor, got ", x.device());
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&]
        {
            styleface::upfirdn2d_cpu<scalar_t>(p);
        });
    }
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR filter, downsample (styleface)");
}
