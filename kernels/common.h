// Shared by the C++ (CPU) and CUDA builds of every styleface kernel.
//
// Each kernel keeps its per-element math in its header as SF_HOST_DEVICE functions, so the CPU loop in
// <name>.cpp and the CUDA kernel in <name>.cu compile the very same formulas.
#pragma once

#include <cmath>
#include <climits>

#ifdef __CUDACC__
#define SF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SF_HOST_DEVICE inline
#endif

namespace styleface {

// The type arithmetic happens in: float for half and float, double for double.
template <class T> struct InternalType { typedef float scalar_t; };
template <> struct InternalType<double> { typedef double scalar_t; };

template <class T> SF_HOST_DEVICE T sf_exp(T x)
{
#ifdef __CUDA_ARCH__
    return exp(x);  // CUDA's overloads for float and double
#else
    return std::exp(x);
#endif
}

template <class T> SF_HOST_DEVICE T sf_log(T x)
{
#ifdef __CUDA_ARCH__
    return log(x);
#else
    return std::log(x);
#endif
}

// Floor division for possibly negative numerators (C++ '/' truncates towards zero).
SF_HOST_DEVICE int floor_div(int a, int b)
{
    int t = 1 - a / b;
    return (a + t * b) / b - t;
}

SF_HOST_DEVICE int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

}  // namespace styleface
