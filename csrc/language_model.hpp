// A character-level language model's loss and gradients in one call:
//   ids (N,T) -> [embedding rows of E (V,D0)] -> L stacked cells, inverted-dropout masks
//   between them -> affine Wy (H,V), by (V,) -> softmax cross-entropy against targets (N,T).
// It chains the cells' own kernels, the kernels' matrix multiply and the temporal kernels
// in the order the layer-by-layer path takes, so the results are that path's; what it
// saves is the interpreter between the calls, which is most of a small model's step.
// One exception: with an embedding and N*T >= 2V, layer 0 reads rows of the table E·Wx
// (V,G*H) as one-hot inputs read Wx's (the same forward bits), and backward sums dA's rows
// by token into S (V,G*H) before dWx = Eᵀ·S and dE = S·Wxᵀ: those two gradients are
// summed in another order than the layer path's (equal to rounding), and the three
// input-side products run on V rows instead of N*T.
// Argument checks happen in the bindings; this trusts its inputs.
#pragma once

#include <vector>

#include "cells.hpp"
#include "training.hpp"

namespace fastrnn {

template <class T>
struct LanguageModelLayer {
    const T *Wx, *Wh, *b, *bh;  // (D_l,G*H), (H,G*H), (G*H,), (G*H,) (GRU only)
    const T *h0, *c0;           // (N,H) initial state (c0: LSTM only)
    const T* mask;              // (N,T,H) dropout mask on this layer's output, or nullptr
    T *dWx, *dWh, *db, *dbh;    // gradients, overwritten
    T *hT, *cT;                 // (N,H) final state out
};

template <class T>
struct LanguageModel {
    CellKind kind;
    idx N, steps, V, H, E;             // steps = T; E = 0: one-hot inputs (layer 0 reads rows of Wx)
    const std::int64_t* ids;           // (N,T) in [0, V)
    const std::int64_t* targets;       // (N,T) in [0, V)
    const T* embed;                    // (V,E) or nullptr
    T* dembed;                         // (V,E) gradient, overwritten
    std::vector<LanguageModelLayer<T>> layers;
    const T *Wy, *by;                  // (H,V), (V,)
    T *dWy, *dby;                      // gradients, overwritten
    T row_scale;                       // dscores = (softmax - onehot) * row_scale
    // Optionally, an optimizer's step once the gradients are formed: `update_arrays` holds
    // the parameters in the order [E] + per layer [Wx, Wh, b(, bh)] + [Wy, by], their
    // gradients (the arrays above) and the rule's state.
    const UpdateRule* update = nullptr;
    ParamList<T> update_arrays;
};

// Returns the sum of the N*T cross-entropies (not scaled) and writes every gradient; with
// `update`, then updates the parameters (the bits of optimizer_update after the call).
template <class T>
double language_model_loss(const LanguageModel<T>& m);

// K consecutive chunks of the same N streams, trained one after the other: chunk k is
// language_model_loss on ids and targets (K,N,T) at k, with masks[k] (L-1 per-layer masks,
// or none) and rules[k] (or no update when rules is empty), starting from the final state
// of chunk k-1 (chunk 0 from the layers' h0, c0) as truncated BPTT carries it. losses (K,)
// receive the chunks' sums; the layers' hT, cT the last chunk's final state.
template <class T>
void language_model_chunks(const LanguageModel<T>& m, idx K, const std::vector<std::vector<const T*>>& masks,
                           const std::vector<UpdateRule>& rules, double* losses);

// Whether language_model_loss, with the current thread settings, may run the head (scores,
// loss, their gradients) on a second thread beside the cells, step by step as the top
// layer finishes them: when the recurrence is too small to share and a second core is
// there. The result is the same bits either way.
bool head_runs_beside_cells(Cell cell, idx N, idx steps, idx H);

// Where the head may run beside the cells: `timed` (the default) times that way against
// the whole call on the calling thread alone now and then and takes the faster (see
// language_model.cpp); `always` runs it beside; `never` runs the stages one after
// another, each kernel with its own team, as where it may not.
enum class HeadBeside { timed, always, never };
void set_head_beside(HeadBeside mode);
HeadBeside get_head_beside();

// The calling thread's `timed` choices for the last shape it ran: calls run each way and
// the median of each way's last few times, in seconds (0 until timed).
struct HeadBesideStats {
    long beside, alone;
    double beside_seconds, alone_seconds;
};
HeadBesideStats head_beside_stats();

}  // namespace fastrnn
