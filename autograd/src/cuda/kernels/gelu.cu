// GELU in both forms and its derivative (the formulas of ops/gelu.rs):
//
//     Erf:   y = 0.5 x (1 + erf(x / sqrt 2))      dy/dx = Phi(x) + x phi(x)
//     Tanh:  u = k (x + a x^3), t = tanh(u)       y = 0.5 x (1 + t)
//            dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2)
//
// `kind` is GELU_ERF or GELU_TANH (generated from the Rust enum).

#define GELU_K 0.7978845608028654
#define GELU_A 0.044715
#define INV_SQRT_2PI 0.3989422804014327
#define INV_SQRT_2 0.7071067811865476

template <typename T>
__device__ __forceinline__ T gelu_value(int kind, T x) {
    if (kind == GELU_TANH) {
        const T k = (T)GELU_K, a = (T)GELU_A;
        return T(0.5) * x * (T(1) + k_tanh(k * (x + a * x * x * x)));
    }
    return T(0.5) * x * (T(1) + k_erf(x * (T)INV_SQRT_2));
}

template <typename T>
__device__ __forceinline__ T gelu_slope(int kind, T x) {
    if (kind == GELU_TANH) {
        const T k = (T)GELU_K, a = (T)GELU_A;
        const T x2 = x * x;
        const T t = k_tanh(k * (x + a * x2 * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * a * x2);
    }
    const T cdf = T(0.5) * (T(1) + k_erf(x * (T)INV_SQRT_2));
    const T pdf = k_exp(T(-0.5) * x * x) * (T)INV_SQRT_2PI;
    return cdf + x * pdf;
}

// y = gelu(x).
template <typename T>
__device__ void gelu_forward(int kind, const T* x, T* y, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = gelu_value(kind, x[i]);
}

// dx = g gelu'(x).
template <typename T>
__device__ void gelu_backward(int kind, const T* x, const T* g, T* dx, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) dx[i] = g[i] * gelu_slope(kind, x[i]);
}

#define GELU_KERNELS(T, S)                                                                                  \
    KERNEL(gelu_forward_##S)(int kind, const T* x, T* y, i64 n) { gelu_forward(kind, x, y, n); }             \
    KERNEL(gelu_backward_##S)(int kind, const T* x, const T* g, T* dx, i64 n) { gelu_backward(kind, x, g, dx, n); }

GELU_KERNELS(float, f32)
GELU_KERNELS(double, f64)
