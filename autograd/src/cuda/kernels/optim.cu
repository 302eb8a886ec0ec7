// Optimizer updates and global-norm clipping, in place on the device (src/optim). The scalar
// coefficients are computed once on the host, in the same way as for the CPU kernel, and passed
// in; the squared gradient norm stays on the device and is read here, so clipping needs no
// host round trip.

// AdamW, as the CPU's SIMD kernel computes it:
//     m = b1 m + c1 g,  v = b2 v + c2 g^2,  p = p decay - step m / (sqrt(v) inv_sqrt_bc2 + eps)
// with c_i = 1 - b_i, decay = 1 - lr wd, step = lr / bc1, inv_sqrt_bc2 = 1 / sqrt(bc2).
template <typename T>
__device__ void adamw(T* p, const T* g, T* m, T* v, i64 n, T b1, T b2, T c1, T c2, T decay, T step, T inv_sqrt_bc2, T eps) {
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        const T gv = g[i];
        const T mv = k_fma(b1, m[i], c1 * gv);
        const T vv = k_fma(b2, v[i], c2 * (gv * gv));
        const T denom = k_fma(k_sqrt(vv), inv_sqrt_bc2, eps);
        p[i] = k_fma(-step, mv / denom, p[i] * decay);
        m[i] = mv;
        v[i] = vv;
    }
}

// SGD with momentum (torch.optim.SGD): d = g + wd p;  b = d (first step) or mu b + d;
// p -= lr (nesterov ? d + mu b : b).
template <typename T>
__device__ void sgd(T* p, const T* g, T* buf, i64 n, T lr, T mu, T wd, int first, int nesterov) {
    for (i64 i = thread_index(); i < n; i += thread_count()) {
        const T d = g[i] + wd * p[i];
        const T b = first ? d : mu * buf[i] + d;
        buf[i] = b;
        p[i] -= lr * (nesterov ? d + mu * b : b);
    }
}

// g *= max_norm / (norm + 1e-6) if norm = sqrt(*sumsq) is finite and above max_norm.
template <typename T>
__device__ void clip_scale(T* g, i64 n, const double* sumsq, double max_norm) {
    const double norm = sqrt(sumsq[0]);
    if (!isfinite(norm) || !(norm > max_norm)) return;
    const T s = (T)(max_norm / (norm + 1e-6));
    for (i64 i = thread_index(); i < n; i += thread_count()) g[i] *= s;
}

#define OPTIM_KERNELS(T, S)                                                                             \
    KERNEL(adamw_##S)(T * p, const T* g, T* m, T* v, i64 n, T b1, T b2, T c1, T c2, T decay, T step,       \
                      T inv_sqrt_bc2, T eps) {                                                          \
        adamw(p, g, m, v, n, b1, b2, c1, c2, decay, step, inv_sqrt_bc2, eps);                            \
    }                                                                                                   \
    KERNEL(sgd_##S)(T * p, const T* g, T* buf, i64 n, T lr, T mu, T wd, int first, int nesterov) {       \
        sgd(p, g, buf, n, lr, mu, wd, first, nesterov);                                                 \
    }                                                                                                   \
    KERNEL(clip_scale_##S)(T * g, i64 n, const double* sumsq, double max_norm) { clip_scale(g, n, sumsq, max_norm); }

OPTIM_KERNELS(float, f32)
OPTIM_KERNELS(double, f64)
