// The matrix-multiply building block used by every cell.
//
// All products are row-major C (M x N, row stride ldc) = [C +] A (M x K) * B (K x N),
// where A and B are strided views, so a transpose is just a swap of strides.
//
// Work is shared by a thread team: call these from every thread of an OpenMP parallel
// region (or from outside any region, where the caller's thread does all of it). Threads
// split the output into fixed column panels (and row blocks when panels are few); the
// reduction over K is never split, and always runs in the same order, so the result is
// bitwise the same for any thread count. Each call ends with a team barrier.
//
// Micro-kernels exist for AVX-512, AVX2+FMA and plain C++; the best one the CPU supports
// is chosen at run time (FASTRNN_ISA=generic|avx2|avx512 asks for a lower one).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>
#include <memory>

#include "common.hpp"

namespace fastrnn {

// Element (i, j) is p[i * rs + j * cs].
template <class T>
struct MatRef {
    const T* p;
    idx rs, cs;

    MatRef t() const { return {p, cs, rs}; }
    MatRef at(idx i, idx j) const { return {p + i * rs + j * cs, rs, cs}; }
};

template <class T>
MatRef<T> row_major(const T* p, idx ld) {
    return {p, ld, 1};
}

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

Isa best_isa();                 // the best this CPU (and OS) supports
Isa active_isa();               // the one in use
void set_active_isa(Isa isa);   // clamps to best_isa(); for tests and benchmarks
const char* isa_name(Isa isa);

// 64-byte aligned, uninitialised storage.
template <class T>
class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(idx n) : n_(n), p_(allocate(n)) {}
    T* data() { return p_.get(); }
    const T* data() const { return p_.get(); }
    idx size() const { return n_; }

   private:
    struct Free {
        void operator()(T* p) const { std::free(p); }
    };
    static T* allocate(idx n);
    idx n_ = 0;
    std::unique_ptr<T, Free> p_;
};

// B laid out once in the micro-kernel's panel order, for products repeated every step.
template <class T>
struct PackedB {
    idx K = 0, N = 0;
    Isa isa = Isa::generic;
    Buffer<T> data;
};

template <class T>
void gemm(idx M, idx N, idx K, MatRef<T> A, MatRef<T> B, bool accumulate, T* C, idx ldc);

// Not team-shared: call it before the parallel region (it is cheap next to the steps).
template <class T>
PackedB<T> pack_b(idx K, idx N, MatRef<T> B);

template <class T>
void gemm(idx M, MatRef<T> A, const PackedB<T>& B, bool accumulate, T* C, idx ldc);

}  // namespace fastrnn

namespace fastrnn {

template <class T>
T* Buffer<T>::allocate(idx n) {
    if (n <= 0) {
        return nullptr;
    }
    constexpr std::size_t align = 64;
    if (std::size_t(n) > (SIZE_MAX - align) / sizeof(T)) {
        throw std::bad_alloc();
    }
    const std::size_t bytes = (std::size_t(n) * sizeof(T) + align - 1) / align * align;
    void* p = std::aligned_alloc(align, bytes);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return static_cast<T*>(p);
}

// What one instruction set provides: packing of B into panels of `nr` columns, and the
// product of a block of A rows with a run of packed panels. Built in gemm_<isa>.cpp.
template <class T>
struct GemmIsa {
    int nr;  // panel width (columns)
    int mr;  // rows per micro-tile
    // dst <- B[k0:k0+kc, panels p0..p1) as [panel][k][nr], zero-padded past column N.
    void (*pack)(MatRef<T> B, idx N, idx k0, idx kc, idx p0, idx p1, T* dst);
    // C[i0:i1, panels p0..p1) (+)= A[i0:i1, k0:k0+kc] * panels, panels laid out as pack() writes.
    void (*compute)(MatRef<T> A, idx i0, idx i1, idx k0, idx kc, const T* panels, idx p0,
                    idx p1, idx N, bool accumulate, T* C, idx ldc);
};

}  // namespace fastrnn
