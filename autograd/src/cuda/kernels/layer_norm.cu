// Layer normalisation over the last axis, saving the per-row mean and rstd for backward.
//
//     mean = sum x / D,  var = sum (x - mean)^2 / D,  rstd = 1 / sqrt(var + eps)
//     xhat = (x - mean) rstd,  y = w xhat + b
//     dx = rstd (g w - mean(g w) - xhat mean(g w xhat)),  dw = sum_rows g xhat,  db = sum_rows g
//
// Row kernels use one warp per row (8 rows per 256-thread block, as softmax.cu); the parameter
// gradients are column sums over rows, computed like sum_cols: fixed chunks of rows, one
// partial per chunk, added in order by a second pass.

// y, mean, rstd from x. Two passes in double (mean, then the spread around it).
template <typename T>
__device__ void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, i64 rows, i64 d, double eps) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * d;
        T* yr = y + row * d;
        double s = 0.0;
        for (i64 j = lane; j < d; j += 32) s += (double)xr[j];
        const double m = warp_sum(s) / (double)d;
        double q = 0.0;
        for (i64 j = lane; j < d; j += 32) {
            const double c = (double)xr[j] - m;
            q += c * c;
        }
        const double var = warp_sum(q) / (double)d;
        const T mt = (T)m, rt = (T)(1.0 / sqrt(var + eps));
        if (lane == 0) {
            mean[row] = mt;
            rstd[row] = rt;
        }
        for (i64 j = lane; j < d; j += 32) yr[j] = (xr[j] - mt) * rt * w[j] + b[j];
    }
}

// y again from x and the saved statistics (when the output was released), one thread per element.
template <typename T>
__device__ void layer_norm_apply(const T* x, const T* w, const T* b, const T* mean, const T* rstd, T* y, i64 rows, i64 d) {
    const i64 n = rows * d;
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        const i64 r = i / d, j = i % d;
        y[i] = (x[i] - mean[r]) * rstd[r] * w[j] + b[j];
    }
}

// dx, one warp per row.
template <typename T>
__device__ void layer_norm_dx(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, i64 rows, i64 d) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * d;
        const T* gr = g + row * d;
        T* dr = dx + row * d;
        const T m = mean[row], r = rstd[row];
        double s1 = 0.0, s2 = 0.0;
        for (i64 j = lane; j < d; j += 32) {
            const T xhat = (xr[j] - m) * r;
            const T dxhat = gr[j] * w[j];
            s1 += (double)dxhat;
            s2 += (double)(dxhat * xhat);
        }
        const T mean_dxhat = (T)(warp_sum(s1) / (double)d);
        const T mean_dxhat_xhat = (T)(warp_sum(s2) / (double)d);
        for (i64 j = lane; j < d; j += 32) {
            const T xhat = (xr[j] - m) * r;
            dr[j] = r * (gr[j] * w[j] - mean_dxhat - xhat * mean_dxhat_xhat);
        }
    }
}

// Per chunk c of rows: dw[c, j] = sum g xhat, db[c, j] = sum g over the chunk's rows.
// Grid (ceil(d / 32), chunks), block (32, 8).
template <typename T>
__device__ void layer_norm_dwdb(const T* x, const T* mean, const T* rstd, const T* g, T* dw, T* db, i64 rows, i64 d, i64 chunk) {
    __shared__ double acc_w[ROWS_PAR][COLS_PER_BLOCK + 1];
    __shared__ double acc_b[ROWS_PAR][COLS_PER_BLOCK + 1];
    const i64 col = (i64)blockIdx.x * COLS_PER_BLOCK + threadIdx.x;
    const i64 c = blockIdx.y;
    const i64 r0 = c * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    double sw = 0.0, sb = 0.0;
    if (col < d) {
        for (i64 r = r0 + threadIdx.y; r < r1; r += ROWS_PAR) {
            const T gv = g[r * d + col];
            const T xhat = (x[r * d + col] - mean[r]) * rstd[r];
            sw += (double)(gv * xhat);
            sb += (double)gv;
        }
    }
    acc_w[threadIdx.y][threadIdx.x] = sw;
    acc_b[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    if (threadIdx.y == 0 && col < d) {
        double tw = 0.0, tb = 0.0;
        for (int k = 0; k < ROWS_PAR; k++) {
            tw += acc_w[k][threadIdx.x];
            tb += acc_b[k][threadIdx.x];
        }
        dw[c * d + col] = (T)tw;
        db[c * d + col] = (T)tb;
    }
}

#define LAYER_NORM_KERNELS(T, S)                                                                           \
    KERNEL(layer_norm_forward_##S)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, i64 rows,     \
                                   i64 d, double eps) {                                                    \
        layer_norm_forward(x, w, b, y, mean, rstd, rows, d, eps);                                          \
    }                                                                                                      \
    KERNEL(layer_norm_apply_##S)(const T* x, const T* w, const T* b, const T* mean, const T* rstd, T* y,     \
                                 i64 rows, i64 d) {                                                        \
        layer_norm_apply(x, w, b, mean, rstd, y, rows, d);                                                 \
    }                                                                                                      \
    KERNEL(layer_norm_dx_##S)(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx,       \
                              i64 rows, i64 d) {                                                           \
        layer_norm_dx(x, w, mean, rstd, g, dx, rows, d);                                                   \
    }                                                                                                      \
    KERNEL(layer_norm_dwdb_##S)(const T* x, const T* mean, const T* rstd, const T* g, T* dw, T* db, i64 rows, \
                                i64 d, i64 chunk) {                                                        \
        layer_norm_dwdb(x, mean, rstd, g, dw, db, rows, d, chunk);                                         \
    }

LAYER_NORM_KERNELS(float, f32)
LAYER_NORM_KERNELS(double, f64)
