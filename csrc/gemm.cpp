// The blocked, team-shared product loops around the active micro-kernel.
#include "gemm.hpp"

#include <vector>

namespace fastrnn {

// ---------------------------------------------------------------- products

namespace {

// Block sizes: a KC x NR panel of B stays in L1, an MC x KC block of A in L2, and a
// thread packs at most PANELS_PER_PACK panels of B at a time.
constexpr idx KC = 384;
constexpr idx MC = 120;
constexpr idx PANELS_PER_PACK = 16;

template <class T>
void zero_block(T* C, idx ldc, idx i0, idx i1, idx j0, idx j1) {
    for (idx i = i0; i < i1; ++i) {
        for (idx j = j0; j < j1; ++j) {
            C[i * ldc + j] = T(0);
        }
    }
}

// Per-thread packing space, grown on demand: for B panels (slot 0) and A tiles (slot 1).
template <class T>
T* thread_buffer(int slot, idx n) {
    thread_local std::vector<T> buffers[2];
    std::vector<T>& b = buffers[slot];
    if (idx(b.size()) < n) {
        b.resize(std::size_t(n));
    }
    return b.data();
}

idx round_up(idx n, idx m) { return (n + m - 1) / m * m; }

}  // namespace

// With few rows of A, packing B would cost as much as the product itself, so full panels
// of a row-major B are read in place; only a ragged last panel is packed. Short K blocks
// then keep the rows being read few enough for the TLB and the prefetchers, unless B is
// small enough to sit in L2, where one K block saves re-reading C at every block.
constexpr idx DIRECT_MAX_ROWS = 32;
constexpr idx DIRECT_KC = 16;
constexpr idx DIRECT_SMALL_B = 16384;  // elements

idx direct_kc(idx K, idx N) { return K * N <= DIRECT_SMALL_B ? std::min(K, KC) : DIRECT_KC; }

template <class T>
void gemm(idx M, idx N, idx K, MatRef<T> A, MatRef<T> B, bool accumulate, T* C, idx ldc) {
    if (B.cs == 1 && M <= DIRECT_MAX_ROWS) {
        gemm<T>(M, A, pack_b(K, N, B, 1), accumulate, C, ldc);  // B read in place
        return;
    }
    const Kernels<T>& isa = kernels<T>();
    const idx nr = isa.nr;
    // Each thread packs the B panels of its columns and the A tiles of its rows, so splitting
    // columns repeats A's packing in every thread, and splitting rows repeats B's: split
    // whichever side makes the repeated part the smaller.
    const bool split_rows = M > N && M >= team_size() * MC;
    const Block s = block_of(M, (N + nr - 1) / nr, team_rank(), team_size(), split_rows);  // j in panels
    if (K == 0 && !accumulate) {
        zero_block(C, ldc, s.i0, s.i1, s.j0 * nr, std::min(N, s.j1 * nr));
    }
    if (s.i0 < s.i1 && K > 0) {
        T* packed = thread_buffer<T>(0, KC * PANELS_PER_PACK * nr);
        T* a_tiles = thread_buffer<T>(1, round_up(MC, isa.mr) * KC);
        for (idx p0 = s.j0; p0 < s.j1; p0 += PANELS_PER_PACK) {
            const idx p1 = std::min(s.j1, p0 + PANELS_PER_PACK);
            for (idx k0 = 0; k0 < K; k0 += KC) {
                const idx kc = std::min(KC, K - k0);
                isa.pack(B, N, k0, kc, p0, p1, packed);
                // A Ctrl-C cuts a long product short; its caller discards the result.
                for (idx i0 = s.i0; i0 < s.i1 && !stop_pending(); i0 += MC) {
                    const idx i1 = std::min(s.i1, i0 + MC);
                    isa.compute(A, i0, i1, k0, kc, packed, nr, kc * nr, p0, p1, N, accumulate || k0 > 0,
                                C, ldc, a_tiles, false);
                }
            }
        }
    }
    team_barrier();
}

// Layout: K blocks of KC rows; inside a block, every panel's kc x nr values in turn.
template <class T>
PackedB<T> pack_b(idx K, idx N, MatRef<T> B, idx uses) {
    PackedB<T> out;
    out.K = K;
    out.N = N;
    out.source = B;
    out.isa = active_isa();
    if (uses <= 1 && B.cs == 1) {
        return out;  // used once: gemm() reads it in place
    }
    const Kernels<T>& isa = kernels<T>(out.isa);
    const idx panels = (N + isa.nr - 1) / isa.nr;
    out.data = Buffer<T>(K * panels * isa.nr);
    out.packed = true;
    for (idx k0 = 0; k0 < K; k0 += KC) {
        isa.pack(B, N, k0, std::min(KC, K - k0), 0, panels, out.data.data() + k0 * panels * isa.nr);
    }
    return out;
}

template <class T>
PackedB<T> pack_b_for_rows(idx M, idx K, idx N, MatRef<T> B) {
    // gemm() reads B in place, in direct_kc's K blocks, exactly when this holds. When
    // those blocks are KC's too, a packed copy gives the same bits and spares every call
    // the packing of B's ragged last panel.
    const bool in_place = B.cs == 1 && M <= DIRECT_MAX_ROWS;
    const bool packed_blocks_match = direct_kc(K, N) == std::min(K, KC);
    return pack_b(K, N, B, in_place && !packed_blocks_match ? 1 : 2);
}

Block block_of(idx M, idx panels, int rank, int size, bool split_rows) {
    int row_groups = 1;
    if (split_rows) {
        row_groups = size;
    } else if (panels < size) {
        row_groups = int(size / (panels > 0 ? panels : 1));
    }
    const int col_groups = size / row_groups;
    if (rank >= row_groups * col_groups) {
        return {0, 0, 0, 0};
    }
    const Range rows = team_share(M, rank / col_groups, row_groups);
    const Range cols = team_share(panels, rank % col_groups, col_groups);
    return {rows.begin, rows.end, cols.begin, cols.end};
}

template <class T>
idx panel_width(const PackedB<T>& B) {
    return kernels<T>(B.isa).nr;
}

template <class T>
Block team_block(idx M, const PackedB<T>& B) {
    const idx nr = panel_width(B);
    Block s = block_of(M, (B.N + nr - 1) / nr, team_rank(), team_size(), false);
    s.j0 *= nr;  // panels -> columns
    s.j1 = std::min(B.N, s.j1 * nr);
    return s;
}

template <class T>
void gemm_block(const Block& s, MatRef<T> A, const PackedB<T>& B, bool accumulate, T* C, idx ldc) {
    if (B.packed) {
        gemm_block(s, A, &B, 1, accumulate, &C, ldc);  // the loop over products serves one
        return;
    }
    // B read in place: full panels straight from B, a ragged last one packed.
    const Kernels<T>& isa = kernels<T>(B.isa);
    const idx N = B.N, K = B.K, nr = isa.nr;
    const idx p0 = s.j0 / nr, p1 = (s.j1 + nr - 1) / nr;
    if (s.i0 >= s.i1 || p0 >= p1) {
        return;
    }
    if (K == 0) {
        if (!accumulate) zero_block(C, ldc, s.i0, s.i1, s.j0, s.j1);
        return;
    }
    T* a_tiles = thread_buffer<T>(1, round_up(MC, isa.mr) * KC);
    const MatRef<T> src = B.source;
    const idx kc_max = direct_kc(K, N);
    for (idx k0 = 0; k0 < K; k0 += kc_max) {
        const idx kc = std::min(kc_max, K - k0);
        const bool acc = accumulate || k0 > 0;
        const idx full_end = std::min(p1, N / nr);
        if (src.cs == 1 && full_end > p0) {
            isa.compute(A, s.i0, s.i1, k0, kc, src.p + k0 * src.rs + p0 * nr, src.rs, nr, p0, full_end, N, acc,
                        C, ldc, a_tiles, false);
        }
        const idx rest = src.cs == 1 ? std::max(p0, full_end) : p0;
        if (rest < p1) {
            T* packed = thread_buffer<T>(0, KC * PANELS_PER_PACK * nr);
            for (idx q0 = rest; q0 < p1; q0 += PANELS_PER_PACK) {
                const idx q1 = std::min(p1, q0 + PANELS_PER_PACK);
                isa.pack(src, N, k0, kc, q0, q1, packed);
                isa.compute(A, s.i0, s.i1, k0, kc, packed, nr, kc * nr, q0, q1, N, acc, C, ldc, a_tiles, false);
            }
        }
    }
}

template <class T>
void gemm_block(const Block& s, MatRef<T> A, const PackedB<T>* B, idx count, bool accumulate,
                T* const* C, idx ldc) {
    for (idx g = 0; g < count; ++g) {
        if (!B[g].packed || B[g].N != B[0].N || B[g].K != B[0].K || B[g].isa != B[0].isa) {
            for (idx h = 0; h < count; ++h) gemm_block(s, A, B[h], accumulate, C[h], ldc);
            return;
        }
    }
    const Kernels<T>& isa = kernels<T>(B[0].isa);
    const idx N = B[0].N, K = B[0].K, nr = isa.nr;
    const idx panels = (N + nr - 1) / nr;
    const idx p0 = s.j0 / nr, p1 = (s.j1 + nr - 1) / nr;
    if (s.i0 >= s.i1 || p0 >= p1 || K == 0) {
        for (idx h = 0; h < count && K == 0 && !accumulate; ++h) zero_block(C[h], ldc, s.i0, s.i1, s.j0, s.j1);
        return;
    }
    T* a_tiles = thread_buffer<T>(1, round_up(MC, isa.mr) * KC);
    for (idx i0 = s.i0; i0 < s.i1; i0 += MC) {
        const idx i1 = std::min(s.i1, i0 + MC);
        for (idx k0 = 0; k0 < K; k0 += KC) {
            const idx kc = std::min(KC, K - k0);
            for (idx g = 0; g < count; ++g) {  // A's block is packed once, for the first product
                const T* block = B[g].data.data() + k0 * panels * nr + p0 * kc * nr;
                isa.compute(A, i0, i1, k0, kc, block, nr, kc * nr, p0, p1, N, accumulate || k0 > 0, C[g],
                            ldc, a_tiles, g > 0);
            }
        }
    }
}

template <class T>
void gemm(idx M, MatRef<T> A, const PackedB<T>& B, bool accumulate, T* C, idx ldc) {
    gemm_block(team_block(M, B), A, B, accumulate, C, ldc);
    team_barrier();
}

template <class T>
void matmul(idx M, idx N, idx K, MatRef<T> A, MatRef<T> B, T* C, idx ldc) {
    run_team(threads_for(2.0 * double(M) * double(N) * double(K)), [&] { gemm<T>(M, N, K, A, B, false, C, ldc); });
}

template void matmul<float>(idx, idx, idx, MatRef<float>, MatRef<float>, float*, idx);
template void matmul<double>(idx, idx, idx, MatRef<double>, MatRef<double>, double*, idx);
template void gemm<float>(idx, idx, idx, MatRef<float>, MatRef<float>, bool, float*, idx);
template void gemm<double>(idx, idx, idx, MatRef<double>, MatRef<double>, bool, double*, idx);
template PackedB<float> pack_b<float>(idx, idx, MatRef<float>, idx);
template PackedB<double> pack_b<double>(idx, idx, MatRef<double>, idx);
template PackedB<float> pack_b_for_rows<float>(idx, idx, idx, MatRef<float>);
template PackedB<double> pack_b_for_rows<double>(idx, idx, idx, MatRef<double>);
template void gemm<float>(idx, MatRef<float>, const PackedB<float>&, bool, float*, idx);
template Block team_block<float>(idx, const PackedB<float>&);
template Block team_block<double>(idx, const PackedB<double>&);
template void gemm_block<float>(const Block&, MatRef<float>, const PackedB<float>&, bool, float*, idx);
template void gemm_block<double>(const Block&, MatRef<double>, const PackedB<double>&, bool, double*, idx);
template void gemm_block<float>(const Block&, MatRef<float>, const PackedB<float>*, idx, bool, float* const*, idx);
template void gemm_block<double>(const Block&, MatRef<double>, const PackedB<double>*, idx, bool, double* const*,
                                 idx);
template void gemm<double>(idx, MatRef<double>, const PackedB<double>&, bool, double*, idx);

}  // namespace fastrnn
