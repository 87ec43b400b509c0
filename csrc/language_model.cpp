// The language model's forward, loss and backward (language_model.hpp), as one chain of
// the existing kernels; each opens its own thread team.
#include "language_model.hpp"

#include <algorithm>
#include <utility>

#include "gemm.hpp"
#include "sequence.hpp"
#include "training.hpp"

namespace fastrnn {

template <class T>
double language_model_loss(const LanguageModel<T>& m) {
    const idx L = idx(m.layers.size()), rows = m.N * m.steps, H = m.H, V = m.V;
    const bool one_hot = m.embed == nullptr;
    const idx D0 = one_hot ? V : m.E;

    // Forward. Layer l reads x[l] (N,T,D_l) (nullptr: the ids) and writes h[l] (N,T,H);
    // x[l+1] is h[l], or h[l] times its dropout mask.
    std::vector<const T*> x(std::size_t(L + 1), nullptr);
    std::vector<Buffer<T>> h, ws, masked;
    h.reserve(std::size_t(L)), ws.reserve(std::size_t(L)), masked.reserve(std::size_t(L));
    Buffer<T> embedded(one_hot ? 0 : rows * m.E);  // (N,T,E)
    if (!one_hot) {
        for (idx r = 0; r < rows; ++r) {
            std::copy(m.embed + m.ids[r] * m.E, m.embed + (m.ids[r] + 1) * m.E, embedded.data() + r * m.E);
        }
        x[0] = embedded.data();
    }
    for (idx l = 0; l < L; ++l) {
        const LanguageModelLayer<T>& p = m.layers[std::size_t(l)];
        h.emplace_back(rows * H);
        ws.emplace_back(rows * workspace_width(m.kind.cell) * H);
        ForwardArgs<T> f{};
        f.dims = {m.N, m.steps, l == 0 ? D0 : H, H};
        f.x = x[std::size_t(l)];
        f.ids = (l == 0 && one_hot) ? m.ids : nullptr;
        f.h0 = p.h0, f.c0 = p.c0, f.Wx = p.Wx, f.Wh = p.Wh, f.b = p.b, f.bh = p.bh;
        f.h = h.back().data(), f.ws = ws.back().data(), f.hT = p.hT, f.cT = p.cT;
        cell_forward(m.kind, f);
        if (p.mask != nullptr) {
            masked.emplace_back(rows * H);
            const T* in = h.back().data();
            T* out = masked.back().data();
            for (idx i = 0; i < rows * H; ++i) out[i] = in[i] * p.mask[i];
            x[std::size_t(l + 1)] = out;
        } else {
            x[std::size_t(l + 1)] = h.back().data();
        }
    }

    // Head: scores (N*T,V) = top·Wy + by, then the loss; dscores replace the scores.
    const T* top = x[std::size_t(L)];
    Buffer<T> scores(rows * V);
    matmul<T>(rows, V, H, row_major(top, H), row_major(m.Wy, V), scores.data(), V);
    for (idx r = 0; r < rows; ++r) {
        T* s = scores.data() + r * V;
        for (idx j = 0; j < V; ++j) s[j] += m.by[j];
    }
    const double loss = softmax_cross_entropy<T>(rows, V, scores.data(), m.targets, nullptr, m.row_scale,
                                                 scores.data());
    const T* dscores = scores.data();
    matmul<T>(H, V, rows, row_major(top, H).t(), row_major(dscores, V), m.dWy, V);
    sum_rows(rows, 0, V, dscores, V, m.dby);

    // Backward, top layer first: dh is the gradient reaching x[l+1], turned into the one
    // reaching h[l] by the mask; each layer's dx is the next one's dh.
    Buffer<T> dh(rows * H), dx(rows * (one_hot ? H : std::max(H, m.E))), dh0(m.N * H), dc0(m.N * H);
    matmul<T>(rows, H, V, row_major(dscores, V), row_major(m.Wy, V).t(), dh.data(), H);
    for (idx l = L - 1; l >= 0; --l) {
        const LanguageModelLayer<T>& p = m.layers[std::size_t(l)];
        if (p.mask != nullptr) {
            T* g = dh.data();
            for (idx i = 0; i < rows * H; ++i) g[i] = g[i] * p.mask[i];
        }
        const bool wants_dx = l > 0 || !one_hot;
        BackwardArgs<T> b{};
        b.dims = {m.N, m.steps, l == 0 ? D0 : H, H};
        b.x = x[std::size_t(l)];
        b.ids = (l == 0 && one_hot) ? m.ids : nullptr;
        b.h0 = p.h0, b.c0 = p.c0, b.Wx = p.Wx, b.Wh = p.Wh;
        b.h = h[std::size_t(l)].data(), b.ws = ws[std::size_t(l)].data();
        b.dh = dh.data();
        b.dx = wants_dx ? dx.data() : nullptr;
        b.dh0 = dh0.data(), b.dc0 = m.kind.cell == Cell::lstm ? dc0.data() : nullptr;
        b.dWx = p.dWx, b.dWh = p.dWh, b.db = p.db, b.dbh = p.dbh;
        cell_backward(m.kind, b);
        std::swap(dh, dx);
    }
    if (!one_hot) {  // dh now holds the gradient reaching the embedded rows (N,T,E)
        std::fill(m.dembed, m.dembed + V * m.E, T(0));
        embedding_backward<T>(rows, m.E, m.ids, dh.data(), m.dembed);
    }
    return loss;
}

template double language_model_loss<float>(const LanguageModel<float>&);
template double language_model_loss<double>(const LanguageModel<double>&);

}  // namespace fastrnn
