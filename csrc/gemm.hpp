// The matrix-multiply building block used by every cell.
//
// All products are row-major C (M x N, row stride ldc) = [C +] A (M x K) * B (K x N),
// where A and B are strided views, so a transpose is just a swap of strides.
//
// Work is shared by a thread team: call these from every thread of a run_team() team (or
// from outside one, where the caller's thread does all of it). Threads split the output
// into fixed column panels, or into rows when A is the operand that would otherwise be
// repacked by every thread; the reduction over K is never split and always runs in the
// same order, so the result is bitwise the same for any thread count. Each call ends with
// a team barrier, except gemm_block's.
//
// The micro-kernel is the active instruction set's (isa.hpp).
#pragma once

#include "isa.hpp"

namespace fastrnn {

// B laid out once in the micro-kernel's panel order, for products repeated every step;
// or, when it will be used only once, just a reference to it.
template <class T>
struct PackedB {
    idx K = 0, N = 0;
    MatRef<T> source{nullptr, 0, 0};
    bool packed = false;
    Isa isa = Isa::generic;
    Buffer<T> data;
};

template <class T>
void gemm(idx M, idx N, idx K, MatRef<T> A, MatRef<T> B, bool accumulate, T* C, idx ldc);

// Not team-shared: call it before the parallel region (it is cheap next to the steps).
// `uses` is how many products will read it; B must outlive the result.
template <class T>
PackedB<T> pack_b(idx K, idx N, MatRef<T> B, idx uses);

template <class T>
void gemm(idx M, MatRef<T> A, const PackedB<T>& B, bool accumulate, T* C, idx ldc);

// B prepared so that gemm(m, A_rows, B) on any m of the M rows gives those rows' bits of
// gemm(M, N, K, A, B): the whole product's choice of reading B in place or packed (and
// so its K blocks), for a caller that computes it a few rows at a time.
template <class T>
PackedB<T> pack_b_for_rows(idx M, idx K, idx N, MatRef<T> B);

// The part of an M x N product one team member computes: rows [i0, i1) and columns
// [j0, j1), whole micro-kernel panels. It depends only on M, N, the panel width, the team
// size and the member's rank, so it is the same for every product of that shape: a cell
// can compute its share of several products (one per gate, say) and the elementwise work
// on exactly those columns, with no barrier in between.
struct Block {
    idx i0, i1, j0, j1;
};
// Splits M rows and `panels` column panels over a team: by panels unless split_rows (or
// there are fewer panels than threads). Columns here are counted in panels.
Block block_of(idx M, idx panels, int rank, int size, bool split_rows);
template <class T>
Block team_block(idx M, const PackedB<T>& B);

// This member's block of C (+)= A·B, without the closing barrier.
template <class T>
void gemm_block(const Block& block, MatRef<T> A, const PackedB<T>& B, bool accumulate, T* C, idx ldc);

// The same for `count` products with one A and same-shaped B[g] (a step's gates), into
// C[g]: A's block is packed once for all of them.
template <class T>
void gemm_block(const Block& block, MatRef<T> A, const PackedB<T>* B, idx count, bool accumulate,
                T* const* C, idx ldc);

// C = A·B as a call of its own: opens a team of num_threads() and runs gemm() in it.
template <class T>
void matmul(idx M, idx N, idx K, MatRef<T> A, MatRef<T> B, T* C, idx ldc);

}  // namespace fastrnn
