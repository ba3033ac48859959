// Fused bias + activation + gain + clamp (after NVlabs stylegan3 bias_act.h / bias_act.cu).
//
// One element function serves the CPU loop (bias_act.cpp) and the CUDA kernel (bias_act.cu). The
// activation ids must match ACTIVATIONS[...].kernel_idx in styleface_cli/ops/bias_act.py.
#pragma once

#include <ATen/core/Tensor.h>

#include "common.h"

namespace styleface {

enum BiasActId
{
    ACT_LINEAR = 1,
    ACT_RELU = 2,
    ACT_LRELU = 3,
    ACT_TANH = 4,
    ACT_SIGMOID = 5,
    ACT_ELU = 6,
    ACT_SELU = 7,
    ACT_SOFTPLUS = 8,
    ACT_SWISH = 9,
};

struct bias_act_kernel_params
{
    const void* x;     // [sizeX] in memory order: the input (grad=0) or the incoming gradient (grad>0)
    const void* b;     // [sizeB] bias, or NULL
    const void* xref;  // like x: the forward input (grad>0 and the activation needs it), or NULL
    const void* yref;  // like x: the forward output (grad>0 and the activation or clamp needs it), or NULL
    const void* dy;    // like x: the first gradient (grad=2 only), or NULL
    void* y;           // like x: the result

    int grad;          // 0 = forward, 1 = first derivative, 2 = second derivative
    int act;           // BiasActId
    double alpha;      // lrelu's negative slope (double: exact for float64 inputs)
    double gain;
    double clamp;      // < 0 = no clamp

    int sizeX;         // elements of x
    int sizeB;         // elements of b (0 = no bias)
    int stepB;         // stride of x along the bias dimension, so b index = (i / stepB) % sizeB
    int loopX;         // elements per CUDA thread
};

// One element. G: 0 forward, 1 first derivative (times x, the incoming gradient), 2 second derivative
// (times x and dy). xref/yref: the forward input/output; yref / gain recovers the activation's output.
template <class scalar_t, int A>
SF_HOST_DEVICE scalar_t bias_act_element(int G, scalar_t x, scalar_t b, scalar_t xref, scalar_t yref, scalar_t dy,
                                         scalar_t alpha, scalar_t gain, scalar_t clamp)
{
    const scalar_t one = (scalar_t)1;
    const scalar_t two = (scalar_t)2;
    const scalar_t expRange = (scalar_t)80;      // exp() beyond this overflows float; use the limit
    const scalar_t halfExpRange = (scalar_t)40;
    const scalar_t seluScale = (scalar_t)1.0507009873554804934193349852946;
    const scalar_t seluAlpha = (scalar_t)1.6732632423543772848170429916717;
    scalar_t yy = (gain != 0) ? yref / gain : (scalar_t)0;
    scalar_t y = 0;

    if (G == 0) x += b; else xref += b;

    if (A == ACT_LINEAR)
    {
        y = x;
    }
    if (A == ACT_RELU)
    {
        if (G == 0) y = (x > 0) ? x : (scalar_t)0;
        if (G == 1) y = (yy > 0) ? x : (scalar_t)0;
    }
    if (A == ACT_LRELU)
    {
        if (G == 0) y = (x > 0) ? x : x * alpha;
        if (G == 1) y = (yy > 0) ? x : x * alpha;
    }
    if (A == ACT_TANH)
    {
        if (G == 0) { scalar_t c = sf_exp(x); scalar_t d = one / c; y = (x < -expRange) ? -one : (x > expRange) ? one : (c - d) / (c + d); }
        if (G == 1) y = x * (one - yy * yy);
        if (G == 2) y = x * (one - yy * yy) * (-two * yy);
    }
    if (A == ACT_SIGMOID)
    {
        if (G == 0) y = (x < -expRange) ? (scalar_t)0 : one / (sf_exp(-x) + one);
        if (G == 1) y = x * yy * (one - yy);
        if (G == 2) y = x * yy * (one - yy) * (one - two * yy);
    }
    if (A == ACT_ELU)
    {
        if (G == 0) y = (x >= 0) ? x : sf_exp(x) - one;
        if (G == 1) y = (yy >= 0) ? x : x * (yy + one);
        if (G == 2) y = (yy >= 0) ? (scalar_t)0 : x * (yy + one);
    }
    if (A == ACT_SELU)
    {
        if (G == 0) y = (x >= 0) ? seluScale * x : (seluScale * seluAlpha) * (sf_exp(x) - one);
        if (G == 1) y = (yy >= 0) ? x * seluScale : x * (yy + seluScale * seluAlpha);
        if (G == 2) y = (yy >= 0) ? (scalar_t)0 : x * (yy + seluScale * seluAlpha);
    }
    if (A == ACT_SOFTPLUS)
    {
        if (G == 0) y = (x > expRange) ? x : sf_log(sf_exp(x) + one);
        if (G == 1) y = x * (one - sf_exp(-yy));
        if (G == 2) { scalar_t c = sf_exp(-yy); y = x * c * (one - c); }
    }
    if (A == ACT_SWISH)
    {
        if (G == 0)
            y = (x < -expRange) ? (scalar_t)0 : x / (sf_exp(-x) + one);
        else
        {
            scalar_t c = sf_exp(xref);
            scalar_t d = c + one;
            if (G == 1)
                y = (xref > halfExpRange) ? x : x * c * (xref + d) / (d * d);
            else
                y = (xref > halfExpRange) ? (scalar_t)0 : x * c * (xref * (two - d) + two * d) / (d * d * d);
        }
    }

    y *= gain * dy;

    // Forward: clamp. Gradients: zero where the forward output was clamped (yref is the clamped output).
    if (clamp >= 0)
    {
        if (G == 0)
            y = (y > -clamp && y < clamp) ? y : (y >= 0) ? clamp : -clamp;
        else
            y = (yref > -clamp && yref < clamp) ? y : (scalar_t)0;
    }
    return y;
}

#ifdef STYLEFACE_WITH_CUDA
// Launches the CUDA kernel for p on x's device and current stream (bias_act.cu).
void bias_act_cuda(const bias_act_kernel_params& p, const at::Tensor& x);
#endif

}  // namespace styleface
