// Vanilla RNN: h_t = act(x_t·Wx + h_{t-1}·Wh + b), act = tanh or relu.
#include <utility>

#include "sequence.hpp"

namespace fastrnn {

namespace {

// d act / d a times the incoming gradient g, written in terms of the output h = act(a).
// For relu the gradient is selected, not multiplied by 0, so a NaN in g stops at an
// inactive unit (as in PyTorch).
template <class T>
T activation_backward(T g, T h, Activation act) {
    if (act == Activation::tanh) {
        return g * (T(1) - h * h);
    }
    return h > T(0) ? g : T(0);
}

// dA of one row's units [j0, j1) at one step from the gradient reaching h_t (dh_t, unless
// HAS_DH is false, plus dnext); dprev, the next product's output, is zeroed.
template <bool HAS_DH, Activation ACT, class T>
FASTRNN_WIDEST void step_grads(idx j0, idx j1, const T* __restrict h, const T* __restrict dh,
                               const T* __restrict dnext, T* __restrict da, T* __restrict dprev) {
    for (idx j = j0; j < j1; ++j) {
        const T g = HAS_DH ? dh[j] + dnext[j] : T(0) + dnext[j];
        da[j] = activation_backward(g, h[j], ACT);
        dprev[j] = T(0);
    }
}

}  // namespace

template <class T>
void rnn_forward(const ForwardArgs<T>& a, Activation act) {
    const Dims d = a.dims;
    const idx H = d.H;
    const PackedB<T> Wh = pack_b(H, H, row_major(a.Wh, H), d.T);  // (H,H), reused by every step
    const std::vector<PackedB<T>> Wx = step_gates(a, 1);
    const Kernels<T>& simd = kernels<T>();

    run_team(sequence_threads(d, 1), [&] {
        // h (N*T,H) first holds x·Wx; each step adds h_{t-1}·Wh, then b and act in place.
        const Block mine = team_block(d.N, Wh);
        project_inputs(mine, a, Wx, 1, a.h, H);
        for (idx t = 0; t < d.T; ++t) {
            gemm_block(mine, prev_h(a.h0, a.h, d, t), Wh, true, a.h + t * H, d.T * H);
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                T* ht = a.h + (n * d.T + t) * H;
                if (!a.lengths.active(n, t)) {
                    std::fill(ht + j0, ht + j1, T(0));
                    return;
                }
                for (idx j = j0; j < j1; ++j) {
                    ht[j] += a.b[j];
                }
                if (act == Activation::tanh) {
                    simd.tanh(ht + j0, j1 - j0);
                } else {
                    for (idx j = j0; j < j1; ++j) {
                        ht[j] = ht[j] < T(0) ? T(0) : ht[j];  // NaN stays NaN
                    }
                }
            });
            team_barrier();
            step_done(a, t);
            if (team_stopped()) return;  // Ctrl-C: the caller discards the results
        }
        gather_final(mine, d, a.lengths, a.h, H, a.h0, a.hT);
    });
}

template <class T>
void rnn_backward(const BackwardArgs<T>& a, Activation act) {
    const Dims d = a.dims;
    const idx H = d.H;
    const PackedB<T> WhT = pack_b(H, H, row_major(a.Wh, H).t(), d.T);  // Whᵀ for dh_{t-1} = dA_t·Whᵀ
    Buffer<T> dA(d.N * d.T * H), hprev(d.N * d.T * H), dh_a(d.N * H), dh_b(d.N * H);
    Buffer<T> x_scratch(a.lengths.len != nullptr ? d.N * d.T * d.D : 0);  // x with padding as 0

    run_team(sequence_threads(d, 1), [&] {
        // dnext: the gradient reaching h_t from later steps; dprev: the one this step sends
        // back. Each thread reads and writes only its own block of both.
        T* dnext = dh_a.data();
        T* dprev = dh_b.data();
        const Block mine = team_block(d.N, WhT);
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            for (idx j = j0; j < j1; ++j) {
                dnext[n * H + j] = a.dhT ? a.dhT[n * H + j] : T(0);
            }
        });

        for (idx t = d.T - 1; t >= 0; --t) {
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                const idx row = n * d.T + t;
                T* da = dA.data() + row * H;
                if (!a.lengths.active(n, t)) {  // dA is 0; pass_through_inactive keeps the state's gradient
                    for (idx j = j0; j < j1; ++j) {
                        da[j] = T(0);
                    }
                    return;
                }
                const T* ht = a.h + row * H;
                with_flag(a.dh != nullptr, [&](auto has_dh) {
                    with_flag(act == Activation::tanh, [&](auto is_tanh) {
                        constexpr Activation ACT = decltype(is_tanh)::value ? Activation::tanh : Activation::relu;
                        step_grads<decltype(has_dh)::value, ACT, T>(j0, j1, ht, has_dh ? a.dh + row * H : nullptr,
                                                                    dnext + n * H, da, dprev + n * H);
                    });
                });
            });
            team_barrier();  // the product below needs every unit of dA_t
            if (team_stopped()) return;
            gemm_block(mine, step_block<T>(dA.data(), d, H, t), WhT, true, dprev, H);
            pass_through_inactive(mine, a.lengths, t, H, dnext, dprev);
            std::swap(dnext, dprev);
        }
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            std::copy(dnext + n * H + j0, dnext + n * H + j1, a.dh0 + n * H + j0);
        });

        shifted_states(d, a.lengths, a.h0, a.h, hprev.data());
        gemm<T>(H, H, d.N * d.T, row_major<T>(hprev.data(), H).t(), row_major<T>(dA.data(), H),
                false, a.dWh, H);
        input_grads(d, a.lengths, H, a.x, a.ids, x_scratch.data(), a.Wx, dA.data(), a.dx, a.dWx, a.db);
    });
}

template void rnn_forward<float>(const ForwardArgs<float>&, Activation);
template void rnn_forward<double>(const ForwardArgs<double>&, Activation);
template void rnn_backward<float>(const BackwardArgs<float>&, Activation);
template void rnn_backward<double>(const BackwardArgs<double>&, Activation);

}  // namespace fastrnn
