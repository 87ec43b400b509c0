// The vector types behind the micro-kernel. CMake compiles this file three times:
//   FASTRNN_BUILD_AVX512 with -mavx512f -mfma  -> namespace fastrnn::avx512
//   FASTRNN_BUILD_AVX2   with -mavx2 -mfma     -> namespace fastrnn::avx2
//   neither, with the baseline flags            -> namespace fastrnn::generic
// gemm.cpp calls a SIMD build only after checking at run time that the CPU has it.
#include "gemm.hpp"

#if defined(FASTRNN_BUILD_AVX512) || defined(FASTRNN_BUILD_AVX2)
#include <immintrin.h>
#endif

#if defined(FASTRNN_BUILD_AVX512)
#define FASTRNN_ISA_NS avx512
#elif defined(FASTRNN_BUILD_AVX2)
#define FASTRNN_ISA_NS avx2
#else
#define FASTRNN_ISA_NS generic
#endif

#include "gemm_kernel.hpp"

namespace fastrnn {
namespace FASTRNN_ISA_NS {
namespace {

#if defined(FASTRNN_BUILD_AVX512)

// 32 zmm registers: 12 x 2 accumulators + 2 B vectors + 1 broadcast.
struct F32 {
    using T = float;
    using R = __m512;
    static constexpr int W = 16, MR = 12;
    static R zero() { return _mm512_setzero_ps(); }
    static R load(const T* p) { return _mm512_loadu_ps(p); }
    static R bcast(T x) { return _mm512_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static void store(T* p, R r) { _mm512_storeu_ps(p, r); }
};
struct F64 {
    using T = double;
    using R = __m512d;
    static constexpr int W = 8, MR = 12;
    static R zero() { return _mm512_setzero_pd(); }
    static R load(const T* p) { return _mm512_loadu_pd(p); }
    static R bcast(T x) { return _mm512_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static void store(T* p, R r) { _mm512_storeu_pd(p, r); }
};

#elif defined(FASTRNN_BUILD_AVX2)

// 16 ymm registers: 6 x 2 accumulators + 2 B vectors + 1 broadcast.
struct F32 {
    using T = float;
    using R = __m256;
    static constexpr int W = 8, MR = 6;
    static R zero() { return _mm256_setzero_ps(); }
    static R load(const T* p) { return _mm256_loadu_ps(p); }
    static R bcast(T x) { return _mm256_set1_ps(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static void store(T* p, R r) { _mm256_storeu_ps(p, r); }
};
struct F64 {
    using T = double;
    using R = __m256d;
    static constexpr int W = 4, MR = 6;
    static R zero() { return _mm256_setzero_pd(); }
    static R load(const T* p) { return _mm256_loadu_pd(p); }
    static R bcast(T x) { return _mm256_set1_pd(x); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
    static void store(T* p, R r) { _mm256_storeu_pd(p, r); }
};

#else

// Plain C++: small fixed arrays the compiler may vectorise with the baseline ISA.
// a*b + c is rounded twice here (no FMA), so results differ from the SIMD builds in the
// last bits, as any two BLAS builds do.
template <class TT, int Lanes>
struct Plain {
    using T = TT;
    struct R {
        T v[Lanes];
    };
    static constexpr int W = Lanes, MR = 4;
    static R zero() {
        R r;
        for (int l = 0; l < W; ++l) r.v[l] = T(0);
        return r;
    }
    static R load(const T* p) {
        R r;
        for (int l = 0; l < W; ++l) r.v[l] = p[l];
        return r;
    }
    static R bcast(T x) {
        R r;
        for (int l = 0; l < W; ++l) r.v[l] = x;
        return r;
    }
    static R fma(R a, R b, R c) {
        for (int l = 0; l < W; ++l) c.v[l] += a.v[l] * b.v[l];
        return c;
    }
    static void store(T* p, R r) {
        for (int l = 0; l < W; ++l) p[l] = r.v[l];
    }
};
using F32 = Plain<float, 4>;
using F64 = Plain<double, 2>;

#endif

}  // namespace

extern const GemmIsa<float> gemm_f32 = Kernel<F32>::table();
extern const GemmIsa<double> gemm_f64 = Kernel<F64>::table();

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
