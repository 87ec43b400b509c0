// LSTM, gates i, f, o, g:  a = x_t·Wx + h_{t-1}·Wh + b  (N, 4H)
//   i, f, o = σ(a_i), σ(a_f), σ(a_o),  g = tanh(a_g)
//   c_t = f∘c_{t-1} + i∘g,  h_t = o∘tanh(c_t)
// The workspace row of (n, t) is [i f o g c], each H wide.
#include <utility>

#include "sequence.hpp"

namespace fastrnn {

namespace {

// The elementwise steps on one row's units [j0, j1); s is the row's workspace [i f o g c].

// Gate pre-activations plus the bias.
template <class T>
FASTRNN_WIDEST void add_bias(idx H, idx j0, idx j1, T* __restrict s, const T* __restrict b) {
    for (idx g = 0; g < 4; ++g) {
        for (idx j = j0; j < j1; ++j) s[g * H + j] += b[g * H + j];
    }
}

// c_t = f∘c_{t-1} + i∘g, into s's c slot and into h (which tanh then turns into tanh(c_t)).
template <class T>
FASTRNN_WIDEST void new_cell(idx H, idx j0, idx j1, T* __restrict s, const T* __restrict cprev, T* __restrict h) {
    for (idx j = j0; j < j1; ++j) {
        const T c = s[H + j] * cprev[j] + s[j] * s[3 * H + j];
        s[4 * H + j] = c;
        h[j] = c;
    }
}

// h_t = o∘tanh(c_t), h holding tanh(c_t).
template <class T>
FASTRNN_WIDEST void times_output_gate(idx H, idx j0, idx j1, const T* __restrict s, T* __restrict h) {
    for (idx j = j0; j < j1; ++j) h[j] *= s[2 * H + j];
}

// Backward of one step: from the gradient reaching h_t (dh_t, unless HAS_DH is false,
// plus dnext) and c_t (dc), the gate gradients da (4H wide), and dc becomes the gradient
// reaching c_{t-1}; tc holds tanh(c_t). dprev, the next product's output, is zeroed.
template <bool HAS_DH, class T>
FASTRNN_WIDEST void gate_grads(idx H, idx j0, idx j1, const T* __restrict s, const T* __restrict cprev,
                               const T* __restrict tc, const T* __restrict dh, const T* __restrict dnext,
                               T* __restrict dc, T* __restrict da, T* __restrict dprev) {
    for (idx j = j0; j < j1; ++j) {
        const T i = s[j], f = s[H + j], o = s[2 * H + j], g = s[3 * H + j];
        const T gh = HAS_DH ? dh[j] + dnext[j] : T(0) + dnext[j];
        const T gc = dc[j] + gh * o * (T(1) - tc[j] * tc[j]);
        da[j] = gc * g * i * (T(1) - i);
        da[H + j] = gc * cprev[j] * f * (T(1) - f);
        da[2 * H + j] = gh * tc[j] * o * (T(1) - o);
        da[3 * H + j] = gc * i * (T(1) - g * g);
        dc[j] = gc * f;
        dprev[j] = T(0);
    }
}

}  // namespace

template <class T>
void lstm_forward(const ForwardArgs<T>& a) {
    const Dims d = a.dims;
    const idx H = d.H, W = LSTM_WS * H;
    // One packed (H,H) block of Wh per gate: a thread multiplies the same units of each
    // gate, so it holds all four gates of its units and can finish them without waiting.
    const std::vector<PackedB<T>> Wh = pack_gates(a.Wh, H, H, 4, 0, 4, d.T);
    const std::vector<PackedB<T>> Wx = step_gates(a, 4);
    const Kernels<T>& simd = kernels<T>();

    run_team(sequence_threads(d, 4), [&] {
        // Gate slots of ws start as x·Wx; each step adds h_{t-1}·Wh, then activates in place.
        const Block mine = team_block(d.N, Wh[0]);
        project_inputs(mine, a, Wx, 4, a.ws, W);
        for (idx t = 0; t < d.T; ++t) {
            const MatRef<T> hp = prev_h(a.h0, a.h, d, t);
            T* const gates[4] = {a.ws + t * W, a.ws + t * W + H, a.ws + t * W + 2 * H, a.ws + t * W + 3 * H};
            gemm_block(mine, hp, Wh.data(), 4, true, gates, d.T * W);
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                const idx row = n * d.T + t;
                T* s = a.ws + row * W;
                T* ht = a.h + row * H;
                if (!a.lengths.active(n, t)) {
                    for (idx j = j0; j < j1; ++j) {
                        for (idx k = 0; k < LSTM_WS; ++k) s[k * H + j] = T(0);
                        ht[j] = T(0);
                    }
                    return;
                }
                const T* cprev = t == 0 ? a.c0 + n * H : s - W + 4 * H;
                const idx len = j1 - j0;
                add_bias(H, j0, j1, s, a.b);
                for (idx g = 0; g < 3; ++g) simd.sigmoid(s + g * H + j0, len);  // i, f, o
                simd.tanh(s + 3 * H + j0, len);                                  // g
                new_cell(H, j0, j1, s, cprev, ht);
                simd.tanh(ht + j0, len);
                times_output_gate(H, j0, j1, s, ht);
            });
            team_barrier();  // the next step's product needs every unit of h_t
            step_done(a, t);
            if (team_stopped()) return;  // Ctrl-C: the caller discards the results
        }
        gather_final(mine, d, a.lengths, a.h, H, a.h0, a.hT);
        gather_final(mine, d, a.lengths, a.ws + 4 * H, W, a.c0, a.cT);
    });
}

template <class T>
void lstm_backward(const BackwardArgs<T>& a) {
    const Dims d = a.dims;
    const idx H = d.H, W = LSTM_WS * H;
    const PackedB<T> WhT = pack_b(4 * H, H, row_major(a.Wh, 4 * H).t(), d.T);  // (4H,H)
    const Kernels<T>& simd = kernels<T>();
    const int threads = sequence_threads(d, 4);
    Buffer<T> dA(d.N * d.T * 4 * H), hprev(d.N * d.T * H), dh_a(d.N * H), dh_b(d.N * H);
    Buffer<T> x_scratch(a.lengths.len != nullptr ? d.N * d.T * d.D : 0);  // x with padding as 0
    Buffer<T> tanh_c(threads * H);  // per thread: tanh(c_t) of its units

    run_team(threads, [&] {
        T* tc = tanh_c.data() + team_rank() * H;
        // dnext: gradient reaching h_t from later steps; dprev: what this step sends to
        // h_{t-1}; dc: gradient reaching c_t, updated in place down to c_0. Each thread
        // reads and writes only its own block of them.
        T* dnext = dh_a.data();
        T* dprev = dh_b.data();
        T* dc = a.dc0;
        const Block mine = team_block(d.N, WhT);
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            for (idx j = j0; j < j1; ++j) {
                dnext[n * H + j] = a.dhT ? a.dhT[n * H + j] : T(0);
                dc[n * H + j] = a.dcT ? a.dcT[n * H + j] : T(0);
            }
        });

        for (idx t = d.T - 1; t >= 0; --t) {
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                const idx row = n * d.T + t;
                T* da = dA.data() + row * 4 * H;
                if (!a.lengths.active(n, t)) {  // dA is 0; pass_through_inactive keeps the state's gradient
                    for (idx j = j0; j < j1; ++j) {
                        for (idx k = 0; k < 4; ++k) da[k * H + j] = T(0);
                    }
                    return;
                }
                const T* s = a.ws + row * W;
                const T* cprev = t == 0 ? a.c0 + n * H : s - W + 4 * H;
                std::copy(s + 4 * H + j0, s + 4 * H + j1, tc + j0);
                simd.tanh(tc + j0, j1 - j0);
                // Offsets so that unit j of each is at [j], as for s and da.
                with_flag(a.dh != nullptr, [&](auto has_dh) {
                    gate_grads<decltype(has_dh)::value, T>(H, j0, j1, s, cprev, tc, has_dh ? a.dh + row * H : nullptr,
                                                           dnext + n * H, dc + n * H, da, dprev + n * H);
                });
            });
            team_barrier();  // the product below needs every unit of dA_t
            if (team_stopped()) return;
            gemm_block(mine, step_block<T>(dA.data(), d, 4 * H, t), WhT, true, dprev, H);
            pass_through_inactive(mine, a.lengths, t, H, dnext, dprev);
            std::swap(dnext, dprev);
        }
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            std::copy(dnext + n * H + j0, dnext + n * H + j1, a.dh0 + n * H + j0);
        });

        shifted_states(d, a.lengths, a.h0, a.h, hprev.data());
        gemm<T>(H, 4 * H, d.N * d.T, row_major<T>(hprev.data(), H).t(),
                row_major<T>(dA.data(), 4 * H), false, a.dWh, 4 * H);
        input_grads(d, a.lengths, 4 * H, a.x, a.ids, x_scratch.data(), a.Wx, dA.data(), a.dx, a.dWx, a.db);
    });
}

template void lstm_forward<float>(const ForwardArgs<float>&);
template void lstm_forward<double>(const ForwardArgs<double>&);
template void lstm_backward<float>(const BackwardArgs<float>&);
template void lstm_backward<double>(const BackwardArgs<double>&);

}  // namespace fastrnn
