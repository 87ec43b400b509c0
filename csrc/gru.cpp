// GRU, gates r, z, n, with input bias b and recurrent bias bh (each 3H):
//   ax = x_t·Wx + b,  ah = h_{t-1}·Wh + bh
//   r = σ(ax_r + ah_r),  z = σ(ax_z + ah_z),  h_t = (1-z)∘n + z∘h_{t-1}
//   reset after (default, as cuDNN/PyTorch):  n = tanh(ax_n + r∘ah_n)
//   reset before (Cho et al.):                n = tanh(ax_n + (r∘h_{t-1})·Wh_n + bh_n)
// The workspace row of (n, t) is [r z n e], e = ah_n (reset after) or r∘h_{t-1} (before).
#include <utility>

#include "sequence.hpp"

namespace fastrnn {

namespace {

// Zeroes an inactive row's workspace units and output.
template <class T>
void clear_units(T* s, T* ht, idx H, idx j0, idx j1) {
    for (idx j = j0; j < j1; ++j) {
        for (idx k = 0; k < GRU_WS; ++k) s[k * H + j] = T(0);
        ht[j] = T(0);
    }
}

// Backward of one step's gates on one row's units [j0, j1), s being the row's workspace
// [r z n e]: from the gradient reaching h_t (dh_t, unless HAS_DH is false, plus dnext),
// dAx's z and n slots (and r's with the reset after, where dAh differs from dAx only in
// its n slot; null before), and dprev = the gradient h_{t-1} gets directly.
template <bool HAS_DH, bool RESET_AFTER, class T>
FASTRNN_WIDEST void gate_grads(idx H, idx j0, idx j1, const T* __restrict s, const T* __restrict hprev,
                               const T* __restrict dh, const T* __restrict dnext, T* __restrict dx3,
                               T* __restrict dh3, T* __restrict dprev) {
    for (idx j = j0; j < j1; ++j) {
        const T r = s[j], z = s[H + j], nn = s[2 * H + j];
        const T gh = HAS_DH ? dh[j] + dnext[j] : T(0) + dnext[j];
        const T dan = gh * (T(1) - z) * (T(1) - nn * nn);
        const T daz = gh * (hprev[j] - nn) * z * (T(1) - z);
        dx3[H + j] = daz;
        dx3[2 * H + j] = dan;
        dprev[j] = gh * z;
        if (RESET_AFTER) {
            const T dar = dan * s[3 * H + j] * r * (T(1) - r);
            dx3[j] = dar;
            dh3[j] = dar;
            dh3[H + j] = daz;
            dh3[2 * H + j] = dan * r;
        }
    }
}

}  // namespace

template <class T>
void gru_forward(const ForwardArgs<T>& a, bool reset_after) {
    const Dims d = a.dims;
    const idx H = d.H, W = GRU_WS * H;
    const T* b = a.b;
    const T* bh = a.bh;
    // One packed (H,H) block of Wh per gate, so that a thread holds every gate of its units.
    // Reset before, n waits for all of r∘h_{t-1}: a second product, after a barrier.
    const std::vector<PackedB<T>> Wh = pack_gates(a.Wh, H, H, 3, 0, 3, d.T);
    const std::vector<PackedB<T>> Wx = step_gates(a, 3);
    const Kernels<T>& simd = kernels<T>();
    Buffer<T> ah(d.N * 3 * H);  // this step's recurrent products h_{t-1}·Wh_g (N,3H)

    run_team(sequence_threads(d, 3), [&] {
        const Block mine = team_block(d.N, Wh[0]);
        project_inputs(mine, a, Wx, 3, a.ws, W);
        for (idx t = 0; t < d.T; ++t) {
            const MatRef<T> hp = prev_h(a.h0, a.h, d, t);
            T* const gates[3] = {ah.data(), ah.data() + H, ah.data() + 2 * H};
            gemm_block(mine, hp, Wh.data(), reset_after ? 3 : 2, false, gates, 3 * H);
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                const idx row = n * d.T + t;
                T* s = a.ws + row * W;
                T* ht = a.h + row * H;
                if (!a.lengths.active(n, t)) {
                    clear_units(s, ht, H, j0, j1);
                    return;
                }
                const T* hr = ah.data() + n * 3 * H;
                const T* hprev = hp.p + n * hp.rs;
                const idx len = j1 - j0;
                for (idx g = 0; g < 2; ++g) {  // r, z
                    for (idx j = g * H + j0; j < g * H + j1; ++j) s[j] += b[j] + hr[j] + bh[j];
                    simd.sigmoid(s + g * H + j0, len);
                }
                if (!reset_after) {
                    for (idx j = j0; j < j1; ++j) s[3 * H + j] = s[j] * hprev[j];  // r∘h_{t-1}
                    return;
                }
                for (idx j = j0; j < j1; ++j) {
                    const T hn = hr[2 * H + j] + bh[2 * H + j];
                    s[3 * H + j] = hn;
                    s[2 * H + j] += b[2 * H + j] + s[j] * hn;
                }
                simd.tanh(s + 2 * H + j0, len);
                for (idx j = j0; j < j1; ++j) {
                    const T z = s[H + j];
                    ht[j] = (T(1) - z) * s[2 * H + j] + z * hprev[j];
                }
            });
            team_barrier();
            if (reset_after) {
                step_done(a, t);
                if (team_stopped()) return;  // Ctrl-C: the caller discards the results
                continue;
            }
            gemm_block(mine, step_block<T>(a.ws + 3 * H, d, W, t), Wh[2], false, ah.data() + 2 * H, 3 * H);
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                if (!a.lengths.active(n, t)) {
                    return;
                }
                const idx row = n * d.T + t;
                T* s = a.ws + row * W;
                const T* hr = ah.data() + n * 3 * H;
                const T* hprev = hp.p + n * hp.rs;
                for (idx j = 2 * H + j0; j < 2 * H + j1; ++j) s[j] += b[j] + hr[j] + bh[j];
                simd.tanh(s + 2 * H + j0, j1 - j0);
                for (idx j = j0; j < j1; ++j) {
                    const T z = s[H + j];
                    a.h[row * H + j] = (T(1) - z) * s[2 * H + j] + z * hprev[j];
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
void gru_backward(const BackwardArgs<T>& a, bool reset_after) {
    const Dims d = a.dims;
    const idx H = d.H, W = GRU_WS * H;
    // dh_{t-1} gets dAh·Whᵀ: all of Wh (reset after), or Wh_rz and Wh_n in two parts (before).
    const MatRef<T> Wh = row_major(a.Wh, 3 * H);
    const PackedB<T> WhT = pack_b(reset_after ? 3 * H : 2 * H, H, Wh.t(), d.T);
    const PackedB<T> Wh_nT = reset_after ? PackedB<T>() : pack_b(H, H, Wh.at(0, 2 * H).t(), d.T);
    // dAx is the gradient of ax; dAh, of ah. They differ only in the n slot, and only when
    // the reset comes after (dah_n = dax_n∘r); before, they are the same array.
    Buffer<T> dAx(d.N * d.T * 3 * H), dAh_own(reset_after ? d.N * d.T * 3 * H : 0);
    T* const dAh = reset_after ? dAh_own.data() : dAx.data();
    Buffer<T> hprev(d.N * d.T * H), dh_a(d.N * H), dh_b(d.N * H), drh(reset_after ? 0 : d.N * H);
    Buffer<T> x_scratch(a.lengths.len != nullptr ? d.N * d.T * d.D : 0);  // x with padding as 0

    run_team(sequence_threads(d, 3), [&] {
        // As in the LSTM: each thread reads and writes only its own block of dnext/dprev.
        T* dnext = dh_a.data();
        T* dprev = dh_b.data();
        const Block mine = team_block(d.N, WhT);
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            for (idx j = j0; j < j1; ++j) {
                dnext[n * H + j] = a.dhT ? a.dhT[n * H + j] : T(0);
            }
        });

        for (idx t = d.T - 1; t >= 0; --t) {
            const MatRef<T> hp = prev_h(a.h0, a.h, d, t);
            for_block_units(mine, [&](idx n, idx j0, idx j1) {
                const idx row = n * d.T + t;
                T* dx3 = dAx.data() + row * 3 * H;
                T* dh3 = dAh + row * 3 * H;
                if (!a.lengths.active(n, t)) {  // dA is 0; pass_through_inactive keeps the state's gradient
                    for (idx j = j0; j < j1; ++j) {
                        for (idx k = 0; k < 3; ++k) dx3[k * H + j] = dh3[k * H + j] = T(0);
                    }
                    return;
                }
                const T* s = a.ws + row * W;
                const T* hprev_n = hp.p + n * hp.rs;
                with_flag(a.dh != nullptr, [&](auto has_dh) {
                    with_flag(reset_after, [&](auto after) {
                        gate_grads<decltype(has_dh)::value, decltype(after)::value, T>(
                            H, j0, j1, s, hprev_n, has_dh ? a.dh + row * H : nullptr, dnext + n * H, dx3,
                            after ? dh3 : nullptr, dprev + n * H);
                    });
                });
            });
            team_barrier();  // the products below need every unit of this step's gradients
            if (team_stopped()) return;
            if (!reset_after) {
                // d(r∘h_{t-1}) = dA_n·Wh_nᵀ, then the r gate and h_{t-1}'s share of it.
                gemm_block(mine, step_block<T>(dAx.data() + 2 * H, d, 3 * H, t), Wh_nT, false, drh.data(), H);
                for_block_units(mine, [&](idx n, idx j0, idx j1) {
                    if (!a.lengths.active(n, t)) {
                        return;
                    }
                    const idx row = n * d.T + t;
                    T* dx3 = dAx.data() + row * 3 * H;
                    const T* s = a.ws + row * W;
                    const T* hprev_n = hp.p + n * hp.rs;
                    const T* g = drh.data() + n * H;
                    for (idx j = j0; j < j1; ++j) {
                        const T r = s[j];
                        dx3[j] = g[j] * hprev_n[j] * r * (T(1) - r);
                        dprev[n * H + j] += g[j] * r;
                    }
                });
                team_barrier();
            }
            gemm_block(mine, step_block<T>(dAh, d, 3 * H, t), WhT, true, dprev, H);
            pass_through_inactive(mine, a.lengths, t, H, dnext, dprev);
            std::swap(dnext, dprev);
        }
        for_block_units(mine, [&](idx n, idx j0, idx j1) {
            std::copy(dnext + n * H + j0, dnext + n * H + j1, a.dh0 + n * H + j0);
        });

        shifted_states(d, a.lengths, a.h0, a.h, hprev.data());
        const MatRef<T> Hprev_t = row_major<T>(hprev.data(), H).t();
        if (reset_after) {
            gemm<T>(H, 3 * H, d.N * d.T, Hprev_t, row_major<T>(dAh, 3 * H), false, a.dWh, 3 * H);
        } else {
            gemm<T>(H, 2 * H, d.N * d.T, Hprev_t, row_major<T>(dAh, 3 * H), false, a.dWh, 3 * H);
            const MatRef<T> RH_t = row_major(a.ws + 3 * H, W).t();  // (r∘h_{t-1})ᵀ, (H, N*T)
            gemm<T>(H, H, d.N * d.T, RH_t, row_major<T>(dAh + 2 * H, 3 * H), false, a.dWh + 2 * H, 3 * H);
        }
        column_sums(d.N * d.T, 3 * H, dAh, 3 * H, a.dbh);
        input_grads(d, a.lengths, 3 * H, a.x, a.ids, x_scratch.data(), a.Wx, dAx.data(), a.dx, a.dWx, a.db);
    });
}

template void gru_forward<float>(const ForwardArgs<float>&, bool);
template void gru_forward<double>(const ForwardArgs<double>&, bool);
template void gru_backward<float>(const BackwardArgs<float>&, bool);
template void gru_backward<double>(const BackwardArgs<double>&, bool);

}  // namespace fastrnn
