// A character-level language model's loss and gradients in one call:
//   ids (N,T) -> [embedding rows of E (V,D0)] -> L stacked cells, inverted-dropout masks
//   between them -> affine Wy (H,V), by (V,) -> softmax cross-entropy against targets (N,T).
// It chains the cells' own kernels, the kernels' matrix multiply and the temporal kernels
// in the order the layer-by-layer path takes, so the results are that path's; what it
// saves is the interpreter between the calls, which is most of a small model's step.
// Argument checks happen in the bindings; this trusts its inputs.
#pragma once

#include <vector>

#include "cells.hpp"

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
};

// Returns the sum of the N*T cross-entropies (not scaled) and writes every gradient.
template <class T>
double language_model_loss(const LanguageModel<T>& m);

// Whether language_model_loss, with the current thread settings, runs the head (scores,
// loss, their gradients) on a second thread beside the cells, step by step as the top
// layer finishes them: when the recurrence is too small to share and a second core is
// there. The result is the same bits either way.
bool head_runs_beside_cells(Cell cell, idx N, idx steps, idx H);

}  // namespace fastrnn
