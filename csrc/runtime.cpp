// Process-wide settings: which instruction-set build runs, and how many threads.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "isa.hpp"

namespace fastrnn {

// The three builds of simd.cpp.
namespace generic {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace generic
#ifdef FASTRNN_HAVE_X86_SIMD
namespace avx2 {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace avx2
namespace avx512 {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace avx512
#endif

// ---------------------------------------------------------------- instruction set

namespace {

Isa detect_isa() {
#ifdef FASTRNN_HAVE_X86_SIMD
    __builtin_cpu_init();
    // libgcc's checks include the OS's support for saving the wider registers.
    if (__builtin_cpu_supports("avx512f")) {
        return Isa::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return Isa::avx2;
    }
#endif
    return Isa::generic;
}

Isa requested_isa() {
    const Isa best = detect_isa();
    const char* env = std::getenv("FASTRNN_ISA");
    if (env == nullptr) {
        return best;
    }
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
        if (std::strcmp(env, isa_name(isa)) == 0) {
            return isa < best ? isa : best;
        }
    }
    return best;
}

std::atomic<int> g_isa{int(requested_isa())};
std::atomic<int> g_threads{0};  // 0: the OpenMP default

}  // namespace

Isa best_isa() {
    static const Isa best = detect_isa();
    return best;
}
Isa active_isa() { return Isa(g_isa.load()); }
void set_active_isa(Isa isa) { g_isa.store(int(isa < best_isa() ? isa : best_isa())); }

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

template <>
const Kernels<float>& kernels<float>(Isa isa) {
#ifdef FASTRNN_HAVE_X86_SIMD
    if (isa == Isa::avx512) return avx512::kernels_f32;
    if (isa == Isa::avx2) return avx2::kernels_f32;
#endif
    (void)isa;
    return generic::kernels_f32;
}

template <>
const Kernels<double>& kernels<double>(Isa isa) {
#ifdef FASTRNN_HAVE_X86_SIMD
    if (isa == Isa::avx512) return avx512::kernels_f64;
    if (isa == Isa::avx2) return avx2::kernels_f64;
#endif
    (void)isa;
    return generic::kernels_f64;
}

// ---------------------------------------------------------------- threads

int num_threads() {
    const int n = g_threads.load();
    if (n > 0) {
        return n;
    }
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }

}  // namespace fastrnn
