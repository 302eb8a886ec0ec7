// Dropout masks from the same random streams as the CPU (ops/dropout.rs, ops/attention.rs), so
// a step drops the same elements on every device:
//
//     dropout:            piece k of DROPOUT_CHUNK elements draws from Rng::seed(seed + k);
//                         keep = uniform() >= p,  y = x * (keep ? 1/(1-p) : 0)
//     attention dropout:  head bh draws its N*N scales from Rng::seed(seed ^ bh * golden);
//                         scale = uniform() < 1 - p ? 1/(1-p) : 0
//
// Each stream is sequential, so one thread walks one piece (or one head).

#define DROPOUT_CHUNK 4096

// y and the keep mask (one byte per element) from x. One thread per piece.
template <typename T>
__device__ void dropout_forward(const T* x, T* y, unsigned char* keep, i64 n, u64 seed, double p, T scale) {
    const i64 pieces = (n + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;
    for (i64 k = thread_index(); k < pieces; k += thread_count()) {
        Xoshiro r = rng_seed(seed + (u64)k);
        const i64 end = (k + 1) * DROPOUT_CHUNK < n ? (k + 1) * DROPOUT_CHUNK : n;
        for (i64 i = k * DROPOUT_CHUNK; i < end; i++) {
            const bool kept = rng_uniform(r) >= p;
            keep[i] = kept ? 1 : 0;
            // Multiplied, not written as 0, so a NaN in a dropped element still shows.
            y[i] = x[i] * (kept ? scale : T(0));
        }
    }
}

// dx = g * (keep ? scale : 0).
template <typename T>
__device__ void dropout_backward(const T* g, const unsigned char* keep, T* dx, i64 n, T scale) {
    for (i64 i = thread_index(); i < n; i += thread_count()) dx[i] = g[i] * (keep[i] ? scale : T(0));
}

// v[bh, :] *= head bh's dropout scales, for the heads' N x N blocks of v: [heads_total, nn].
template <typename T>
__device__ void attention_dropout(T* v, i64 heads_total, i64 nn, u64 seed, double p) {
    const double keep = 1.0 - p;
    const T s = (T)(1.0 / keep);
    for (i64 bh = thread_index(); bh < heads_total; bh += thread_count()) {
        Xoshiro r = rng_seed(seed ^ ((u64)bh * 0x9E3779B97F4A7C15ULL));
        T* row = v + bh * nn;
        for (i64 j = 0; j < nn; j++) row[j] *= rng_uniform(r) < keep ? s : T(0);
    }
}

#define DROPOUT_KERNELS(T, S)                                                                                  \
    KERNEL(dropout_forward_##S)(const T* x, T* y, unsigned char* keep, i64 n, u64 seed, double p, T scale) {    \
        dropout_forward(x, y, keep, n, seed, p, scale);                                                        \
    }                                                                                                          \
    KERNEL(dropout_backward_##S)(const T* g, const unsigned char* keep, T* dx, i64 n, T scale) {                \
        dropout_backward(g, keep, dx, n, scale);                                                               \
    }                                                                                                          \
    KERNEL(attention_dropout_##S)(T * v, i64 heads_total, i64 nn, u64 seed, double p) {                         \
        attention_dropout(v, heads_total, nn, seed, p);                                                        \
    }

DROPOUT_KERNELS(float, f32)
DROPOUT_KERNELS(double, f64)
