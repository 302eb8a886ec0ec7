// Max-pooling over planes [H, W] (ops/max_pool.rs): each output is the maximum of its window's
// pixels inside the image (the padding never wins) and remembers the winner's index within its
// plane, the first on a tie, as the CPU's scan in (ky, kx) order. Backward adds each output's
// gradient to its winner: one thread walks one plane's outputs in order, so the sums (several
// windows can share a winner) are the CPU's, in the CPU's order.

template <typename T>
__device__ void max_pool_forward(const T* x, T* y, i64* arg, i64 planes, i64 h, i64 w, i64 ho, i64 wo, i64 kh,
                                 i64 kw, i64 stride, i64 top, i64 left) {
    const i64 out = ho * wo;
    for (i64 i = thread_index(); i < planes * out; i += thread_count()) {
        const i64 p = i / out, oy = (i % out) / wo, ox = i % wo;
        const T* xp = x + p * h * w;
        i64 best = -1;
        for (i64 ky = 0; ky < kh; ky++) {
            const i64 iy = oy * stride + ky - top;
            if (iy < 0 || iy >= h) continue;
            for (i64 kx = 0; kx < kw; kx++) {
                const i64 ix = ox * stride + kx - left;
                if (ix < 0 || ix >= w) continue;
                const i64 j = iy * w + ix;
                if (best < 0 || xp[j] > xp[best]) best = j;
            }
        }
        // Every window holds a pixel (the op checks padding < kernel), so best >= 0.
        y[i] = xp[best];
        arg[i] = best;
    }
}

template <typename T>
__device__ void max_pool_backward(const T* g, const i64* arg, T* dx, i64 planes, i64 plane, i64 out) {
    for (i64 p = thread_index(); p < planes; p += thread_count()) {
        T* d = dx + p * plane;
        for (i64 o = 0; o < out; o++) d[arg[p * out + o]] += g[p * out + o];
    }
}

#define POOL_KERNELS(T, S)                                                                                     \
    KERNEL(max_pool_forward_##S)(const T* x, T* y, i64* arg, i64 planes, i64 h, i64 w, i64 ho, i64 wo, i64 kh,  \
                                 i64 kw, i64 stride, i64 top, i64 left) {                                      \
        max_pool_forward(x, y, arg, planes, h, w, ho, wo, kh, kw, stride, top, left);                          \
    }                                                                                                          \
    KERNEL(max_pool_backward_##S)(const T* g, const i64* arg, T* dx, i64 planes, i64 plane, i64 out) {          \
        max_pool_backward(g, arg, dx, planes, plane, out);                                                     \
    }

POOL_KERNELS(float, f32)
POOL_KERNELS(double, f64)
