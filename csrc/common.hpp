// Shared building blocks: index type, thread-team helpers, scalar activations,
// and the optional per-sequence lengths.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastrnn {

using idx = std::ptrdiff_t;  // 64-bit on every supported platform

// ---------------------------------------------------------------- threads

// Number of threads the kernels use (set_num_threads, else OMP_NUM_THREADS, else all cores).
int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default

inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

inline int team_rank() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Waits for the whole team; a no-op outside a parallel region.
inline void team_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// The contiguous share [begin, end) of `n` items that this team member owns.
// The split depends only on n and the team size, never on timing.
struct Range {
    idx begin, end;
};
inline Range team_share(idx n, int rank, int size) {
    const idx base = n / size, extra = n % size;
    const idx begin = rank * base + std::min<idx>(rank, extra);
    return {begin, begin + base + (rank < extra ? 1 : 0)};
}
inline Range my_share(idx n) { return team_share(n, team_rank(), team_size()); }

// ---------------------------------------------------------------- activations

template <class T>
inline T sigmoid(T a) {
    // Split form: exp never overflows, so large |a| gives exactly 0 or 1.
    if (a >= T(0)) {
        return T(1) / (T(1) + std::exp(-a));
    }
    const T e = std::exp(a);
    return e / (T(1) + e);
}

// ---------------------------------------------------------------- lengths

// Optional per-row sequence lengths. Row n takes part in step t only while t < len[n];
// without lengths every row runs all T steps.
struct Lengths {
    const std::int64_t* len = nullptr;  // (N,) or nullptr

    bool active(idx n, idx t) const { return len == nullptr || t < len[n]; }
    // The step whose output is row n's final state, or -1 when that is the initial state.
    idx last_step(idx n, idx T) const { return (len == nullptr ? T : idx(len[n])) - 1; }
};

}  // namespace fastrnn
