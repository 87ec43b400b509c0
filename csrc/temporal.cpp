// The temporal layers' kernels around the cells: softmax cross-entropy over a vocabulary
// and the embedding's gradient. Rows (softmax) or columns (embedding) are shared out, so
// every output element is computed by one thread in a fixed order.
#include <cmath>
#include <cstdint>
#include <vector>

#include "isa.hpp"
#include "training.hpp"

namespace fastrnn {

// scores and dscores are (M,V); each row's work is about 20 flops per score.
template <class T>
double softmax_cross_entropy(idx M, idx V, const T* scores, const std::int64_t* targets,
                             const std::uint8_t* mask, T row_scale, T* dscores) {
    std::vector<double> nll(M, 0.0);
    const Kernels<T>& k = kernels<T>();
    run_team_or_inline(threads_for(20.0 * double(M) * double(V)), [&] {
        const Range rows = my_share(M);
        for (idx m = rows.begin; m < rows.end; ++m) {
            const T* s = scores + m * V;
            T* d = dscores + m * V;
            if (mask != nullptr && mask[m] == 0) {
                std::fill(d, d + V, T(0));
                continue;
            }
            T top = s[0];
            for (idx j = 1; j < V; ++j) top = s[j] > top ? s[j] : top;
            for (idx j = 0; j < V; ++j) d[j] = s[j] - top;  // <= 0: exp cannot overflow
            const T picked = d[targets[m]];
            k.exp(d, V);
            double z = 0;
            for (idx j = 0; j < V; ++j) z += double(d[j]);
            nll[m] = std::log(z) - double(picked);
            const T inv_z = T(1.0 / z);
            for (idx j = 0; j < V; ++j) d[j] *= inv_z;
            d[targets[m]] -= T(1);
            for (idx j = 0; j < V; ++j) d[j] *= row_scale;
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
    template void embedding_backward<T>(idx, idx, const std::int64_t*, const T*, T*);
FASTRNN_INSTANTIATE(float)
FASTRNN_INSTANTIATE(double)
#undef FASTRNN_INSTANTIATE

}  // namespace fastrnn
