// Elementwise maps of one and two tensors (with NumPy broadcasting), strided copies (permute,
// narrow, concat, broadcast_to, patchify: every move of elements is one), gathers and casts.
//
// The op codes (U_*, B_*) are generated from the Rust enums `UnaryOp` / `BinaryOp`, so both
// sides agree on them; a switch on a uniform op code costs nothing next to the memory traffic.

template <typename T>
__device__ __forceinline__ T unary_apply(int op, T x, T p) {
    switch (op) {
        case U_NEG: return -x;
        case U_EXP: return k_exp(x);
        case U_LOG: return k_log(x);
        case U_SQRT: return k_sqrt(x);
        case U_TANH: return k_tanh(x);
        case U_POW: return k_pow(x, p);
        case U_ADD_SCALAR: return x + p;
        case U_MUL_SCALAR: return x * p;
        case U_RELU: return x > T(0) ? x : T(0);
        default: return x;
    }
}

// `a` is usually an upstream gradient g and `b` a saved value; see `BinaryOp` for each formula.
template <typename T>
__device__ __forceinline__ T binary_apply(int op, T a, T b, T p) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_NEG_DIV: return -a / b;
        case B_SQRT_BACK: return T(0.5) * a / b;
        case B_TANH_BACK: return a * (T(1) - b * b);
        case B_POW_BACK: return a * p * k_pow(b, p - T(1));
        case B_RELU_BACK: return b > T(0) ? a : T(0);
        default: return a;
    }
}

// y[i] = v.
template <typename T>
__device__ void fill(T* y, T v, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = v;
}

// y[i] = f(x[i]; p). y may be x.
template <typename T>
__device__ void unary(int op, const T* x, T* y, T p, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = unary_apply(op, x[i], p);
}

// y[i] = f(a[i], b[i]; p) for equal shapes. y may be a or b.
template <typename T>
__device__ void binary(int op, const T* a, const T* b, T* y, T p, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = binary_apply(op, a[i], b[i], p);
}

// y = f(a, b; p) over the broadcast shape `shape` (n elements, row-major); a and b are read
// under their broadcast strides (0 on stretched axes).
template <typename T>
__device__ void broadcast(int op, const T* a, const T* b, T* y, T p, Dims shape, Dims sa, Dims sb, int rank, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        i64 oa = 0, ob = 0, r = i;
        UNROLL for (int k = 7; k >= 0; k--) {
            if (k < 8 - rank) break;
            const i64 c = r % shape.d[k];
            r /= shape.d[k];
            oa += c * sa.d[k];
            ob += c * sb.d[k];
        }
        y[i] = binary_apply(op, a[oa], b[ob], p);
    }
}

// For each multi-index c of `shape` (n elements): y[oy + c . sy] = x[ox + c . sx].
template <typename T>
__device__ void copy_strided(const T* x, T* y, Dims shape, Dims sx, i64 ox, Dims sy, i64 oy, int rank, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        i64 ix = ox, iy = oy, r = i;
        UNROLL for (int k = 7; k >= 0; k--) {
            if (k < 8 - rank) break;
            const i64 c = r % shape.d[k];
            r /= shape.d[k];
            ix += c * sx.d[k];
            iy += c * sy.d[k];
        }
        y[iy] = x[ix];
    }
}

// y[o, j, t] = x[o, idx[j], t]  for x: [outer, n, inner], y: [outer, k, inner].
template <typename T>
__device__ void index_select(const T* x, const i64* idx, T* y, i64 outer, i64 n, i64 k, i64 inner) {
    const i64 total = outer * k * inner;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const i64 t = i % inner, j = (i / inner) % k, o = i / (inner * k);
        y[i] = x[(o * n + idx[j]) * inner + t];
    }
}

// The adjoint: dx[o, m, t] = sum over j with idx[j] == m of g[o, j, t]. Each element of dx is
// written by one thread that visits every index in order: deterministic, and no zero fill.
template <typename T>
__device__ void index_add(const T* g, const i64* idx, T* dx, i64 outer, i64 n, i64 k, i64 inner) {
    const i64 total = outer * n * inner;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const i64 t = i % inner, m = (i / inner) % n, o = i / (inner * n);
        T acc = T(0);
        for (i64 j = 0; j < k; j++) {
            if (idx[j] == m) acc += g[(o * k + j) * inner + t];
        }
        dx[i] = acc;
    }
}

#define ELEMENTWISE_KERNELS(T, S)                                                                             \
    KERNEL(fill_##S)(T * y, T v, i64 n) { fill(y, v, n); }                                                    \
    KERNEL(unary_##S)(int op, const T* x, T* y, T p, i64 n) { unary(op, x, y, p, n); }                        \
    KERNEL(binary_##S)(int op, const T* a, const T* b, T* y, T p, i64 n) { binary(op, a, b, y, p, n); }       \
    KERNEL(broadcast_##S)(int op, const T* a, const T* b, T* y, T p, Dims shape, Dims sa, Dims sb, int rank,  \
                          i64 n) {                                                                            \
        broadcast(op, a, b, y, p, shape, sa, sb, rank, n);                                                    \
    }                                                                                                         \
    KERNEL(copy_strided_##S)(const T* x, T* y, Dims shape, Dims sx, i64 ox, Dims sy, i64 oy, int rank, i64 n) { \
        copy_strided(x, y, shape, sx, ox, sy, oy, rank, n);                                                   \
    }                                                                                                         \
    KERNEL(index_select_##S)(const T* x, const i64* idx, T* y, i64 outer, i64 n, i64 k, i64 inner) {          \
        index_select(x, idx, y, outer, n, k, inner);                                                          \
    }                                                                                                         \
    KERNEL(index_add_##S)(const T* g, const i64* idx, T* dx, i64 outer, i64 n, i64 k, i64 inner) {            \
        index_add(g, idx, dx, outer, n, k, inner);                                                            \
    }

ELEMENTWISE_KERNELS(float, f32)
ELEMENTWISE_KERNELS(double, f64)

// Element type conversions (`Tensor::cast`).
KERNEL(cast_f32_f64)(const float* x, double* y, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = (double)x[i];
}
KERNEL(cast_f64_f32)(const double* x, float* y, i64 n) {
    for (i64 i = thread_index(); i < n; i += thread_count()) y[i] = (float)x[i];
}
