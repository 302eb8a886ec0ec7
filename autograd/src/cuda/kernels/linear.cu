// The epilogues of the fused Linear ops (ops/linear.rs); the products themselves are cuBLAS
// GEMMs, and the bias gradient is a column sum (reduce.cu).
//
//     linear:            y = h + b                          h = x W^T, rows x n
//     linear_residual:   y = r + s_i (h + b)                s_i: the sample's scale, or 1
//                        backward: g_branch = s_i g
//     linear_gelu:       h' = h + b,  a = gelu(h')          backward: dh = g gelu'(h + b)

// y[r, j] += b[j].
template <typename T>
__device__ void bias_add(T* y, const T* b, i64 rows, i64 n) {
    const i64 total = rows * n;
    for (i64 i = thread_index(); i < total; i += thread_count()) y[i] += b[i % n];
}

// y = res + s (y + b): `b` and `scale` may be null (no bias; s = 1). Row r belongs to sample
// r / rows_per_sample.
template <typename T>
__device__ void residual_epilogue(T* y, const T* b, const T* res, const T* scale, i64 rows, i64 n, i64 rows_per_sample) {
    const i64 total = rows * n;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        T v = y[i];
        if (b) v += b[i % n];
        const T s = scale ? scale[(i / n) / rows_per_sample] : T(1);
        y[i] = res[i] + s * v;
    }
}

// out = g * scale[sample], the sample of element i being i / per_sample.
template <typename T>
__device__ void scale_samples(const T* g, const T* scale, T* out, i64 per_sample, i64 total) {
    for (i64 i = thread_index(); i < total; i += thread_count()) out[i] = g[i] * scale[i / per_sample];
}

// h += b (in place: the pre-activation), a = gelu(h). `a` may be null (backward only needs h).
template <typename T>
__device__ void bias_gelu_forward(int kind, T* h, const T* b, T* a, i64 rows, i64 n) {
    const i64 total = rows * n;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const T v = h[i] + b[i % n];
        h[i] = v;
        if (a) a[i] = gelu_value(kind, v);
    }
}

// dh = g gelu'(h + b), from the product h = x W^T recomputed without its bias; `b` may be null
// (h already holds the bias).
template <typename T>
__device__ void bias_gelu_backward(int kind, const T* h, const T* b, const T* g, T* dh, i64 rows, i64 n) {
    const i64 total = rows * n;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const T v = b ? h[i] + b[i % n] : h[i];
        dh[i] = g[i] * gelu_slope(kind, v);
    }
}

#define LINEAR_KERNELS(T, S)                                                                              \
    KERNEL(bias_add_##S)(T * y, const T* b, i64 rows, i64 n) { bias_add(y, b, rows, n); }                  \
    KERNEL(residual_epilogue_##S)(T * y, const T* b, const T* res, const T* scale, i64 rows, i64 n,        \
                                  i64 rows_per_sample) {                                                  \
        residual_epilogue(y, b, res, scale, rows, n, rows_per_sample);                                    \
    }                                                                                                     \
    KERNEL(scale_samples_##S)(const T* g, const T* scale, T* out, i64 per_sample, i64 total) {             \
        scale_samples(g, scale, out, per_sample, total);                                                  \
    }                                                                                                     \
    KERNEL(bias_gelu_forward_##S)(int kind, T* h, const T* b, T* a, i64 rows, i64 n) {                     \
        bias_gelu_forward(kind, h, b, a, rows, n);                                                        \
    }                                                                                                     \
    KERNEL(bias_gelu_backward_##S)(int kind, const T* h, const T* b, const T* g, T* dh, i64 rows, i64 n) { \
        bias_gelu_backward(kind, h, b, g, dh, rows, n);                                                   \
    }

LINEAR_KERNELS(float, f32)
LINEAR_KERNELS(double, f64)
