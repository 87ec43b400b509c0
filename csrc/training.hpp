// Kernels of the training loop around the cells: the optimizers' updates and gradient
// clipping (optim.cpp), and the temporal layers' softmax cross-entropy and embedding
// gradient (temporal.cpp). Every one is elementwise or row-wise, so its result does not
// depend on the thread count. Argument checks happen in the bindings.
#pragma once

#include <vector>

#include "common.hpp"

namespace fastrnn {

// ---------------------------------------------------------------- optimizers

// One update rule with its coefficients already in the parameters' dtype terms. The
// element-by-element arithmetic is exactly fastrnn.reference's NumPy update, operation by
// operation (no fused multiply-add), so the two agree bitwise.
struct UpdateRule {
    enum Kind { sgd, adagrad, rmsprop, adam } kind = sgd;
    double lr = 0;
    double momentum = 0, weight_decay = 0;  // sgd (weight_decay also adam)
    bool nesterov = false;                  // sgd
    double alpha = 0, eps = 0;              // rmsprop (eps also adagrad, adam)
    double beta1 = 0, beta2 = 0;            // adam
    double step_size = 0, bc2_sqrt = 1;     // adam: lr / (1 - beta1^t), sqrt(1 - beta2^t)
    bool decoupled = false;                 // adamw: p *= 1 - lr * weight_decay first
    // The gradient the rule sees (the arrays are not changed): clamped to [-clip_value,
    // clip_value] when clip_value > 0, else times grad_scale when that is not 1. Rounded as
    // clamp_all and scale_all round in place, so clipping then stepping gives the same bits.
    double clip_value = 0, grad_scale = 1;
};

// Parameters p[k] of n[k] elements, their gradients g[k] and up to two state buffers
// (momentum / mem / m, and v), all contiguous and of the same dtype.
template <class T>
struct ParamList {
    std::vector<T*> p;
    std::vector<const T*> g;
    std::vector<T*> s0, s1;  // empty when the rule has fewer buffers
    std::vector<idx> n;
};

template <class T>
void optimizer_update(const UpdateRule& rule, const ParamList<T>& params);
// The same for elements [begin, end) of the arrays laid end to end, on the calling thread
// (a team member's part in a schedule of its own).
template <class T>
void optimizer_update_range(const UpdateRule& rule, const ParamList<T>& params, idx begin, idx end);

// The sum of squares of all arrays' elements in float64, in a fixed order.
template <class T>
double sum_of_squares(const std::vector<const T*>& a, const std::vector<idx>& n);
// a[k] *= factor, and a[k] = clamp(a[k], -limit, limit) (NaN stays NaN), in place.
template <class T>
void scale_all(const std::vector<T*>& a, const std::vector<idx>& n, T factor);
template <class T>
void clamp_all(const std::vector<T*>& a, const std::vector<idx>& n, T limit);

// ---------------------------------------------------------------- temporal layers

// Softmax cross-entropy of M rows of V scores (M,V) against targets (M,), where mask (M,)
// (nullptr: all rows) is nonzero. Writes dscores = (softmax - onehot) * row_scale for
// masked rows and 0 for the others, and returns the sum of the masked rows' losses.
template <class T>
double softmax_cross_entropy(idx M, idx V, const T* scores, const std::int64_t* targets,
                             const std::uint8_t* mask, T row_scale, T* dscores);

// One row of it: returns the row's loss and writes its dscores d (V,) (d may be s).
template <class T>
double softmax_cross_entropy_row(idx V, const T* s, std::int64_t target, T row_scale, T* d);

// dW (V,D) += sum over m of dout[m] (M,D) at row ids[m], in order of m for every element
// (the order np.add.at uses), whatever the thread count.
template <class T>
void embedding_backward(idx M, idx D, const std::int64_t* ids, const T* dout, T* dW);

}  // namespace fastrnn
