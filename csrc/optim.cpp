// Optimizer updates and gradient clipping over a whole parameter list in one call.
//
// The arrays are treated as one long vector that the team splits into contiguous shares;
// every element's arithmetic is independent of the others, so any split gives the same
// result. These loops are memory-bound: one fused pass reads each of p, g and the state
// once, where the NumPy formulation makes a temporary per operation.
#include <cmath>
#include <type_traits>

#include "training.hpp"

namespace fastrnn {
namespace {

// Runs body() on a team sized for `elements` elementwise updates.
template <class F>
void run_elementwise(idx elements, F&& body) {
    run_team_or_inline(threads_for(double(elements)), body);
}

idx total_of(const std::vector<idx>& n) {
    idx total = 0;
    for (idx k : n) total += k;
    return total;
}

// Calls f(k, i0, i1) for the pieces [i0, i1) of array k in the range `mine` of the
// arrays laid end to end.
template <class F>
void for_pieces(const std::vector<idx>& n, Range mine, F&& f) {
    idx offset = 0;
    for (std::size_t k = 0; k < n.size(); ++k) {
        const idx lo = std::max(mine.begin, offset), hi = std::min(mine.end, offset + n[k]);
        if (lo < hi) f(k, lo - offset, hi - offset);
        offset += n[k];
    }
}

// The same for this team member's share of the `total` elements.
template <class F>
void for_my_pieces(const std::vector<idx>& n, idx total, F&& f) {
    for_pieces(n, my_share(total), f);
}

// What a rule does to a gradient element before using it (UpdateRule::clip_value and
// grad_scale): a compile-time choice, so the loops stay branch-free.
enum class GradOp { as_is, clamp, scale };

// Comparisons with NaN are false, so NaN stays NaN, as with np.clip.
template <class T>
T clamped(T x, T limit) {
    return x < -limit ? -limit : (x > limit ? limit : x);
}

template <GradOp OP, class T>
T grad_in(T g, T v) {
    if constexpr (OP == GradOp::clamp) return clamped(g, v);
    else if constexpr (OP == GradOp::scale) return g * v;
    else return g;
}

// Each rule below spells out the NumPy reference's operations in the same order, one
// rounding per operation, built for the widest vectors the CPU has (FASTRNN_WIDEST):
// sqrt and division dominate, and their vector forms round exactly as the scalar ones,
// so every build gives the same bits. gv is the clip limit or the scale of OP.

template <GradOp OP, class T>
FASTRNN_WIDEST void sgd(const UpdateRule& r, T gv, T* p, const T* g, T* buf, idx i0, idx i1) {
    const T lr = T(r.lr), mu = T(r.momentum), wd = T(r.weight_decay);
    const bool decay = r.weight_decay != 0, momentum = r.momentum > 0;
    for (idx i = i0; i < i1; ++i) {
        T d = grad_in<OP>(g[i], gv);
        if (decay) d = d + wd * p[i];
        if (momentum) {
            buf[i] = buf[i] * mu + d;
            d = r.nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] = p[i] - lr * d;
    }
}

template <GradOp OP, class T>
FASTRNN_WIDEST void adagrad(const UpdateRule& r, T gv, T* p, const T* g, T* mem, idx i0, idx i1) {
    const T lr = T(r.lr), eps = T(r.eps);
    for (idx i = i0; i < i1; ++i) {
        const T gi = grad_in<OP>(g[i], gv);
        mem[i] = mem[i] + gi * gi;
        p[i] = p[i] - lr * (gi / std::sqrt(mem[i] + eps));
    }
}

template <GradOp OP, class T>
FASTRNN_WIDEST void rmsprop(const UpdateRule& r, T gv, T* p, const T* g, T* m, idx i0, idx i1) {
    const T lr = T(r.lr), alpha = T(r.alpha), one_m_alpha = T(1.0 - r.alpha), eps = T(r.eps);
    for (idx i = i0; i < i1; ++i) {
        const T gi = grad_in<OP>(g[i], gv);
        m[i] = m[i] * alpha + one_m_alpha * (gi * gi);
        p[i] = p[i] - lr * (gi / (std::sqrt(m[i]) + eps));
    }
}

template <GradOp OP, class T>
FASTRNN_WIDEST void adam(const UpdateRule& r, T gv, T* p, const T* g, T* m, T* v, idx i0, idx i1) {
    const T b1 = T(r.beta1), one_m_b1 = T(1.0 - r.beta1), b2 = T(r.beta2), one_m_b2 = T(1.0 - r.beta2);
    const T eps = T(r.eps), step = T(r.step_size), bc2 = T(r.bc2_sqrt), wd = T(r.weight_decay);
    const T shrink = T(1.0 - r.lr * r.weight_decay);
    const bool decay = r.weight_decay != 0;
    for (idx i = i0; i < i1; ++i) {
        T d = grad_in<OP>(g[i], gv);
        if (decay && r.decoupled) p[i] = p[i] * shrink;
        if (decay && !r.decoupled) d = d + wd * p[i];
        m[i] = m[i] * b1 + one_m_b1 * d;
        v[i] = v[i] * b2 + one_m_b2 * (d * d);
        const T denom = std::sqrt(v[i]) / bc2 + eps;
        p[i] = p[i] - step * (m[i] / denom);
    }
}

// The work of one element's update in flops, for sizing the team: a square root and a
// division cost some twenty multiply-adds each in throughput.
double cost_of(const UpdateRule& rule) {
    return rule.kind == UpdateRule::sgd ? 4.0 : 40.0;
}

template <GradOp OP, class T>
void update_range(const UpdateRule& rule, const ParamList<T>& a, T gv, Range range) {
    for_pieces(a.n, range, [&](std::size_t k, idx i0, idx i1) {
        T* s0 = a.s0.empty() ? nullptr : a.s0[k];
        switch (rule.kind) {
            case UpdateRule::sgd: sgd<OP>(rule, gv, a.p[k], a.g[k], s0, i0, i1); break;
            case UpdateRule::adagrad: adagrad<OP>(rule, gv, a.p[k], a.g[k], s0, i0, i1); break;
            case UpdateRule::rmsprop: rmsprop<OP>(rule, gv, a.p[k], a.g[k], s0, i0, i1); break;
            case UpdateRule::adam: adam<OP>(rule, gv, a.p[k], a.g[k], s0, a.s1[k], i0, i1); break;
        }
    });
}

// Calls f(op, gv) with the rule's gradient transform as a compile-time GradOp.
template <class T, class F>
void with_grad_op(const UpdateRule& rule, F&& f) {
    if (rule.clip_value > 0) {
        f(std::integral_constant<GradOp, GradOp::clamp>{}, T(rule.clip_value));
    } else if (rule.grad_scale != 1) {
        f(std::integral_constant<GradOp, GradOp::scale>{}, T(rule.grad_scale));
    } else {
        f(std::integral_constant<GradOp, GradOp::as_is>{}, T(1));
    }
}

}  // namespace

template <class T>
void optimizer_update(const UpdateRule& rule, const ParamList<T>& a) {
    const idx total = total_of(a.n);
    with_grad_op<T>(rule, [&](auto op, T gv) {
        run_team_or_inline(threads_for(cost_of(rule) * double(total)), [&] {
            update_range<decltype(op)::value>(rule, a, gv, my_share(total));
        });
    });
}

template <class T>
void optimizer_update_range(const UpdateRule& rule, const ParamList<T>& a, idx begin, idx end) {
    with_grad_op<T>(rule, [&](auto op, T gv) { update_range<decltype(op)::value>(rule, a, gv, {begin, end}); });
}

// Chunks of a fixed size, each summed with eight running sums, then the chunk sums added
// in order: the result is the same for any team.
template <class T>
double sum_of_squares(const std::vector<const T*>& a, const std::vector<idx>& n) {
    constexpr idx chunk = 4096;
    struct Chunk {
        const T* p;
        idx len;
    };
    std::vector<Chunk> chunks;
    for (std::size_t k = 0; k < a.size(); ++k) {
        for (idx i = 0; i < n[k]; i += chunk) chunks.push_back({a[k] + i, std::min(chunk, n[k] - i)});
    }
    std::vector<double> sums(chunks.size());
    run_elementwise(total_of(n), [&] {
        const Range mine = my_share(idx(chunks.size()));
        for (idx c = mine.begin; c < mine.end; ++c) {
            const T* p = chunks[c].p;
            const idx len = chunks[c].len;
            double s[8] = {};
            idx i = 0;
            for (; i + 8 <= len; i += 8) {
                for (int l = 0; l < 8; ++l) s[l] += double(p[i + l]) * double(p[i + l]);
            }
            for (; i < len; ++i) s[0] += double(p[i]) * double(p[i]);
            sums[c] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        }
    });
    double total = 0;
    for (double s : sums) total += s;
    return total;
}

template <class T>
FASTRNN_WIDEST void clamp(T* p, idx i0, idx i1, T limit) {
    for (idx i = i0; i < i1; ++i) p[i] = clamped(p[i], limit);
}

template <class T>
void scale_all(const std::vector<T*>& a, const std::vector<idx>& n, T factor) {
    const idx total = total_of(n);
    run_elementwise(total, [&] {
        for_my_pieces(n, total, [&](std::size_t k, idx i0, idx i1) { scale_range(a[k], i0, i1, factor); });
    });
}

template <class T>
void clamp_all(const std::vector<T*>& a, const std::vector<idx>& n, T limit) {
    const idx total = total_of(n);
    run_elementwise(total, [&] {
        for_my_pieces(n, total, [&](std::size_t k, idx i0, idx i1) { clamp(a[k], i0, i1, limit); });
    });
}

#define FASTRNN_INSTANTIATE(T)                                                                  \
    template void optimizer_update<T>(const UpdateRule&, const ParamList<T>&);                  \
    template void optimizer_update_range<T>(const UpdateRule&, const ParamList<T>&, idx, idx);  \
    template double sum_of_squares<T>(const std::vector<const T*>&, const std::vector<idx>&);   \
    template void scale_all<T>(const std::vector<T*>&, const std::vector<idx>&, T);              \
    template void clamp_all<T>(const std::vector<T*>&, const std::vector<idx>&, T);
FASTRNN_INSTANTIATE(float)
FASTRNN_INSTANTIATE(double)
#undef FASTRNN_INSTANTIATE

}  // namespace fastrnn
