// The ViT-CNN hybrid's ResNet on the device: 2-D convolution as im2col + GEMM (ops/conv2d.rs)
// and group normalisation (ops/group_norm.rs).
//
// Convolution unrolls the whole batch at once, the images' columns side by side:
//     cols[f, b, p],  f = (c, ky, kx) of the C kh kw receptive field,  p = (oy, ox)
// so that one strided-batched GEMM per direction covers every image (prims/conv.rs). col2im is
// the adjoint of im2col as a gather: each input pixel adds up the column entries that read it,
// in (ky, kx) order, which is the order in which the CPU's scatter adds them.
//
// Group norm: row r = (b, k) of the B G rows holds the n = (C/G) S contiguous values of group k
// of image b; element i of row r belongs to channel (r mod G) (C/G) + i / S. The row kernels are
// layer_norm.cu's (one warp per row, sums in double) with the affine part per channel.

template <typename T>
__device__ void im2col(const T* x, T* cols, i64 nb, i64 c, i64 h, i64 w, i64 kh, i64 kw, i64 stride, i64 top,
                       i64 left, i64 ho, i64 wo) {
    const i64 plane = ho * wo, n = c * kh * kw * nb * plane;
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        const i64 p = i % plane, b = (i / plane) % nb, f = i / (plane * nb);
        const i64 ch = f / (kh * kw), ky = (f / kw) % kh, kx = f % kw;
        const i64 iy = (p / wo) * stride + ky - top, ix = (p % wo) * stride + kx - left;
        cols[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((b * c + ch) * h + iy) * w + ix] : (T)0;
    }
}

template <typename T>
__device__ void col2im(const T* cols, T* x, i64 nb, i64 c, i64 h, i64 w, i64 kh, i64 kw, i64 stride, i64 top,
                       i64 left, i64 ho, i64 wo) {
    const i64 plane = ho * wo, n = nb * c * h * w;
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        const i64 ix = i % w, iy = (i / w) % h, ch = (i / (h * w)) % c, b = i / (c * h * w);
        T acc = (T)0;
        for (i64 ky = 0; ky < kh; ky++) {
            const i64 ty = iy + top - ky;
            if (ty < 0 || ty % stride != 0 || ty / stride >= ho) continue;
            for (i64 kx = 0; kx < kw; kx++) {
                const i64 tx = ix + left - kx;
                if (tx < 0 || tx % stride != 0 || tx / stride >= wo) continue;
                acc += cols[(((ch * kh + ky) * kw + kx) * nb + b) * plane + (ty / stride) * wo + tx / stride];
            }
        }
        x[i] = acc;
    }
}

// y, mean, rstd from x: mean, then the spread around it, in double, one warp per row.
template <typename T>
__device__ void group_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, i64 rows, i64 n,
                                   i64 groups, i64 cpg, i64 s, double eps) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * n;
        T* yr = y + row * n;
        const i64 first = (row % groups) * cpg;
        double sum = 0.0;
        for (i64 j = lane; j < n; j += 32) sum += (double)xr[j];
        const double m = warp_sum(sum) / (double)n;
        double q = 0.0;
        for (i64 j = lane; j < n; j += 32) {
            const double d = (double)xr[j] - m;
            q += d * d;
        }
        const double var = warp_sum(q) / (double)n;
        const T mt = (T)m, rt = (T)(1.0 / sqrt(var + eps));
        if (lane == 0) {
            mean[row] = mt;
            rstd[row] = rt;
        }
        for (i64 j = lane; j < n; j += 32) {
            const i64 cc = first + j / s;
            yr[j] = (xr[j] - mt) * rt * w[cc] + b[cc];
        }
    }
}

// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = g w_c, one warp per row.
template <typename T>
__device__ void group_norm_dx(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, i64 rows,
                              i64 n, i64 groups, i64 cpg, i64 s) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * n;
        const T* gr = g + row * n;
        T* dr = dx + row * n;
        const i64 first = (row % groups) * cpg;
        const T m = mean[row], r = rstd[row];
        double s1 = 0.0, s2 = 0.0;
        for (i64 j = lane; j < n; j += 32) {
            const T xhat = (xr[j] - m) * r;
            const T dxhat = gr[j] * w[first + j / s];
            s1 += (double)dxhat;
            s2 += (double)(dxhat * xhat);
        }
        const T m1 = (T)(warp_sum(s1) / (double)n);
        const T m2 = (T)(warp_sum(s2) / (double)n);
        for (i64 j = lane; j < n; j += 32) {
            const T xhat = (xr[j] - m) * r;
            dr[j] = r * (gr[j] * w[first + j / s] - m1 - xhat * m2);
        }
    }
}

// dw_c = sum_{b, s} g xhat, db_c = sum_{b, s} g: one thread per channel, a double partial per
// image added in image order, the CPU's summation exactly.
template <typename T>
__device__ void group_norm_dwdb(const T* x, const T* mean, const T* rstd, const T* g, T* dw, T* db, i64 nb, i64 c,
                                i64 s, i64 groups) {
    const i64 cpg = c / groups;
    for (i64 cc = thread_index(); cc < c; cc += thread_count()) {
        double tw = 0.0, tb = 0.0;
        for (i64 b = 0; b < nb; b++) {
            const i64 r = b * groups + cc / cpg;
            const T m = mean[r], rs = rstd[r];
            const T* xb = x + (b * c + cc) * s;
            const T* gb = g + (b * c + cc) * s;
            double pw = 0.0, pb = 0.0;
            for (i64 i = 0; i < s; i++) {
                const T xhat = (xb[i] - m) * rs;
                pw += (double)(gb[i] * xhat);
                pb += (double)gb[i];
            }
            tw += pw;
            tb += pb;
        }
        dw[cc] = (T)tw;
        db[cc] = (T)tb;
    }
}

#define CONV_KERNELS(T, S)                                                                                     \
    KERNEL(im2col_##S)(const T* x, T* cols, i64 nb, i64 c, i64 h, i64 w, i64 kh, i64 kw, i64 stride, i64 top,    \
                       i64 left, i64 ho, i64 wo) {                                                             \
        im2col(x, cols, nb, c, h, w, kh, kw, stride, top, left, ho, wo);                                       \
    }                                                                                                          \
    KERNEL(col2im_##S)(const T* cols, T* x, i64 nb, i64 c, i64 h, i64 w, i64 kh, i64 kw, i64 stride, i64 top,    \
                       i64 left, i64 ho, i64 wo) {                                                             \
        col2im(cols, x, nb, c, h, w, kh, kw, stride, top, left, ho, wo);                                       \
    }                                                                                                          \
    KERNEL(group_norm_forward_##S)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, i64 rows, i64 n, \
                                   i64 groups, i64 cpg, i64 s, double eps) {                                   \
        group_norm_forward(x, w, b, y, mean, rstd, rows, n, groups, cpg, s, eps);                              \
    }                                                                                                          \
    KERNEL(group_norm_dx_##S)(const T* x, const T* w, const T* mean, const T* rstd, const T* g, T* dx, i64 rows, \
                              i64 n, i64 groups, i64 cpg, i64 s) {                                             \
        group_norm_dx(x, w, mean, rstd, g, dx, rows, n, groups, cpg, s);                                       \
    }                                                                                                          \
    KERNEL(group_norm_dwdb_##S)(const T* x, const T* mean, const T* rstd, const T* g, T* dw, T* db, i64 nb,      \
                                i64 c, i64 s, i64 groups) {                                                    \
        group_norm_dwdb(x, mean, rstd, g, dw, db, nb, c, s, groups);                                           \
    }

CONV_KERNELS(float, f32)
CONV_KERNELS(double, f64)
