// The temporal layers' kernels around the cells: softmax cross-entropy over a vocabulary
// and the embedding's gradient. Rows (softmax) or columns (embedding) are shared out, so
// every output element is computed by one thread in a fixed order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "isa.hpp"
#include "training.hpp"

namespace fastrnn {

namespace {

// The max and the sum of a row run in LANES interleaved partial results, combined in a
// fixed order at the end: the loops vectorise, and every build adds in the same order.
constexpr idx LANES = 8;

template <class T>
FASTRNN_WIDEST T row_max(const T* s, idx V) {
    T lane[LANES];
    for (idx l = 0; l < LANES; ++l) lane[l] = s[0];
    idx j = 0;
    for (; j + LANES <= V; j += LANES) {
        for (idx l = 0; l < LANES; ++l) lane[l] = s[j + l] > lane[l] ? s[j + l] : lane[l];
    }
    for (; j < V; ++j) lane[0] = s[j] > lane[0] ? s[j] : lane[0];
    T top = lane[0];
    for (idx l = 1; l < LANES; ++l) top = lane[l] > top ? lane[l] : top;
    return top;
}

template <class T>
FASTRNN_WIDEST void subtract(T* d, idx V, T x) {
    for (idx j = 0; j < V; ++j) d[j] -= x;
}

template <class T>
FASTRNN_WIDEST double row_sum(const T* d, idx V) {
    double lane[LANES] = {};
    idx j = 0;
    for (; j + LANES <= V; j += LANES) {
        for (idx l = 0; l < LANES; ++l) lane[l] += double(d[j + l]);
    }
    for (; j < V; ++j) lane[0] += double(d[j]);
    double z = lane[0];
    for (idx l = 1; l < LANES; ++l) z += lane[l];
    return z;
}

}  // namespace

// A NaN score makes the row's loss and gradient NaN.
template <class T>
double softmax_cross_entropy_row(idx V, const T* s, std::int64_t target, T row_scale, T* d) {
    const T top = row_max(s, V);
    if (d != s) std::copy(s, s + V, d);
    subtract(d, V, top);  // <= 0: exp cannot overflow
    const T picked = d[target];
    kernels<T>().exp(d, V);
    const double z = row_sum(d, V);
    scale_range(d, 0, V, T(1.0 / z));
    d[target] -= T(1);
    scale_range(d, 0, V, row_scale);
    return std::log(z) - double(picked);
}

// scores and dscores are (M,V); each row's work is about 20 flops per score.
template <class T>
double softmax_cross_entropy(idx M, idx V, const T* scores, const std::int64_t* targets,
                             const std::uint8_t* mask, T row_scale, T* dscores) {
    std::vector<double> nll(M, 0.0);
    run_team_or_inline(threads_for(20.0 * double(M) * double(V)), [&] {
        const Range rows = my_share(M);
        for (idx m = rows.begin; m < rows.end; ++m) {
            T* d = dscores + m * V;
            if (mask != nullptr && mask[m] == 0) {
                std::fill(d, d + V, T(0));
                continue;
            }
            nll[m] = softmax_cross_entropy_row(V, scores + m * V, targets[m], row_scale, d);
        }
    });
    double total = 0;
    for (double x : nll) total += x;
    return total;
}

// dout is (M,D) and dW (V,D): each thread owns a slice of the D columns for all rows.
template <class T>
void embedding_backward(idx M, idx D, const std::int64_t* ids, const T* dout, T* dW) {
    const int threads = D >= 64 ? threads_for(double(M) * double(D)) : 1;
    run_team_or_inline(threads, [&] { add_rows_at(M, D, ids, dout, dW, [](idx) { return true; }); });
}

#define FASTRNN_INSTANTIATE(T)                                                                          \
    template double softmax_cross_entropy<T>(idx, idx, const T*, const std::int64_t*, const std::uint8_t*, \
                                             T, T*);                                                    \
    template double softmax_cross_entropy_row<T>(idx, const T*, std::int64_t, T, T*);                     \
    template void embedding_backward<T>(idx, idx, const std::int64_t*, const T*, T*);
FASTRNN_INSTANTIATE(float)
FASTRNN_INSTANTIATE(double)
#undef FASTRNN_INSTANTIATE

}  // namespace fastrnn
