// What the kernel sources need from the compiler, for NVRTC (the emulator's runtime.h defines
// the same names for a host C++ compiler).
#define KERNEL(name) extern "C" __global__ void name
#define DYNAMIC_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char name##_raw[]; \
    T* name = reinterpret_cast<T*>(name##_raw)
#define EMU_EXPORT(name)
#define UNROLL _Pragma("unroll")
