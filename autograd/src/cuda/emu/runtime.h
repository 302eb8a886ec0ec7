// The CUDA execution model on a CPU, so that our kernel sources run in tests without a GPU.
//
// A launch runs its blocks one after another on the calling thread. Within a block every CUDA
// thread is a fiber with its own stack; a fiber runs until it finishes or reaches a
// barrier (__syncthreads, or the exchange inside a warp shuffle), and the scheduler releases a
// barrier once every thread it waits for has arrived. __shared__ variables are function
// statics, which all fibers of the block share, as on a GPU. Misuse that would hang or be
// undefined on a GPU -- a __syncthreads some threads never reach, a shuffle with part of a warp
// gone -- is reported as a launch error instead.
//
// A kernel whose first block never synchronises runs its other blocks as plain calls, thread
// after thread (much faster than fibers). If such a kernel then does reach a barrier in a later
// block, the emulator cannot continue and aborts with a message saying so.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include <ucontext.h>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __restrict__ __restrict
#define UNROLL

namespace emu {

// A fiber's saved context. On x86-64 a hand-written switch (callee-saved registers, stack
// pointer and the floating-point control words) is used: ucontext's swapcontext makes a system
// call per switch for the signal mask, which made warp shuffles, a switch per lane each, the
// bulk of the tests' time. Elsewhere, ucontext.
#if defined(__x86_64__)
struct Ctx {
    void* sp;
};

extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

inline void ctx_switch(Ctx* save, Ctx* load) {
    emu_switch(&save->sp, load->sp);
}

// A context that starts `entry` (which never returns) on the given stack: a frame laid out as
// emu_switch leaves one, whose return address is `entry`, with the stack 16-byte aligned at
// entry as after a call.
inline void ctx_make(Ctx* c, char* stack, size_t size, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)(top - 72);
    uint32_t csr[2];
    asm volatile("stmxcsr %0" : "=m"(csr[0]));
    asm volatile("fnstcw %0" : "=m"(csr[1]));
    memcpy(&sp[0], csr, 8);
    for (int i = 1; i <= 6; i++) sp[i] = 0;
    sp[7] = (uint64_t)(uintptr_t)entry;
    c->sp = sp;
}
#else
struct Ctx {
    ucontext_t uc;
};

inline void ctx_switch(Ctx* save, Ctx* load) {
    swapcontext(&save->uc, &load->uc);
}

inline void ctx_make(Ctx* c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
#endif

enum State { READY, BLOCK_WAIT, WARP_WAIT, DONE };

struct Fiber {
    Ctx ctx;
    State state;
    uint3 tid;
};

constexpr size_t STACK_BYTES = 64 * 1024;
constexpr int MAX_THREADS = 1024;

// The state of the launch running on this OS thread.
struct Run {
    void (*body)(void*);
    void* arg;
    Fiber fibers[MAX_THREADS];
    char* stacks = nullptr;
    size_t stacks_len = 0;
    Ctx sched;
    int current = -1;
    int nthreads = 0;
    bool fiber_mode = false;
    bool used_sync = false;
    bool failed = false;
    char error[512];
    uint64_t lanes[MAX_THREADS];
    unsigned char* dyn_shared = nullptr;
    size_t dyn_shared_len = 0;
};

inline thread_local Run* run_state = nullptr;

inline Run& run() {
    if (!run_state) run_state = new Run();
    return *run_state;
}

inline int linear_tid() {
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

inline void fail(const char* what) {
    Run& r = run();
    if (!r.failed) {
        snprintf(r.error, sizeof r.error, "%s (block %u,%u,%u, thread %u,%u,%u)", what, blockIdx.x, blockIdx.y,
                 blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
        r.failed = true;
    }
    if (!r.fiber_mode) {
        fprintf(stderr, "CUDA emulator: %s\n", r.error);
        abort();
    }
    // Park this fiber for good: the scheduler sees `failed` and ends the launch.
    Fiber& f = r.fibers[r.current];
    f.state = DONE;
    ctx_switch(&f.ctx, &r.sched);
}

inline void wait(State s) {
    Run& r = run();
    if (!r.fiber_mode) {
        fail("a block synchronised although the kernel's first block did not: the emulator ran it without fibers");
    }
    r.used_sync = true;
    Fiber& f = r.fibers[r.current];
    f.state = s;
    ctx_switch(&f.ctx, &r.sched);
}

inline unsigned char* dyn_shared() {
    return run().dyn_shared;
}

// A fiber's first frame: the thread's body, then back to the scheduler for good.
inline void fiber_entry() {
    Run& r = run();
    r.body(r.arg);
    Fiber& f = r.fibers[r.current];
    f.state = DONE;
    ctx_switch(&f.ctx, &r.sched);
    abort();  // a finished fiber is never resumed
}

inline uint3 tid_of(int t) {
    unsigned bx = blockDim.x, by = blockDim.y;
    return uint3{t % bx, (t / bx) % by, t / (bx * by)};
}

// Runs the current block with one fiber per thread; false (with r.error set) on misuse.
inline bool run_block_fibers(Run& r) {
    const int n = r.nthreads;
    for (int t = 0; t < n; t++) {
        Fiber& f = r.fibers[t];
        ctx_make(&f.ctx, r.stacks + (size_t)t * STACK_BYTES, STACK_BYTES, fiber_entry);
        f.state = READY;
        f.tid = tid_of(t);
    }
    for (;;) {
        for (int t = 0; t < n; t++) {
            if (r.fibers[t].state != READY) continue;
            r.current = t;
            threadIdx = r.fibers[t].tid;
            ctx_switch(&r.sched, &r.fibers[t].ctx);
            if (r.failed) return false;
        }
        int done = 0, at_block = 0, at_warp = 0;
        for (int t = 0; t < n; t++) {
            State s = r.fibers[t].state;
            done += s == DONE;
            at_block += s == BLOCK_WAIT;
            at_warp += s == WARP_WAIT;
        }
        if (done == n) return true;
        bool released = false;
        for (int w = 0; w * 32 < n; w++) {
            int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0, gone = 0;
            for (int t = lo; t < hi; t++) {
                waiting += r.fibers[t].state == WARP_WAIT;
                gone += r.fibers[t].state == DONE;
            }
            if (waiting == 0) continue;
            if (waiting != hi - lo) {
                threadIdx = r.fibers[lo].tid;
                snprintf(r.error, sizeof r.error,
                         "warp %d: a shuffle that only %d of its %d lanes reached (%d exited) (block %u,%u,%u)", w,
                         waiting, hi - lo, gone, blockIdx.x, blockIdx.y, blockIdx.z);
                r.failed = true;
                return false;
            }
            for (int t = lo; t < hi; t++) r.fibers[t].state = READY;
            released = true;
        }
        if (released) continue;
        if (at_block > 0 && at_warp == 0) {
            if (done > 0) {
                snprintf(r.error, sizeof r.error,
                         "__syncthreads reached by %d threads after %d others exited (block %u,%u,%u)", at_block, done,
                         blockIdx.x, blockIdx.y, blockIdx.z);
                r.failed = true;
                return false;
            }
            for (int t = 0; t < n; t++) r.fibers[t].state = READY;
            continue;
        }
        snprintf(r.error, sizeof r.error, "deadlock: %d threads at __syncthreads, %d at a shuffle (block %u,%u,%u)",
                 at_block, at_warp, blockIdx.x, blockIdx.y, blockIdx.z);
        r.failed = true;
        return false;
    }
}

// cfg: grid x, y, z, block x, y, z, dynamic shared bytes.
inline int launch_body(void (*body)(void*), void* arg, const unsigned* cfg, char* err, unsigned long errlen) {
    Run& r = run();
    gridDim = dim3{cfg[0], cfg[1], cfg[2]};
    blockDim = dim3{cfg[3], cfg[4], cfg[5]};
    long threads = (long)cfg[3] * cfg[4] * cfg[5];
    if (threads <= 0 || threads > MAX_THREADS || cfg[0] == 0 || cfg[1] == 0 || cfg[2] == 0) {
        snprintf(err, errlen, "invalid launch: grid %u,%u,%u block %u,%u,%u", cfg[0], cfg[1], cfg[2], cfg[3], cfg[4],
                 cfg[5]);
        return 1;
    }
    size_t need = (size_t)threads * STACK_BYTES;
    if (r.stacks_len < need) {
        free(r.stacks);
        r.stacks = (char*)malloc(need);
        r.stacks_len = need;
    }
    if (r.dyn_shared_len < cfg[6] + 16) {
        free(r.dyn_shared);
        r.dyn_shared = (unsigned char*)malloc(cfg[6] + 16);
        r.dyn_shared_len = cfg[6] + 16;
    }
    r.body = body;
    r.arg = arg;
    r.nthreads = (int)threads;
    r.failed = false;
    r.used_sync = false;
    bool first = true;
    for (unsigned bz = 0; bz < cfg[2]; bz++)
        for (unsigned by = 0; by < cfg[1]; by++)
            for (unsigned bx = 0; bx < cfg[0]; bx++) {
                blockIdx = uint3{bx, by, bz};
                // Uninitialised shared memory reads as NaN, so a kernel that forgets to write it
                // fails loudly here.
                memset(r.dyn_shared, 0xff, cfg[6] + 16);
                if (first || r.used_sync) {
                    r.fiber_mode = true;
                    bool ok = run_block_fibers(r);
                    r.fiber_mode = false;
                    if (!ok) {
                        snprintf(err, errlen, "%s", r.error);
                        return 1;
                    }
                    first = false;
                } else {
                    for (int t = 0; t < r.nthreads; t++) {
                        r.current = t;
                        threadIdx = tid_of(t);
                        body(arg);
                    }
                }
            }
    return 0;
}

template <typename... A, std::size_t... I>
void call_with(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<A*>(args[I])...);
}

template <typename... A>
struct Call {
    void (*k)(A...);
    void** args;
    static void body(void* p) {
        Call* c = static_cast<Call*>(p);
        call_with(c->k, c->args, std::index_sequence_for<A...>{});
    }
};

template <typename... A>
int launch(void (*k)(A...), const unsigned* cfg, void** args, char* err, unsigned long errlen) {
    Call<A...> c{k, args};
    return launch_body(&Call<A...>::body, &c, cfg, err, errlen);
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}

// A warp shuffle: every lane posts its value, all wait, each reads its source lane's value,
// all wait again (so nobody posts the next value before everyone has read this one).
template <typename T>
inline T shuffle(unsigned mask, T v, int src_lane_of_lane(int, int), int param) {
    Run& r = run();
    if (mask != 0xffffffffu) fail("the emulator supports full-warp shuffles only (mask 0xffffffff)");
    int t = linear_tid(), lane = t % 32, base = t - lane;
    r.lanes[t] = to_bits(v);
    wait(WARP_WAIT);
    int src = src_lane_of_lane(lane, param);
    T out = v;
    if (src >= 0) {
        if (base + src >= r.nthreads) fail("a shuffle read a lane the block does not have (partial warp)");
        out = from_bits<T>(r.lanes[base + src]);
    }
    wait(WARP_WAIT);
    return out;
}

inline int xor_lane(int lane, int m) {
    return (lane ^ m) & 31;
}
inline int down_lane(int lane, int d) {
    return lane + d < 32 ? lane + d : -1;
}

}  // namespace emu

#define KERNEL(name) extern "C" void name
#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dyn_shared())
#define EMU_EXPORT(name)                                                                                   \
    extern "C" int emu_launch_##name(const unsigned* cfg, void** args, char* err, unsigned long errlen) { \
        return emu::launch(&name, cfg, args, err, errlen);                                                 \
    }

inline void __syncthreads() {
    emu::wait(emu::BLOCK_WAIT);
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return emu::shuffle(mask, v, emu::xor_lane, lane_mask);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, int delta) {
    return emu::shuffle(mask, v, emu::down_lane, delta);
}

using std::isfinite;
using std::isnan;
