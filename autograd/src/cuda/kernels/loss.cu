// Cross-entropy of logits [B, C] against labels, fused with log-softmax, with label smoothing
// eps (ops/loss.rs):
//
//     logp = (x - m) - ln sum exp(x - m)          t = (1 - eps) onehot(l) + eps / C
//     loss_b = -(1 - eps) logp_l - (eps / C) sum logp,      L = sum_b loss_b / B
//     dx = g (p - t) / B,   p = softmax(x)
//
// Forward: one warp per row writes p (saved for backward) and the row's loss in double; one
// thread then adds the B losses in row order, as the CPU does, so the loss is bit-comparable.

// p = softmax(x) and losses[b], one warp per row.
template <typename T>
__device__ void cross_entropy_forward(const T* x, const i64* labels, T* p, double* losses, i64 rows, i64 c, double eps) {
    const int lane = threadIdx.x % 32;
    for (i64 row = first_row(); row < rows; row += row_step()) {
        const T* xr = x + row * c;
        T* pr = p + row * c;
        T m;
        const double s = row_exp_sum(xr, c, lane, m);
        const double log_sum = log(s);
        const T inv = (T)(1.0 / s);
        double sum_logp = 0.0;
        for (i64 j = lane; j < c; j += 32) {
            pr[j] = k_exp(xr[j] - m) * inv;
            sum_logp += (double)(xr[j] - m) - log_sum;
        }
        sum_logp = warp_sum(sum_logp);
        if (lane == 0) {
            const double logp_label = (double)(xr[labels[row]] - m) - log_sum;
            // Skipped rather than multiplied by 0 without smoothing: a -inf logit makes sum_logp
            // -inf, and 0 * -inf is NaN.
            const double uniform = eps > 0.0 ? eps / (double)c * sum_logp : 0.0;
            losses[row] = -(1.0 - eps) * logp_label - uniform;
        }
    }
}

// loss[0] = sum of the rows' losses / rows, on one thread, in row order.
template <typename T>
__device__ void mean_losses(const double* losses, T* loss, i64 rows) {
    if (thread_index() != 0) return;
    double s = 0.0;
    for (i64 r = 0; r < rows; r++) s += losses[r];
    loss[0] = (T)(s / (double)rows);
}

// dx = (p - eps / C) g / B, minus (1 - eps) g / B at the label; g is the loss's gradient, a
// one-element device tensor (read here, never copied to the host).
template <typename T>
__device__ void cross_entropy_backward(const T* p, const i64* labels, const T* g, T* dx, i64 rows, i64 c, double eps) {
    const T scale = g[0] / (T)rows;
    const T off = (T)(eps / (double)c), on = (T)(1.0 - eps);
    const i64 total = rows * c;
    for (i64 i = thread_index(); i < total; i += thread_count()) {
        const i64 r = i / c, j = i % c;
        T v = (p[i] - off) * scale;
        if (j == labels[r]) v -= on * scale;
        dx[i] = v;
    }
}

#define LOSS_KERNELS(T, S)                                                                                   \
    KERNEL(cross_entropy_forward_##S)(const T* x, const i64* labels, T* p, double* losses, i64 rows, i64 c,   \
                                      double eps) {                                                          \
        cross_entropy_forward(x, labels, p, losses, rows, c, eps);                                           \
    }                                                                                                        \
    KERNEL(mean_losses_##S)(const double* losses, T* loss, i64 rows) { mean_losses(losses, loss, rows); }     \
    KERNEL(cross_entropy_backward_##S)(const T* p, const i64* labels, const T* g, T* dx, i64 rows, i64 c,     \
                                       double eps) {                                                         \
        cross_entropy_backward(p, labels, g, dx, rows, c, eps);                                              \
    }

LOSS_KERNELS(float, f32)
LOSS_KERNELS(double, f64)
