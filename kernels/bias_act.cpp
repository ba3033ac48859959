// Entry point of the bias_act kernel: argument checks, the C++ CPU implementation, and the dispatch to
// CUDA (bias_act.cu) when built with -DSTYLEFACE_WITH_CUDA. Python side: styleface_cli/ops/bias_act.py.
// Narrow includes instead of <torch/extension.h> (and Tensor methods instead of the ATen/ops headers):
// they halve the compile time of a build.
#include <torch/csrc/utils/pybind.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "bias_act.h"

namespace styleface {

template <class T, int A>
static void bias_act_cpu_act(const bias_act_kernel_params& p)
{
    typedef typename InternalType<T>::scalar_t scalar_t;
    const T* x = (const T*)p.x;
    const T* b = (const T*)p.b;
    const T* xref = (const T*)p.xref;
    const T* yref = (const T*)p.yref;
    const T* dy = (const T*)p.dy;
    T* y = (T*)p.y;
    const scalar_t alpha = (scalar_t)p.alpha, gain = (scalar_t)p.gain;
    // The clamp as the storage type can hold it, so a clamped output stored as T still reads as clamped
    // in the gradient pass (e.g. 0.9 in float16 is 0.89990234).
    const scalar_t clamp = (scalar_t)(T)p.clamp;
    at::parallel_for(0, p.sizeX, 16384, [&](int64_t begin, int64_t end)
    {
        for (int64_t i = begin; i < end; i++)
        {
            scalar_t bi = b ? (scalar_t)b[(i / p.stepB) % p.sizeB] : (scalar_t)0;
            scalar_t xr = xref ? (scalar_t)xref[i] : (scalar_t)0;
            scalar_t yr = yref ? (scalar_t)yref[i] : (scalar_t)0;
            scalar_t d = dy ? (scalar_t)dy[i] : (scalar_t)1;
            y[i] = (T)bias_act_element<scalar_t, A>(p.grad, (scalar_t)x[i], bi, xr, yr, d, alpha, gain, clamp);
        }
    });
}

template <class T>
static void bias_act_cpu(const bias_act_kernel_params& p)
{
    switch (p.act)
    {
        case ACT_LINEAR:   bias_act_cpu_act<T, ACT_LINEAR>(p); break;
        case ACT_RELU:     bias_act_cpu_act<T, ACT_RELU>(p); break;
        case ACT_LRELU:    bias_act_cpu_act<T, ACT_LRELU>(p); break;
        case ACT_TANH:     bias_act_cpu_act<T, ACT_TANH>(p); break;
        case ACT_SIGMOID:  bias_act_cpu_act<T, ACT_SIGMOID>(p); break;
        case ACT_ELU:      bias_act_cpu_act<T, ACT_ELU>(p); break;
        case ACT_SELU:     bias_act_cpu_act<T, ACT_SELU>(p); break;
        case ACT_SOFTPLUS: bias_act_cpu_act<T, ACT_SOFTPLUS>(p); break;
        case ACT_SWISH:    bias_act_cpu_act<T, ACT_SWISH>(p); break;
        default: TORCH_CHECK(false, "bias_act: unknown activation id ", p.act);
    }
}

// Same element order in memory. Strides of size-1 dims do not matter (and .contiguous() keeps them
// as they were), so only the others are compared.
static bool same_layout(const at::Tensor& a, const at::Tensor& b)
{
    if (!a.has_storage() || a.sizes() != b.sizes())
        return false;
    for (int64_t i = 0; i < a.dim(); i++)
        if (a.size(i) > 1 && a.stride(i) != b.stride(i))
            return false;
    return true;
}

}  // namespace styleface

// y = clamp(act(x + b) * gain) for grad=0, its first (grad=1) or second (grad=2) derivative otherwise.
// x, xref, yref, dy, y: same shape, dtype, device and dense layout; b: [x.size(dim)] or empty.
// Empty xref/yref/dy tensors stand for "not given".
static at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor xref, at::Tensor yref,
                              at::Tensor dy, int64_t grad, int64_t dim, int64_t act, double alpha, double gain,
                              double clamp)
{
    // Arguments.
    TORCH_CHECK(x.is_floating_point(), "bias_act: x must be a floating-point tensor, got ", x.scalar_type());
    for (const at::Tensor* t : {&b, &xref, &yref, &dy})
        TORCH_CHECK(t->numel() == 0 || (t->dtype() == x.dtype() && t->device() == x.device()),
                    "bias_act: b, xref, yref and dy must have the same dtype and device as x");
    TORCH_CHECK(xref.numel() == 0 || xref.sizes() == x.sizes(), "bias_act: xref must have the same shape as x");
    TORCH_CHECK(yref.numel() == 0 || yref.sizes() == x.sizes(), "bias_act: yref must have the same shape as x");
    TORCH_CHECK(dy.numel() == 0 || dy.sizes() == x.sizes(), "bias_act: dy must have the same shape as x");
    TORCH_CHECK(x.numel() <= INT_MAX, "bias_act: x is too large");
    TORCH_CHECK(b.dim() == 1, "bias_act: b must have rank 1");
    TORCH_CHECK(b.numel() == 0 || (dim >= 0 && dim < x.dim()), "bias_act: dim is out of bounds");
    TORCH_CHECK(b.numel() == 0 || b.numel() == x.size(dim), "bias_act: b has the wrong number of elements");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(act >= styleface::ACT_LINEAR && act <= styleface::ACT_SWISH, "bias_act: unknown activation id ", act);

    // Layout: the kernels walk the storage in memory order, so every tensor must share x's dense layout.
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense");
    TORCH_CHECK(b.is_contiguous(), "bias_act: b must be contiguous");
    TORCH_CHECK(xref.numel() == 0 || styleface::same_layout(xref, x), "bias_act: xref must have the same layout as x");
    TORCH_CHECK(yref.numel() == 0 || styleface::same_layout(yref, x), "bias_act: yref must have the same layout as x");
    TORCH_CHECK(dy.numel() == 0 || styleface::same_layout(dy, x), "bias_act: dy must have the same layout as x");

    at::Tensor y = x.new_empty_strided(x.sizes(), x.strides());  // x is dense: same layout
    TORCH_CHECK(styleface::same_layout(y, x), "bias_act: y must have the same layout as x");
    if (x.numel() == 0)
        return y;

    styleface::bias_act_kernel_params p;
    p.x = x.data_ptr();
    p.b = b.numel() ? b.data_ptr() : NULL;
    p.xref = xref.numel() ? xref.data_ptr() : NULL;
    p.yref = yref.numel() ? yref.data_ptr() : NULL;
    p.dy = dy.numel() ? dy.data_ptr() : NULL;
    p.y = y.data_ptr();
    p.grad = (int)grad;
    p.act = (int)act;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    p.sizeX = (int)x.numel();
    p.sizeB = (int)b.numel();
    p.stepB = (b.numel() && x.size(dim) > 1) ? (int)x.stride(dim) : 1;  // a size-1 dim may have stride 0
    p.loopX = 1;

    if (x.is_cuda())
    {
#ifdef STYLEFACE_WITH_CUDA
        styleface::bias_act_cuda(p, x);
#else
        TORCH_CHECK(false, "bias_act: this is the CPU build of the kernel; x is on ", x.device());
#endif
    }
    else
    {
        TORCH_CHECK(x.device().is_cpu(), "bias_act: x must be a CPU or CUDA tensor, got ", x.device());
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cpu", [&]
        {
            styleface::bias_act_cpu<scalar_t>(p);
        });
    }
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp, or its derivatives (styleface)");
}
