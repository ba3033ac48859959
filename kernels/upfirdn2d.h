// Upsample, FIR filter, downsample in one pass (after NVlabs stylegan3 upfirdn2d.h / upfirdn2d.cu).
//
// The receptive-field arithmetic and the inner product are shared by the CPU loop (upfirdn2d.cpp) and
// the CUDA kernel (upfirdn2d.cu). Python side: styleface_cli/ops/upfirdn2d.py.
#pragma once

#include <ATen/core/Tensor.h>

#include "common.h"

namespace styleface {

struct Int2 { int x, y; };
struct Int4 { int x, y, z, w; };  // x = width, y = height, z = channels, w = batch

struct upfirdn2d_kernel_params
{
    const void* x;       // input [N, C, H, W] with arbitrary strides (in elements)
    const float* f;      // filter [fh, fw], float32
    void* y;             // output [N, C, outH, outW]

    Int2 up;
    Int2 down;
    Int2 pad0;           // padding before the first pixel (x0, y0); the far side follows from the sizes
    int flip;            // 1 = correlate (do not flip the filter), 0 = convolve
    double gain;         // double: exact for float64 inputs

    Int4 inSize;         // W, H, C, N
    Int4 inStride;
    Int2 filterSize;     // fw, fh
    Int2 filterStride;
    Int4 outSize;
    Int4 outStride;
    int sizeMinor;       // CUDA work split: channels when they are innermost in memory, else 1
    int sizeMajor;
    int loopMinor;
    int loopX;
    int launchMinor;
    int loopMajor;
};

// The input pixels and the first filter tap one output coordinate sees along one axis.
// out: output coordinate; in (out): first input coordinate; count (out): number of input pixels;
// tap (out): filter index of the first input pixel; the filter steps by -up (+up when flipped).
SF_HOST_DEVICE void upfirdn2d_receptive_field(int out, int up, int down, int pad0, int filterSize, int inSize,
                                              bool flip, int& in, int& count, int& tap)
{
    int mid = out * down + up - 1 - pad0;  // last upsampled position under the filter, relative to the input
    in = clamp_int(floor_div(mid, up), 0, inSize);
    count = clamp_int(floor_div(mid + filterSize, up), 0, inSize) - in;
    tap = mid + filterSize - (in + 1) * up;
    if (flip)
        tap = filterSize - 1 - tap;
}

// Sum over the h x w input window starting at xp, with filter taps from fp (pointer steps in elements).
template <class T, class scalar_t>
SF_HOST_DEVICE scalar_t upfirdn2d_window(const T* xp, const float* fp, int w, int h, int inStrideX, int inStrideY,
                                         int filterStepX, int filterStepY)
{
    scalar_t v = 0;
    for (int y = 0; y < h; y++)
    {
        for (int x = 0; x < w; x++)
        {
            v += (scalar_t)(*xp) * (scalar_t)(*fp);
            xp += inStrideX;
            fp += filterStepX;
        }
        xp += inStrideY - w * inStrideX;
        fp += filterStepY - w * filterStepX;
    }
    return v;
}

#ifdef STYLEFACE_WITH_CUDA
// Launches the CUDA kernel for p on x's device and current stream (upfirdn2d.cu).
void upfirdn2d_cuda(upfirdn2d_kernel_params& p, const at::Tensor& x);
#endif

}  // namespace styleface
