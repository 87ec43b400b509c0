// The vector types behind the micro-kernels and activations. CMake compiles this file
// three times:
//   FASTRNN_BUILD_AVX512 with -mavx512f -mfma  -> namespace fastrnn::avx512
//   FASTRNN_BUILD_AVX2   with -mavx2 -mfma     -> namespace fastrnn::avx2
//   neither, with the baseline flags            -> namespace fastrnn::generic
// runtime.cpp hands out a SIMD build only after checking at run time that the CPU has it.
#include <algorithm>
#include <cstring>

#include "isa.hpp"

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
#include "vecmath_kernel.hpp"

namespace fastrnn {
namespace FASTRNN_ISA_NS {
namespace {

#if defined(FASTRNN_BUILD_AVX512)

// 32 zmm registers: 12 x 2 accumulators + 2 B vectors + 1 broadcast.
struct F32 {
    using T = float;
    using R = __m512;
    static constexpr int W = 16, MR = 12, WIDE = 4;
    static R zero() { return _mm512_setzero_ps(); }
    static R load(const T* p) { return _mm512_loadu_ps(p); }
    static void store(T* p, R r) { _mm512_storeu_ps(p, r); }
    static R bcast(T x) { return _mm512_set1_ps(x); }
    static R add(R a, R b) { return _mm512_add_ps(a, b); }
    static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
    static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
    static R div(R a, R b) { return _mm512_div_ps(a, b); }
    static R min(R a, R b) { return _mm512_min_ps(a, b); }
    static R max(R a, R b) { return _mm512_max_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static R exp2i(R t) {
        const __m512i bits = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 23));
    }
    static R where_less(R a, R b, R x, R y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
    // r[i][j] <- r[j][i] for a 16 x 16 block: pairs of rows interleaved at 1, 2, 4 and 8
    // elements (the last two as 128-bit lanes).
    static void transpose(R* r) {
        R t[16], u[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            for (int h = 0; h < 2; ++h) {
                u[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + h]), _mm512_castps_pd(t[i + 2 + h])));
                u[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + h]), _mm512_castps_pd(t[i + 2 + h])));
            }
        }
        for (int i = 0; i < 16; i += 8) {
            for (int c = 0; c < 4; ++c) {
                t[i + c] = _mm512_shuffle_f32x4(u[i + c], u[i + 4 + c], 0x88);
                t[i + 4 + c] = _mm512_shuffle_f32x4(u[i + c], u[i + 4 + c], 0xdd);
            }
        }
        for (int c = 0; c < 8; ++c) {
            r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
            r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        }
    }
};
struct F64 {
    using T = double;
    using R = __m512d;
    static constexpr int W = 8, MR = 12, WIDE = 4;
    static R zero() { return _mm512_setzero_pd(); }
    static R load(const T* p) { return _mm512_loadu_pd(p); }
    static void store(T* p, R r) { _mm512_storeu_pd(p, r); }
    static R bcast(T x) { return _mm512_set1_pd(x); }
    static R add(R a, R b) { return _mm512_add_pd(a, b); }
    static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
    static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
    static R div(R a, R b) { return _mm512_div_pd(a, b); }
    static R min(R a, R b) { return _mm512_min_pd(a, b); }
    static R max(R a, R b) { return _mm512_max_pd(a, b); }
    static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static R exp2i(R t) {
        const __m512i bits = _mm512_add_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(1023));
        return _mm512_castsi512_pd(_mm512_slli_epi64(bits, 52));
    }
    static R where_less(R a, R b, R x, R y) { return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_LT_OQ), y, x); }
    // r[i][j] <- r[j][i] for an 8 x 8 block: rows interleaved at 1 element, then at 2 and 4
    // as 128-bit lanes.
    static void transpose(R* r) {
        R t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            for (int h = 0; h < 2; ++h) {
                u[i + h] = _mm512_shuffle_f64x2(t[i + h], t[i + 2 + h], 0x88);
                u[i + 2 + h] = _mm512_shuffle_f64x2(t[i + h], t[i + 2 + h], 0xdd);
            }
        }
        for (int c = 0; c < 4; ++c) {
            r[c] = _mm512_shuffle_f64x2(u[c], u[4 + c], 0x88);
            r[4 + c] = _mm512_shuffle_f64x2(u[c], u[4 + c], 0xdd);
        }
    }
};

#elif defined(FASTRNN_BUILD_AVX2)

// 16 ymm registers: 6 x 2 accumulators + 2 B vectors + 1 broadcast.
struct F32 {
    using T = float;
    using R = __m256;
    static constexpr int W = 8, MR = 6, WIDE = 2;
    static R zero() { return _mm256_setzero_ps(); }
    static R load(const T* p) { return _mm256_loadu_ps(p); }
    static void store(T* p, R r) { _mm256_storeu_ps(p, r); }
    static R bcast(T x) { return _mm256_set1_ps(x); }
    static R add(R a, R b) { return _mm256_add_ps(a, b); }
    static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
    static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
    static R div(R a, R b) { return _mm256_div_ps(a, b); }
    static R min(R a, R b) { return _mm256_min_ps(a, b); }
    static R max(R a, R b) { return _mm256_max_ps(a, b); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
    static R exp2i(R t) {
        const __m256i bits = _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 23));
    }
    static R where_less(R a, R b, R x, R y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
    // r[i][j] <- r[j][i] for an 8 x 8 block: rows interleaved at 1 and 2 elements, then
    // 128-bit halves exchanged.
    static void transpose(R* r) {
        R t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            for (int h = 0; h < 2; ++h) {
                u[i + 2 * h] = _mm256_shuffle_ps(t[i + h], t[i + 2 + h], 0x44);
                u[i + 2 * h + 1] = _mm256_shuffle_ps(t[i + h], t[i + 2 + h], 0xee);
            }
        }
        for (int c = 0; c < 4; ++c) {
            r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
            r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
        }
    }
};
struct F64 {
    using T = double;
    using R = __m256d;
    static constexpr int W = 4, MR = 6, WIDE = 2;
    static R zero() { return _mm256_setzero_pd(); }
    static R load(const T* p) { return _mm256_loadu_pd(p); }
    static void store(T* p, R r) { _mm256_storeu_pd(p, r); }
    static R bcast(T x) { return _mm256_set1_pd(x); }
    static R add(R a, R b) { return _mm256_add_pd(a, b); }
    static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
    static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
    static R div(R a, R b) { return _mm256_div_pd(a, b); }
    static R min(R a, R b) { return _mm256_min_pd(a, b); }
    static R max(R a, R b) { return _mm256_max_pd(a, b); }
    static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
    static R exp2i(R t) {
        const __m256i bits = _mm256_add_epi64(_mm256_castpd_si256(t), _mm256_set1_epi64x(1023));
        return _mm256_castsi256_pd(_mm256_slli_epi64(bits, 52));
    }
    static R where_less(R a, R b, R x, R y) { return _mm256_blendv_pd(y, x, _mm256_cmp_pd(a, b, _CMP_LT_OQ)); }
    // r[i][j] <- r[j][i] for a 4 x 4 block: rows interleaved, then 128-bit halves exchanged.
    static void transpose(R* r) {
        const R t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
        const R t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
        r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
        r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
        r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
        r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
    }
};

#else

// Plain C++: small fixed arrays the compiler may vectorise with the baseline ISA. a*b + c
// is rounded twice here (no FMA), so results differ from the SIMD builds in the last
// bits, as any two BLAS builds do. min/max follow the x86 rule: the second operand
// when either is NaN.
template <class TT, class Bits, int Lanes>
struct Plain {
    using T = TT;
    struct R {
        T v[Lanes];
    };
    static constexpr int W = Lanes, MR = 4, WIDE = 2;
    static constexpr int mantissa_bits = sizeof(T) == 4 ? 23 : 52;
    static constexpr Bits bias = sizeof(T) == 4 ? 127 : 1023;

    template <class F>
    static R map(F f) {
        R r;
        for (int l = 0; l < W; ++l) r.v[l] = f(l);
        return r;
    }
    static R zero() { return bcast(T(0)); }
    static R load(const T* p) { return map([&](int l) { return p[l]; }); }
    static void store(T* p, R r) {
        for (int l = 0; l < W; ++l) p[l] = r.v[l];
    }
    static R bcast(T x) { return map([&](int) { return x; }); }
    static R add(R a, R b) { return map([&](int l) { return a.v[l] + b.v[l]; }); }
    static R sub(R a, R b) { return map([&](int l) { return a.v[l] - b.v[l]; }); }
    static R mul(R a, R b) { return map([&](int l) { return a.v[l] * b.v[l]; }); }
    static R div(R a, R b) { return map([&](int l) { return a.v[l] / b.v[l]; }); }
    static R min(R a, R b) { return map([&](int l) { return a.v[l] < b.v[l] ? a.v[l] : b.v[l]; }); }
    static R max(R a, R b) { return map([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; }); }
    static R fma(R a, R b, R c) { return map([&](int l) { return a.v[l] * b.v[l] + c.v[l]; }); }
    static R where_less(R a, R b, R x, R y) { return map([&](int l) { return a.v[l] < b.v[l] ? x.v[l] : y.v[l]; }); }
    static void transpose(R* r) {
        for (int i = 0; i < W; ++i) {
            for (int j = i + 1; j < W; ++j) std::swap(r[i].v[j], r[j].v[i]);
        }
    }
    static R exp2i(R t) {
        return map([&](int l) {
            Bits bits;
            std::memcpy(&bits, &t.v[l], sizeof bits);
            bits = Bits(bits + bias) << mantissa_bits;
            T out;
            std::memcpy(&out, &bits, sizeof out);
            return out;
        });
    }
};
using F32 = Plain<float, std::uint32_t, 4>;
using F64 = Plain<double, std::uint64_t, 2>;

#endif

template <class V>
constexpr Kernels<typename V::T> table() {
    return {Kernel<V>::NR,           Kernel<V>::MR,        &Kernel<V>::pack,
            &Kernel<V>::compute,     &Math<V>::sigmoid_inplace, &Math<V>::tanh_inplace,
            &Math<V>::exp_inplace};
}

}  // namespace

extern const Kernels<float> kernels_f32 = table<F32>();
extern const Kernels<double> kernels_f64 = table<F64>();

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
