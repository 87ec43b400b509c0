// Run-time choice of instruction set. simd.cpp is compiled once per instruction set
// (AVX-512, AVX2+FMA, plain C++); each build fills one Kernels table, and the cells reach
// the one in use through kernels<T>(). The best the CPU supports is the default;
// FASTRNN_ISA=generic|avx2|avx512 or set_active_isa() asks for a lower one.
#pragma once

#include "common.hpp"

namespace fastrnn {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

Isa best_isa();                // the best this CPU (and OS) supports
Isa active_isa();              // the one in use
void set_active_isa(Isa isa);  // clamped to best_isa(); for tests and benchmarks
const char* isa_name(Isa isa);

// What one instruction-set build of simd.cpp provides.
template <class T>
struct Kernels {
    // Matrix-multiply pieces, used by gemm.cpp.
    int nr;  // panel width (columns)
    int mr;  // rows per micro-tile
    // dst <- B[k0:k0+kc, panels p0..p1) as [panel][k][nr], zero-padded past column N.
    void (*pack)(MatRef<T> B, idx N, idx k0, idx kc, idx p0, idx p1, T* dst);
    // C[i0:i1, panels p0..p1) (+)= A[i0:i1, k0:k0+kc] * B[k0:k0+kc, panels p0..p1).
    // Row k of panel p is at b + (p - p0) * b_panel + k * b_row: packed panels have
    // b_row = nr and b_panel = kc * nr; a row-major B used in place, b_row = ldb and
    // b_panel = nr. a_scratch holds (i1 - i0 rounded up to mr) * kc values: A's block,
    // repacked, unless a_ready says the previous call with the same A block left it there.
    void (*compute)(MatRef<T> A, idx i0, idx i1, idx k0, idx kc, const T* b, idx b_row,
                    idx b_panel, idx p0, idx p1, idx N, bool accumulate, T* C, idx ldc,
                    T* a_scratch, bool a_ready);

    // Elementwise functions in place over p[0:n] (the activations, and exp for the softmax
    // loss): accurate to a few ulp, NaN in gives NaN.
    void (*sigmoid)(T* p, idx n);
    void (*tanh)(T* p, idx n);
    void (*exp)(T* p, idx n);
};

template <class T>
const Kernels<T>& kernels(Isa isa);

template <class T>
const Kernels<T>& kernels() {
    return kernels<T>(active_isa());
}

}  // namespace fastrnn
