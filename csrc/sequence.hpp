// Pieces every cell's sequence kernel shares: the layout of per-step blocks, the split of
// elementwise work over the team, final-state gathering and whole-sequence gradients.
// All functions here are called by every thread of a team (see gemm.hpp).
#pragma once

#include <vector>

#include "cells.hpp"
#include "gemm.hpp"

namespace fastrnn {

// Threads for a sequence kernel: its barriers come once per step, after one step's
// product h·Wh (G gates).
inline int sequence_threads(const Dims& d, idx gates) {
    return threads_for(2.0 * double(d.N) * double(d.H) * double(gates * d.H));
}

// Called by every member after the barrier that ends step t of a forward pass.
template <class T>
void step_done(const ForwardArgs<T>& a, idx t) {
    if (a.progress != nullptr && team_rank() == 0) {
        a.progress->publish(int(t + 1));
    }
}

// In a (N,T,W) array, the N x W block of step t has row stride T*W.
template <class T>
MatRef<T> step_block(const T* seq, const Dims& d, idx W, idx t) {
    return {seq + t * W, d.T * W, 1};
}

// h_{t-1} as an N x H matrix: the initial state at t == 0.
template <class T>
MatRef<T> prev_h(const T* h0, const T* h, const Dims& d, idx t) {
    return t == 0 ? MatRef<T>{h0, d.H, 1} : step_block(h, d, d.H, t - 1);
}

// Columns [j0, j1) of row i = n*T + t of x·Wx when x holds token ids: that part of row
// ids[i] of Wx (GH wide), the product with a one-hot x exactly; 0 past the sequence's
// length, where the id may be anything.
template <class T>
void copy_id_row(const Dims& d, const Lengths& len, const std::int64_t* ids, const T* Wx, idx GH, idx i, idx j0,
                 idx j1, T* out_row) {
    if (len.active(i / d.T, i % d.T)) {
        const T* row = Wx + ids[i] * GH;
        std::copy(row + j0, row + j1, out_row + j0);
    } else {
        std::fill(out_row + j0, out_row + j1, T(0));
    }
}

// out (N*T rows, row stride ld) <- x·Wx for every (n, t), Wx (D, GH): one product, or
// with token ids the rows copy_id_row copies.
template <class T>
void input_projection(const Dims& d, const Lengths& len, const T* x, const std::int64_t* ids, const T* Wx, idx GH,
                      T* out, idx ld) {
    if (ids == nullptr) {
        gemm<T>(d.N * d.T, GH, d.D, row_major(x, d.D), row_major(Wx, GH), false, out, ld);
        return;
    }
    const Range r = my_share(d.N * d.T);
    for (idx i = r.begin; i < r.end; ++i) copy_id_row(d, len, ids, Wx, GH, i, 0, GH, out + i * ld);
    team_barrier();
}

// Calls f(n, j0, j1) for the rows and hidden units of a product block (see gemm.hpp). A
// step that computes its block of h_{t-1}·Wh for every gate can then finish those units
// at once: only the next step's product needs all of h_t, so one barrier per step.
template <class F>
void for_block_units(const Block& b, F&& f) {
    if (b.j0 < b.j1) {
        for (idx n = b.i0; n < b.i1; ++n) f(n, b.j0, b.j1);
    }
}

// The G gate blocks of W (K, G*H), each (K, H), packed for `uses` products.
template <class T>
std::vector<PackedB<T>> pack_gates(const T* W, idx K, idx H, idx G, idx first, idx count, idx uses) {
    std::vector<PackedB<T>> out;
    for (idx g = first; g < first + count; ++g) {
        out.push_back(pack_b(K, H, MatRef<T>{W + g * H, G * H, 1}, uses));
    }
    return out;
}

// The input projection x·Wx into out (N*T rows, G gate blocks of H, row stride ld). A whole
// sequence projects as one product (input_projection). A single step (T = 1: the step
// functions, sampling) projects by the calling member's block of units instead, gate g's
// columns [mine.j0, mine.j1) of rows [mine.i0, mine.i1): the member that computes the
// same units of h_{t-1}·Wh then adds to them with no barrier in between, where one product
// would wait for the whole of it. Wxg is step_gates(a, G); no closing barrier for a step.
template <class T>
std::vector<PackedB<T>> step_gates(const ForwardArgs<T>& a, idx G) {
    const Dims& d = a.dims;
    if (d.T != 1 || a.ids != nullptr) return {};
    return pack_gates(a.Wx, d.D, d.H, G, 0, G, 1);  // gate g's (D,H) columns, read in place
}

template <class T>
void project_inputs(const Block& mine, const ForwardArgs<T>& a, const std::vector<PackedB<T>>& Wxg, idx G, T* out,
                    idx ld) {
    const Dims& d = a.dims;
    const idx H = d.H;
    if (d.T != 1) {
        input_projection(d, a.lengths, a.x, a.ids, a.Wx, G * H, out, ld);
    } else if (a.ids == nullptr) {
        T* gates[4];  // G <= 4
        for (idx g = 0; g < G; ++g) gates[g] = out + g * H;
        gemm_block(mine, row_major(a.x, d.D), Wxg.data(), G, false, gates, ld);
    } else {  // the member's columns of each gate of the rows of Wx the ids pick
        for (idx n = mine.i0; n < mine.i1 && mine.j0 < mine.j1; ++n) {
            for (idx g = 0; g < G; ++g) {
                copy_id_row(d, a.lengths, a.ids, a.Wx, G * H, n, g * H + mine.j0, g * H + mine.j1, out + n * ld);
            }
        }
    }
}

// out[n] = row n of seq (element (n,t,j) at seq[(n*T + t)*ld + j]) at its last step, or
// init[n] when it has none (length 0): by the member's block of units, the ones it computed
// at every step. So no barrier comes before or after it, at the end of a forward pass.
template <class T>
void gather_final(const Block& mine, const Dims& d, const Lengths& len, const T* seq, idx ld, const T* init,
                  T* out) {
    for (idx n = mine.i0; n < mine.i1 && mine.j0 < mine.j1; ++n) {
        const idx t = len.last_step(n, d.T);
        const T* src = t < 0 ? init + n * d.H : seq + (n * d.T + t) * ld;
        std::copy(src + mine.j0, src + mine.j1, out + n * d.H + mine.j0);
    }
}

// out[j] = sum over rows i (in order) of a[i*ld + j], for j in [j0, j1).
template <class T>
FASTRNN_WIDEST void sum_rows(idx rows, idx j0, idx j1, const T* __restrict a, idx ld, T* __restrict out) {
    for (idx j = j0; j < j1; ++j) out[j] = T(0);
    for (idx i = 0; i < rows; ++i) {
        const T* row = a + i * ld;
        for (idx j = j0; j < j1; ++j) out[j] += row[j];
    }
}

// The same over the team, each thread summing its share of the columns.
template <class T>
void column_sums(idx rows, idx cols, const T* a, idx ld, T* out) {
    const Range r = my_share(cols);
    sum_rows(rows, r.begin, r.end, a, ld, out);
    team_barrier();
}

// Hprev (N,T,H): h_{t-1} for every step, h0 at t = 0. Backward's dWh = Hprevᵀ·dA.
// Steps past a row's length are 0 (their dA is 0, and 0 times a NaN would not be).
template <class T>
void shifted_states(const Dims& d, const Lengths& len, const T* h0, const T* h, T* hprev) {
    const Range r = my_share(d.N * d.T);
    for (idx i = r.begin; i < r.end; ++i) {
        const idx n = i / d.T, t = i % d.T;
        if (!len.active(n, t)) {
            std::fill(hprev + i * d.H, hprev + (i + 1) * d.H, T(0));
            continue;
        }
        const T* src = t == 0 ? h0 + n * d.H : h + (i - 1) * d.H;
        std::copy(src, src + d.H, hprev + i * d.H);
    }
    team_barrier();
}

// After a backward step's product: rows that were past their length at step t pass the
// gradient through unchanged (the product added 0·Whᵀ, which is NaN if Wh holds one).
template <class T>
void pass_through_inactive(const Block& b, const Lengths& len, idx t, idx H, const T* dnext, T* dprev) {
    if (len.len == nullptr || b.j0 >= b.j1) {
        return;
    }
    for (idx n = b.i0; n < b.i1; ++n) {
        if (!len.active(n, t)) {
            std::copy(dnext + n * H + b.j0, dnext + n * H + b.j1, dprev + n * H + b.j0);
        }
    }
}

// The input side of backward, as three whole-sequence products over dA (N*T, GH):
//   dWx = Xᵀ·dA,  db = Σ_rows dA,  dx = dA·Wxᵀ
// With lengths, padded steps take no part: x's padding is read as 0 (through x_scratch,
// N*T*D values) and their dx is 0, whatever the padding or the weights hold.
// With token ids, dWx is dA's rows added into the rows of their ids, in row order (each
// thread owns a slice of the columns), and there is no dx.
template <class T>
void input_grads(const Dims& d, const Lengths& len, idx GH, const T* x, const std::int64_t* ids, T* x_scratch,
                 const T* Wx, const T* dA, T* dx, T* dWx, T* db) {
    const idx rows = d.N * d.T;
    if (ids != nullptr) {
        const Range cols = my_share(GH);  // add_rows_at's share: each thread zeroes its own
        for (idx k = 0; k < d.D; ++k) std::fill(dWx + k * GH + cols.begin, dWx + k * GH + cols.end, T(0));
        // Padded steps are skipped: their ids may be anything.
        add_rows_at(rows, GH, ids, dA, dWx, [&](idx i) { return len.active(i / d.T, i % d.T); });
        column_sums(rows, GH, dA, GH, db);  // ends with a barrier
        return;
    }
    if (len.len != nullptr) {
        const Range r = my_share(rows);
        for (idx i = r.begin; i < r.end; ++i) {
            const bool live = len.active(i / d.T, i % d.T);
            T* out = x_scratch + i * d.D;
            live ? (void)std::copy(x + i * d.D, x + (i + 1) * d.D, out) : std::fill(out, out + d.D, T(0));
        }
        team_barrier();
        x = x_scratch;
    }
    gemm<T>(d.D, GH, rows, row_major(x, d.D).t(), row_major(dA, GH), false, dWx, GH);
    column_sums(rows, GH, dA, GH, db);
    gemm<T>(rows, d.D, GH, row_major(dA, GH), row_major(Wx, GH).t(), false, dx, d.D);
    if (len.len != nullptr) {
        const Range r = my_share(rows);
        for (idx i = r.begin; i < r.end; ++i) {
            if (!len.active(i / d.T, i % d.T)) std::fill(dx + i * d.D, dx + (i + 1) * d.D, T(0));
        }
        team_barrier();
    }
}

}  // namespace fastrnn
