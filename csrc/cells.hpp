// The sequence kernels of the three cells. Arrays are C-contiguous, batch-major:
//   x (N,T,D)  h (N,T,H)  h0, c0, hT, cT (N,H)  Wx (D,G*H)  Wh (H,G*H)  b, bh (G*H,)
// with G = 1 (RNN), 4 (LSTM, gates i,f,o,g) or 3 (GRU, gates r,z,n).
// Instead of x, the input may be token ids (N,T): x is then one-hot and D the vocabulary,
// so x·Wx is a row of Wx and dWx a scatter of dA's rows; no dx is formed.
// Argument checks happen in the bindings; these functions trust their inputs.
#pragma once

#include "common.hpp"

namespace fastrnn {

struct Dims {
    idx N, T, D, H;
};

enum class Activation { tanh, relu };

enum class Cell { rnn, lstm, gru };

// A cell chosen at run time, with its one option: the RNN's activation, or whether the
// GRU resets after the recurrent product.
struct CellKind {
    Cell cell;
    Activation act = Activation::tanh;
    bool reset_after = true;
};

// What the forward pass of each cell keeps for backward, per (n, t), in units of H.
//   RNN:  nothing beyond h
//   LSTM: i, f, o, g (activated), c
//   GRU:  r, z, n (activated), and h·Wh_n + bh_n (reset after) or r∘h (reset before)
constexpr idx RNN_WS = 0, LSTM_WS = 5, GRU_WS = 4;

// G: the gate blocks of Wx, Wh and b.
inline idx gate_count(Cell cell) { return cell == Cell::lstm ? 4 : cell == Cell::gru ? 3 : 1; }

inline idx workspace_width(Cell cell) {
    return cell == Cell::lstm ? LSTM_WS : cell == Cell::gru ? GRU_WS : RNN_WS;
}

template <class T>
struct ForwardArgs {
    Dims dims;
    Lengths lengths;
    const T* x;
    const std::int64_t* ids;  // (N,T) in place of x, or nullptr
    const T* h0;
    const T* c0;  // LSTM only
    const T* Wx;
    const T* Wh;
    const T* b;
    const T* bh;  // GRU only
    T* h;         // out (N,T,H); exactly 0 where t >= length
    T* ws;        // out (N,T,WS*H)
    T* hT;        // out (N,H)
    T* cT;        // out (N,H), LSTM only
    Progress* progress = nullptr;  // if set, raised to t + 1 once all of h_t is written
};

template <class T>
struct BackwardArgs {
    Dims dims;
    Lengths lengths;
    // What forward saw and produced.
    const T* x;
    const std::int64_t* ids;  // in place of x, or nullptr
    const T* h0;
    const T* c0;
    const T* Wx;
    const T* Wh;
    const T* h;
    const T* ws;
    // Upstream gradients; each may be null, meaning zeros.
    const T* dh;   // (N,T,H)
    const T* dhT;  // (N,H)
    const T* dcT;  // (N,H), LSTM only
    // Gradients out, all overwritten.
    T* dx;  // nullptr with ids
    T* dh0;
    T* dc0;  // LSTM only
    T* dWx;
    T* dWh;
    T* db;
    T* dbh;  // GRU only
};

template <class T>
void rnn_forward(const ForwardArgs<T>& a, Activation act);
template <class T>
void rnn_backward(const BackwardArgs<T>& a, Activation act);

template <class T>
void lstm_forward(const ForwardArgs<T>& a);
template <class T>
void lstm_backward(const BackwardArgs<T>& a);

template <class T>
void gru_forward(const ForwardArgs<T>& a, bool reset_after);
template <class T>
void gru_backward(const BackwardArgs<T>& a, bool reset_after);

// The kernel of the cell `k` names.
template <class T>
void cell_forward(const CellKind& k, const ForwardArgs<T>& a) {
    switch (k.cell) {
        case Cell::rnn: rnn_forward(a, k.act); break;
        case Cell::lstm: lstm_forward(a); break;
        case Cell::gru: gru_forward(a, k.reset_after); break;
    }
}
template <class T>
void cell_backward(const CellKind& k, const BackwardArgs<T>& a) {
    switch (k.cell) {
        case Cell::rnn: rnn_backward(a, k.act); break;
        case Cell::lstm: lstm_backward(a); break;
        case Cell::gru: gru_backward(a, k.reset_after); break;
    }
}

}  // namespace fastrnn
