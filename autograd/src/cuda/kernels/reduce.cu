// Reductions: sums over axes, max/argmax along an axis, sums of squares for the gradient norm.
//
// A sum sees its input as [outer, r, inner] (the reduced axes adjacent in the middle) and sums
// the middle axis. Large r is cut into fixed chunks: pass 1 writes one partial sum per chunk,
// pass 2 (the same kernel, on the partials) adds them. Chunk sizes are constants, never the
// device's size, and every sum adds in a fixed order, so results are the same on every run and
// every GPU. Terms are accumulated in double.

// Threads of the column-sum block: 32 columns (coalesced) x ROWS_PAR rows.
#define COLS_PER_BLOCK 32
#define ROWS_PAR 8

// inner > 1: y[c, o, i] = scale * sum of x[o, j, i] over the rows j of chunk c.
// Grid (ceil(inner / 32), min(outer, 65535), chunks), block (32, 8).
template <typename T>
__device__ void sum_cols(const T* x, T* y, i64 outer, i64 r, i64 inner, i64 chunk, T scale) {
    __shared__ double acc[ROWS_PAR][COLS_PER_BLOCK + 1];
    const i64 col = (i64)blockIdx.x * COLS_PER_BLOCK + threadIdx.x;
    const i64 c = blockIdx.z;
    const i64 j0 = c * chunk, j1 = j0 + chunk < r ? j0 + chunk : r;
    for (i64 o = blockIdx.y; o < outer; o += gridDim.y) {
        double s = 0.0;
        if (col < inner) {
            for (i64 j = j0 + threadIdx.y; j < j1; j += ROWS_PAR) s += (double)x[(o * r + j) * inner + col];
        }
        acc[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.y == 0 && col < inner) {
            double t = 0.0;
            for (int k = 0; k < ROWS_PAR; k++) t += acc[k][threadIdx.x];
            y[(c * outer + o) * inner + col] = (T)(t * (double)scale);
        }
        __syncthreads();
    }
}

// inner == 1: y[c, o] = scale * sum of x[o, j] (squared if `square`) over j in chunk c.
// Grid (chunks, min(outer, 65535)), block 256.
template <typename T>
__device__ void sum_rows(const T* x, T* y, i64 outer, i64 r, i64 chunk, T scale, int square) {
    const i64 c = blockIdx.x;
    const i64 j0 = c * chunk, j1 = j0 + chunk < r ? j0 + chunk : r;
    for (i64 o = blockIdx.y; o < outer; o += gridDim.y) {
        double s = 0.0;
        for (i64 j = j0 + threadIdx.x; j < j1; j += blockDim.x) {
            const double v = (double)x[o * r + j];
            s += square ? v * v : v;
        }
        s = block_sum(s);
        if (threadIdx.x == 0) y[c * outer + o] = (T)(s * (double)scale);
    }
}

// Any set of reduced axes: y[o] = scale * sum of x over the reduced axes, one thread per
// output. `keep` is x's shape with the reduced axes set to 1, `red` the reduced axes' sizes
// (1 elsewhere), `sx` x's strides; n outputs, m terms each.
template <typename T>
__device__ void sum_general(const T* x, T* y, Dims keep, Dims red, Dims sx, int rank, i64 n, i64 m, T scale) {
    for (i64 o = thread_index(); o < n; o += thread_count()) {
        const i64 base = offset_of(o, keep, sx, rank);
        double s = 0.0;
        for (i64 j = 0; j < m; j++) s += (double)x[base + offset_of(j, red, sx, rank)];
        y[o] = (T)(s * (double)scale);
    }
}

// Whether v replaces best as the running maximum: strictly larger, or the first NaN.
template <typename T>
__device__ __forceinline__ bool beats(T v, T best) {
    return v > best || (k_isnan(v) && !k_isnan(best));
}

// The maximum of x: [outer, n, inner] along the middle axis and its first index: one thread per
// (o, t); `y` or `idx` may be null. Ties keep the first index, NaN wins, as on the CPU.
template <typename T>
__device__ void max_along(const T* x, T* y, i64* idx, i64 outer, i64 n, i64 inner) {
    const i64 total = outer * inner;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const i64 o = i / inner, t = i % inner;
        const T* p = x + o * n * inner + t;
        T best = p[0];
        i64 arg = 0;
        for (i64 k = 1; k < n; k++) {
            const T v = p[k * inner];
            if (beats(v, best)) {
                best = v;
                arg = k;
            }
        }
        if (y) y[i] = best;
        if (idx) idx[i] = arg;
    }
}

// The global gradient norm's first pass: out[block] = sum of x^2 over the block's chunk of
// x (n elements), in double. Grid ceil(n / chunk), block 256.
template <typename T>
__device__ void sumsq(const T* x, double* out, i64 n, i64 chunk) {
    const i64 j0 = (i64)blockIdx.x * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
    double s = 0.0;
    for (i64 j = j0 + threadIdx.x; j < j1; j += blockDim.x) s += (double)x[j] * (double)x[j];
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

#define REDUCE_KERNELS(T, S)                                                                              \
    KERNEL(sum_cols_##S)(const T* x, T* y, i64 outer, i64 r, i64 inner, i64 chunk, T scale) {             \
        sum_cols(x, y, outer, r, inner, chunk, scale);                                                    \
    }                                                                                                     \
    KERNEL(sum_rows_##S)(const T* x, T* y, i64 outer, i64 r, i64 chunk, T scale, int square) {            \
        sum_rows(x, y, outer, r, chunk, scale, square);                                                   \
    }                                                                                                     \
    KERNEL(sum_general_##S)(const T* x, T* y, Dims keep, Dims red, Dims sx, int rank, i64 n, i64 m, T scale) { \
        sum_general(x, y, keep, red, sx, rank, n, m, scale);                                              \
    }                                                                                                     \
    KERNEL(max_along_##S)(const T* x, T* y, i64* idx, i64 outer, i64 n, i64 inner) {                      \
        max_along(x, y, idx, outer, n, inner);                                                            \
    }                                                                                                     \
    KERNEL(sumsq_##S)(const T* x, double* out, i64 n, i64 chunk) { sumsq(x, out, n, chunk); }

REDUCE_KERNELS(float, f32)
REDUCE_KERNELS(double, f64)

// The norm's second pass: out[0] = sum of the n partial sums, by one block, in a fixed order.
KERNEL(sum_partials)(const double* parts, double* out, i64 n) {
    double s = 0.0;
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) s += parts[j];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}
