// Vector exp, sigmoid and tanh, written once over a vector type V (see gemm_kernel.hpp for
// how simd.cpp instantiates it per instruction set).
//
// exp(x): n = round(x / ln2) and r = x - n ln2 (ln2 split in two for exactness), then a
// polynomial for exp(r) on |r| <= ln2/2, scaled by 2^n built directly in the exponent bits.
// float uses a degree-7 minimax polynomial, double the Taylor series to r^13 (truncation
// < 1e-17); both are within a few ulp of the correctly rounded result. Arguments are
// clamped to the range where 2^n is a normal number, and results beyond it are 0 or
// infinity; NaN passes through (V::min/max return their second operand when either is
// NaN, so the argument goes second).
//
// V needs, beyond gemm_kernel.hpp's list: add, sub, mul, div, min, max, exp2i(t), which
// returns 2^n for t = n + 1.5 * 2^mantissa_bits, and where_less(a, b, x, y) = a < b ? x : y
// per lane (false when either is NaN).

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class V>
struct Math {
    using T = typename V::T;
    using R = typename V::R;
    static constexpr int W = V::W;
    static constexpr bool f32 = sizeof(T) == 4;

    static constexpr T inv_factorial(int k) {
        T f = T(1);
        for (int i = 2; i <= k; ++i) f /= T(i);
        return f;
    }

    static R exp(R x) {
        const R arg = x;
        const T hi = f32 ? T(88.3) : T(709.0);
        const T lo = f32 ? T(-87.3) : T(-708.3);
        const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^23, 1.5 * 2^52
        const T ln2_hi = f32 ? T(0.693359375) : T(6.93147180369123816490e-01);
        const T ln2_lo = f32 ? T(-2.12194440e-4) : T(1.90821492927058770002e-10);
        x = V::max(V::bcast(lo), V::min(V::bcast(hi), x));
        const R t = V::fma(x, V::bcast(T(1.44269504088896340736)), V::bcast(magic));
        const R n = V::sub(t, V::bcast(magic));
        R r = V::fma(n, V::bcast(-ln2_hi), x);
        r = V::fma(n, V::bcast(-ln2_lo), r);
        R p;
        if constexpr (f32) {
            p = V::bcast(T(1.9875691500e-4));
            p = V::fma(p, r, V::bcast(T(1.3981999507e-3)));
            p = V::fma(p, r, V::bcast(T(8.3334519073e-3)));
            p = V::fma(p, r, V::bcast(T(4.1665795894e-2)));
            p = V::fma(p, r, V::bcast(T(1.6666665459e-1)));
            p = V::fma(p, r, V::bcast(T(5.0000001201e-1)));
        } else {
            p = V::bcast(inv_factorial(13));
            for (int k = 12; k >= 2; --k) p = V::fma(p, r, V::bcast(inv_factorial(k)));
        }
        // exp(r) = 1 + r + r^2 p(r)
        const R e = V::add(V::fma(p, V::mul(r, r), r), V::bcast(T(1)));
        R out = V::mul(e, V::exp2i(t));
        // Past the clamped range the result underflows to 0 or overflows to infinity, as the
        // true exp does near there: so sigmoid(-inf) is exactly 0, and 0 * inf makes NaN.
        out = V::where_less(arg, V::bcast(lo), V::zero(), out);
        out = V::where_less(V::bcast(hi), arg, V::bcast(f32 ? T(__builtin_huge_valf()) : T(__builtin_huge_val())), out);
        return out;
    }

    static R sigmoid(R x) {
        const R one = V::bcast(T(1));
        return V::div(one, V::add(one, exp(V::sub(V::zero(), x))));
    }

    // tanh(x) = 1 - 2 / (exp(2x) + 1): exact at the saturated ends, absolute error of a
    // few ulp near 0.
    static R tanh(R x) {
        const R one = V::bcast(T(1));
        const R e = exp(V::add(x, x));
        return V::sub(one, V::div(V::bcast(T(2)), V::add(e, one)));
    }

    template <R (*F)(R)>
    static void apply(T* p, idx n) {
        idx i = 0;
        for (; i + W <= n; i += W) {
            V::store(p + i, F(V::load(p + i)));
        }
        if (i < n) {  // the tail goes through a padded copy
            alignas(64) T tail[W] = {};
            for (idx j = i; j < n; ++j) tail[j - i] = p[j];
            V::store(tail, F(V::load(tail)));
            for (idx j = i; j < n; ++j) p[j] = tail[j - i];
        }
    }

    static void sigmoid_inplace(T* p, idx n) { apply<&sigmoid>(p, n); }
    static void tanh_inplace(T* p, idx n) { apply<&tanh>(p, n); }
    static void exp_inplace(T* p, idx n) { apply<&exp>(p, n); }
};

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
