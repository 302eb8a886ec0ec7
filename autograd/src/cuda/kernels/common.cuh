// Helpers every kernel family uses. Compiled by NVRTC for the GPU and by the host C++ compiler
// for the emulator, so only the CUDA subset both understand is used here.
//
// Conventions: element counts and offsets are 64-bit (`i64`); every kernel exists for float
// (`_f32`) and double (`_f64`), instantiated at the end of its file; a null pointer argument
// means "absent" where a parameter is documented as optional. Shapes and strides travel as a
// `Dims` struct by value, padded at the front: a rank-r shape fills d[8-r..8].

typedef long long i64;
typedef unsigned long long u64;

struct Dims {
    i64 d[8];
};

// The threads of a 1-D launch, for grid-stride loops.
__device__ __forceinline__ i64 thread_index() {
    return (i64)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ i64 thread_count() {
    return (i64)gridDim.x * blockDim.x;
}

// Scalar math for both element types (the host and NVRTC spell the float versions differently).
__device__ __forceinline__ float k_exp(float x) { return expf(x); }
__device__ __forceinline__ double k_exp(double x) { return exp(x); }
__device__ __forceinline__ float k_log(float x) { return logf(x); }
__device__ __forceinline__ double k_log(double x) { return log(x); }
__device__ __forceinline__ float k_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double k_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float k_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double k_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float k_erf(float x) { return erff(x); }
__device__ __forceinline__ double k_erf(double x) { return erf(x); }
__device__ __forceinline__ float k_pow(float x, float p) { return powf(x, p); }
__device__ __forceinline__ double k_pow(double x, double p) { return pow(x, p); }
// fmax/fmin return the other operand when one is NaN, as Rust's f32::max does: a row max
// ignores NaN, which then poisons the exponentials, as on the CPU.
__device__ __forceinline__ float k_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double k_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float k_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double k_fma(double a, double b, double c) { return fma(a, b, c); }
template <typename T>
__device__ __forceinline__ bool k_isnan(T x) { return x != x; }

// The sum (or max) of a value over the 32 lanes of a warp, returned to every lane. The butterfly
// adds in the same order on every run, so results are deterministic.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = k_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The sum of a value over a 1-D block (blockDim.x a multiple of 32, at most 1024), returned to
// every thread. Every thread of the block must call it.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    T total = lane < warps ? partial[lane] : T(0);
    total = warp_sum(total);
    __syncthreads();  // partial may be reused by the next call
    return total;
}

// The offset, under `strides`, of the element whose row-major index under `shape` is `i`.
__device__ __forceinline__ i64 offset_of(i64 i, const Dims& shape, const Dims& strides, int rank) {
    i64 off = 0;
    UNROLL for (int k = 7; k >= 0; k--) {
        if (k < 8 - rank) break;
        const i64 c = i % shape.d[k];
        i /= shape.d[k];
        off += c * strides.d[k];
    }
    return off;
}

// The random stream of our `Rng` (xoshiro256++ seeded through SplitMix64), bit for bit, so that
// dropout masks are the same on every device.
struct Xoshiro {
    u64 s[4];
};

__device__ __forceinline__ u64 rotl64(u64 x, int k) { return (x << k) | (x >> (64 - k)); }

__device__ __forceinline__ Xoshiro rng_seed(u64 seed) {
    Xoshiro r;
    u64 sm = seed;
    for (int i = 0; i < 4; i++) {
        sm += 0x9E3779B97F4A7C15ULL;
        u64 z = sm;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        r.s[i] = z ^ (z >> 31);
    }
    return r;
}

__device__ __forceinline__ u64 rng_next(Xoshiro& r) {
    const u64 result = rotl64(r.s[0] + r.s[3], 23) + r.s[0];
    const u64 t = r.s[1] << 17;
    r.s[2] ^= r.s[0];
    r.s[3] ^= r.s[1];
    r.s[1] ^= r.s[2];
    r.s[0] ^= r.s[3];
    r.s[2] ^= t;
    r.s[3] = rotl64(r.s[3], 45);
    return result;
}

// A uniform sample in [0, 1) with 53 random bits (`Rng::uniform`).
__device__ __forceinline__ double rng_uniform(Xoshiro& r) {
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}
