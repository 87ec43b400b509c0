// The register-blocked micro-kernel and panel packing, written once over a vector type V.
// simd.cpp defines V (register type, width, tile height) and FASTRNN_ISA_NS for each
// instruction set, then includes this file, so every instantiation has its own name and
// code built for one instruction set never leaks into another.
//
// V must provide: T, R (register), W (lanes), MR (tile rows), zero(), load(p), store(p, r),
// bcast(x), add(a, b), fma(a, b, c) = a*b + c, and WIDE (panels per wide tile).
//
// A micro-tile is MR rows x 2W columns of C held in 2*MR registers. Per k it loads two
// vectors of the packed B panel and broadcasts one element of the packed A tile per row.

namespace fastrnn {
namespace FASTRNN_ISA_NS {

template <class V>
struct Kernel {
    using T = typename V::T;
    using R = typename V::R;
    static constexpr int W = V::W;
    static constexpr int NR = 2 * V::W;
    static constexpr int MR = V::MR;

    static idx min_idx(idx a, idx b) { return a < b ? a : b; }

    static void pack(MatRef<T> B, idx N, idx k0, idx kc, idx p0, idx p1, T* dst) {
        if (B.rs == 1 && B.cs != 1) {  // a transposed matrix: its columns are contiguous
            pack_transposed(B, N, k0, kc, p0, p1, dst);
            return;
        }
        for (idx p = p0; p < p1; ++p) {
            const idx j0 = p * NR;
            const idx nv = min_idx(NR, N - j0);
            for (idx k = 0; k < kc; ++k) {
                const T* src = B.p + (k0 + k) * B.rs + j0 * B.cs;
                if (B.cs == 1 && nv == NR) {  // a whole row of the panel: two vectors
                    V::store(dst, V::load(src));
                    V::store(dst + W, V::load(src + W));
                } else if (B.cs == 1) {  // a row of the panel is one contiguous run
                    std::copy(src, src + nv, dst);
                } else {
                    for (idx j = 0; j < nv; ++j) dst[j] = src[j * B.cs];
                }
                std::fill(dst + nv, dst + NR, T(0));
                dst += NR;
            }
        }
    }

    // pack() for a B whose columns are contiguous (Wᵀ of a row-major W). W columns at a
    // time, W of their elements are loaded as W vectors and transposed in registers into
    // W rows of the panel: whole-vector loads and stores in place of one scattered store
    // per element. Columns past N are zero vectors; the last kc % W rows go one by one.
    static void pack_transposed(MatRef<T> B, idx N, idx k0, idx kc, idx p0, idx p1, T* dst) {
        for (idx p = p0; p < p1; ++p) {
            for (idx half = 0; half < 2; ++half) {
                const idx j0 = p * NR + half * W;
                const idx cols = N - j0 < 0 ? 0 : min_idx(W, N - j0);
                const T* src = B.p + k0 + j0 * B.cs;  // column j0 + c at src + c * cs
                T* out = dst + half * W;              // row k of this half at out + k * NR
                idx k = 0;
                for (; k + W <= kc; k += W) {
                    R r[W];
                    for (int c = 0; c < W; ++c) r[c] = c < cols ? V::load(src + c * B.cs + k) : V::zero();
                    V::transpose(r);
                    for (int c = 0; c < W; ++c) V::store(out + (k + c) * NR, r[c]);
                }
                for (; k < kc; ++k) {
                    for (idx c = 0; c < W; ++c) out[k * NR + c] = c < cols ? src[c * B.cs + k] : T(0);
                }
            }
            dst += kc * NR;
        }
    }

    // How a tile reads its M rows of A: a packed tile ([k][MR]), rows of a row-major A
    // (ars apart), or any strides (ars, acs). Known at compile time, so for the first two a
    // broadcast is a fixed offset from one or M pointers, not index arithmetic in the loop.
    enum class ALayout { packed, rows, strided };

    // C (M x nv, row stride ldc) (+)= a (M x kc) * b (kc x nv): U vectors of W columns, two
    // per panel (rows of a panel b_row apart, panels b_panel apart). U counts only the
    // vectors that hold real columns, so the zero padding of a ragged last panel is never
    // loaded: a 100-wide B streams 7 vectors per row, not 8 (and a 100 x 100 one fits in
    // L1). Multi-row tiles span one panel (U <= 2); one or two rows span up to WIDE panels,
    // as one panel would leave them only 2 or 4 independent FMA chains, too few to hide
    // the FMA latency.
    template <int M, int U, ALayout LAYOUT>
    static void tile(idx kc, const T* a, idx ars, idx acs, const T* b, idx b_row, idx b_panel, T* c, idx ldc,
                     bool accumulate, idx nv) {
        R acc[M][U];
        for (int r = 0; r < M; ++r) {
            for (int u = 0; u < U; ++u) acc[r][u] = V::zero();
        }
        for (idx k = 0; k < kc; ++k) {
            R bv[U];
            for (int u = 0; u < U; ++u) bv[u] = V::load(b + (u / 2) * b_panel + (u % 2) * W);
            b += b_row;
            for (int r = 0; r < M; ++r) {
                const T x = LAYOUT == ALayout::packed ? a[k * MR + r]
                            : LAYOUT == ALayout::rows ? a[r * ars + k]
                                                      : a[r * ars + k * acs];
                const R ar = V::bcast(x);
                for (int u = 0; u < U; ++u) acc[r][u] = V::fma(ar, bv[u], acc[r][u]);
            }
        }
        if (nv == U * W) {  // full tile: straight to C
            for (int r = 0; r < M; ++r) {
                for (int u = 0; u < U; ++u) {
                    T* cu = c + r * ldc + u * W;
                    V::store(cu, accumulate ? V::add(acc[r][u], V::load(cu)) : acc[r][u]);
                }
            }
            return;
        }
        alignas(64) T out[U * W];  // edge tile: only the first nv columns exist
        for (int r = 0; r < M; ++r) {
            for (int u = 0; u < U; ++u) V::store(out + u * W, acc[r][u]);
            T* cr = c + r * ldc;
            for (idx j = 0; j < nv; ++j) {
                cr[j] = accumulate ? cr[j] + out[j] : out[j];
            }
        }
    }

    // One panel of M rows for a run-time height m (1..MR; only the last row block is short)
    // and one or two vectors.
    template <int M, ALayout LAYOUT>
    static void tile_rows(int m, idx kc, const T* a, idx ars, const T* b, idx b_row, T* c, idx ldc,
                          bool accumulate, idx nv) {
        if constexpr (M > 0) {
            if (m == M) {
                if (nv > W) {
                    tile<M, 2, LAYOUT>(kc, a, ars, 0, b, b_row, 0, c, ldc, accumulate, nv);
                } else {
                    tile<M, 1, LAYOUT>(kc, a, ars, 0, b, b_row, 0, c, ldc, accumulate, nv);
                }
            } else {
                tile_rows<M - 1, LAYOUT>(m, kc, a, ars, b, b_row, c, ldc, accumulate, nv);
            }
        }
    }

    // One or two rows (M) across up to WIDE panels: ceil(nv / W) vectors, nv in 1..WIDE * NR.
    static constexpr int WIDE = V::WIDE;
    template <int M, int U = 2 * WIDE>
    static void wide_tile(idx kc, const T* a, idx ars, idx acs, const T* b, idx b_row, idx b_panel, T* c,
                          idx ldc, bool accumulate, idx nv) {
        if constexpr (U > 0) {
            if (nv > (U - 1) * W) {
                tile<M, U, ALayout::strided>(kc, a, ars, acs, b, b_row, b_panel, c, ldc, accumulate, nv);
            } else {
                wide_tile<M, U - 1>(kc, a, ars, acs, b, b_row, b_panel, c, ldc, accumulate, nv);
            }
        }
    }

    // Rows [i0, i1) in ceil(m / MR) tiles of nearly equal height: 50 rows are 5 tiles of
    // 10, not 4 of 12 and a slow one of 2 (few rows leave too few independent FMA chains).
    struct RowTiles {
        idx count, base, extra;  // the first `extra` tiles have base + 1 rows
        idx height(idx t) const { return base + (t < extra ? 1 : 0); }
    };
    static RowTiles row_tiles(idx m) {
        const idx count = (m + MR - 1) / MR;
        return {count, count ? m / count : 0, count ? m % count : 0};
    }

    // a_tiles <- A[i0:i1, k0:k0+kc] as row tiles, each [k][MR], so the tile loop
    // broadcasts from one contiguous stream instead of MR strided rows.
    static void pack_a(MatRef<T> A, idx i0, idx i1, idx k0, idx kc, T* a_tiles) {
        const RowTiles tiles = row_tiles(i1 - i0);
        idx i = i0;
        for (idx t = 0; t < tiles.count; ++t) {
            const idx m = tiles.height(t);
            for (idx k = 0; k < kc; ++k) {
                const T* src = A.p + i * A.rs + (k0 + k) * A.cs;
                for (idx r = 0; r < m; ++r) {
                    a_tiles[k * MR + r] = src[r * A.rs];
                }
            }
            a_tiles += kc * MR;
            i += m;
        }
    }

    // One row of A times kc rows of a B read in place (full panels, adjacent in its rows):
    // each row of B is streamed whole across the columns, a long run the prefetchers
    // follow, into sums kept in `acc` (L1) instead of registers. Column by column this is
    // tile<1, U>'s arithmetic: a sum from zero over the kc rows in order, then added to C.
    static constexpr idx STREAM_COLS = 1024;  // acc: 4 KiB (float) or 8 KiB (double)
    // Rows shorter than this (an LSTM step's gate blocks, 256 columns a thread) gained
    // nothing over the register tiles.
    static constexpr idx STREAM_MIN_COLS = 512;
    static constexpr int STREAM_ROWS = 4;  // rows of B per pass (stream_pass)
    static void row_stream(idx kc, const T* a, idx acs, const T* b, idx b_row, idx n, T* c, bool accumulate) {
        alignas(64) T acc[STREAM_COLS];
        for (idx j0 = 0; j0 < n; j0 += STREAM_COLS) {
            const idx cols = min_idx(STREAM_COLS, n - j0);  // a multiple of W
            // Up to STREAM_ROWS rows of B per pass over the sums: one load and store of each
            // sum per pass instead of per row. The first pass starts from zero and the last
            // one writes C, so the sums need no passes of their own.
            for (idx k0 = 0; k0 < kc; k0 += STREAM_ROWS) {
                const idx rows = min_idx(STREAM_ROWS, kc - k0);  // 1..4
                const T* in = k0 == 0 ? nullptr : acc;
                const bool last = k0 + rows == kc;
                T* out = last ? c + j0 : acc;
                const T* add = last && accumulate ? c + j0 : nullptr;
                const T* ak = a + k0 * acs;
                const T* bk = b + k0 * b_row + j0;
                switch (rows) {
                    case 1: stream_pass<1>(ak, acs, bk, b_row, cols, in, add, out); break;
                    case 2: stream_pass<2>(ak, acs, bk, b_row, cols, in, add, out); break;
                    case 3: stream_pass<3>(ak, acs, bk, b_row, cols, in, add, out); break;
                    default: stream_pass<STREAM_ROWS>(ak, acs, bk, b_row, cols, in, add, out); break;
                }
            }
        }
    }

    // out[j] = (in ? in[j] : 0) + a[0]*b[j] + ... + a[ROWS-1]*b[(ROWS-1)*b_row + j] (fused,
    // in that order), then + add[j] if add: cols a multiple of W.
    template <int ROWS>
    static void stream_pass(const T* a, idx acs, const T* b, idx b_row, idx cols, const T* in, const T* add, T* out) {
        R ak[ROWS];
        for (int r = 0; r < ROWS; ++r) ak[r] = V::bcast(a[r * acs]);
        for (idx j = 0; j < cols; j += W) {
            R s = in ? V::load(in + j) : V::zero();
            for (int r = 0; r < ROWS; ++r) s = V::fma(ak[r], V::load(b + r * b_row + j), s);
            V::store(out + j, add ? V::add(s, V::load(add + j)) : s);
        }
    }

    static void compute(MatRef<T> A, idx i0, idx i1, idx k0, idx kc, const T* b0, idx b_row,
                        idx b_panel, idx p0, idx p1, idx N, bool accumulate, T* C, idx ldc,
                        T* a_tiles, bool a_ready) {
        const idx m = i1 - i0;
        // One row against full panels of a B read in place, in long rows.
        if (m == 1 && b_panel == NR && p1 * NR <= N && (p1 - p0) * NR >= STREAM_MIN_COLS) {
            row_stream(kc, A.p + i0 * A.rs + k0 * A.cs, A.cs, b0, b_row, (p1 - p0) * NR, C + i0 * ldc + p0 * NR,
                       accumulate);
            return;
        }
        if (m <= 2) {  // A read in place; every panel in wide tiles, the edge one too
            const T* a = A.p + i0 * A.rs + k0 * A.cs;
            for (idx p = p0; p < p1; p += WIDE) {
                const idx count = min_idx(WIDE, p1 - p);
                const idx nv = min_idx(count * NR, N - p * NR);
                const T* b = b0 + (p - p0) * b_panel;
                T* c = C + i0 * ldc + p * NR;
                if (m == 1) {
                    wide_tile<1>(kc, a, A.rs, A.cs, b, b_row, b_panel, c, ldc, accumulate, nv);
                } else {
                    wide_tile<2>(kc, a, A.rs, A.cs, b, b_row, b_panel, c, ldc, accumulate, nv);
                }
            }
            return;
        }
        // Each tile of A (MR x kc, broadcast operand) stays in L1 while the panels of B
        // (vector operand) stream past it from L2. A row-major A is read in place: its MR
        // rows stay in L1 as well as a packed tile would, and packing them (in every thread
        // that shares the rows) cost more than it saved. A transposed A is packed.
        const bool a_in_place = A.cs == 1;
        if (!a_ready && !a_in_place) {
            pack_a(A, i0, i1, k0, kc, a_tiles);
        }
        const RowTiles tiles = row_tiles(m);
        const T* a = a_in_place ? A.p + i0 * A.rs + k0 : a_tiles;
        idx i = i0;
        for (idx t = 0; t < tiles.count; ++t) {
            const int mi = int(tiles.height(t));
            for (idx q = p0; q < p1; ++q) {
                const idx j0 = q * NR;
                const T* b = b0 + (q - p0) * b_panel;
                T* c = C + i * ldc + j0;
                const idx nv = min_idx(NR, N - j0);
                if (a_in_place) {
                    tile_rows<MR, ALayout::rows>(mi, kc, a, A.rs, b, b_row, c, ldc, accumulate, nv);
                } else {
                    tile_rows<MR, ALayout::packed>(mi, kc, a, 0, b, b_row, c, ldc, accumulate, nv);
                }
            }
            a += a_in_place ? mi * A.rs : kc * MR;
            i += mi;
        }
    }
};

}  // namespace FASTRNN_ISA_NS
}  // namespace fastrnn
