// Softmax and log-softmax over the last axis, and their backward: one warp per row, 8 rows per
// 256-thread block, rows in a grid-stride loop. Used by the ops of the same names and by
// attention (its probabilities, forward and recomputed in backward).
//
//     softmax:      y = exp(x - m) / sum exp(x - m),   m = max x      dx = y (g - sum g y)
//     log_softmax:  y = (x - m) - ln sum exp(x - m)                   dx = g - exp(y) sum g
//
// Sums are accumulated in double, as on the CPU.

#define ROWS_PER_BLOCK 8

__device__ __forceinline__ i64 first_row() {
    return (i64)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
}
__device__ __forceinline__ i64 row_step() {
    return (i64)gridDim.x * ROWS_PER_BLOCK;
}

// The maximum of a d-element row, over the warp (every lane gets it). Lanes start from the
// row's first element, so rows shorter than a warp need no identity element.
template <typename T>
__device__ __forceinline__ T row_max(const T* x, i64 d, int lane) {
    T m = x[0];
    for (i64 j = lane; j < d; j += 32) m = k_max(m, x[j]);
    return warp_max(m);
}

// The row's maximum m (through `m`) and sum of exp(x - m), in double, over the warp.
template <typename T>
__device__ __forceinline__ double row_exp_sum(const T* x, i64 d, int lane, T& m) {
    m = row_max(x, d, lane);
    double s = 0.0;
    for (i64 j = lane; j < d; j += 32) s += (double)k_exp(x[j] - m);
    return warp_sum(s);
}

template <typename T>
__device__ void softmax_rows(const T* x, T* y, i64 rows, i64 d, int log_softmax) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * d;
        T* yr = y + row * d;
        T m;
        const double s = row_exp_sum(xr, d, lane, m);
        if (log_softmax) {
            const T log_sum = (T)log(s);
            for (i64 j = lane; j < d; j += 32) yr[j] = (xr[j] - m) - log_sum;
        } else {
            const T inv = (T)(1.0 / s);
            for (i64 j = lane; j < d; j += 32) yr[j] = k_exp(xr[j] - m) * inv;
        }
    }
}

// dx from the output y and the upstream gradient g; dx may be g (attention does that).
template <typename T>
__device__ void softmax_backward(const T* y, const T* g, T* dx, i64 rows, i64 d, int log_softmax) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* yr = y + row * d;
        const T* gr = g + row * d;
        T* dr = dx + row * d;
        double s = 0.0;
        for (i64 j = lane; j < d; j += 32) s += log_softmax ? (double)gr[j] : (double)(gr[j] * yr[j]);
        const T t = (T)warp_sum(s);
        if (log_softmax) {
            for (i64 j = lane; j < d; j += 32) dr[j] = gr[j] - k_exp(yr[j]) * t;
        } else {
            for (i64 j = lane; j < d; j += 32) dr[j] = yr[j] * (gr[j] - t);
        }
    }
}

#define SOFTMAX_KERNELS(T, S)                                                                 \
    KERNEL(softmax_rows_##S)(const T* x, T* y, i64 rows, i64 d, int log_softmax) {            \
        softmax_rows(x, y, rows, d, log_softmax);                                             \
    }                                                                                         \
    KERNEL(softmax_backward_##S)(const T* y, const T* g, T* dx, i64 rows, i64 d, int log_softmax) { \
        softmax_backward(y, g, dx, rows, d, log_softmax);                                     \
    }

SOFTMAX_KERNELS(float, f32)
SOFTMAX_KERNELS(double, f64)
