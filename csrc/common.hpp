// Shared building blocks: index type, matrix views, aligned buffers, thread-team helpers
// and the optional per-sequence lengths.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

// An elementwise loop marked FASTRNN_WIDEST is also built for AVX2 and AVX-512 on x86-64
// Linux, and the loader picks the widest the CPU has (the rest of the extension keeps the
// baseline ISA). Files using it are compiled without FMA contraction, so every build of
// such a loop rounds alike and gives the same bits.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__SANITIZE_ADDRESS__)
#define FASTRNN_WIDEST __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTRNN_WIDEST
#endif

namespace fastrnn {

using idx = std::ptrdiff_t;  // 64-bit on every supported platform

// ---------------------------------------------------------------- views and storage

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

// Scratch memory, 64-byte aligned. Blocks of a MiB or more are kept for reuse once released
// (up to a cap), and from 32 MiB on they are huge pages: fresh pages cost a fault each on
// first touch, which for the gate gradients of an LSTM backward at (N,T,H) = (64,100,512)
// took more time than that pass's whole elementwise work. Thread-safe.
struct ScratchBlock {
    void* p = nullptr;
    std::size_t bytes = 0;  // the block's real size, at least the size asked for
};
ScratchBlock scratch_acquire(std::size_t bytes);  // throws std::bad_alloc
void scratch_release(ScratchBlock block);

// Uninitialised scratch storage for n values of T.
template <class T>
class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(idx n) : n_(n) {
        if (n > 0) {
            if (std::size_t(n) > SIZE_MAX / 2 / sizeof(T)) {
                throw std::bad_alloc();
            }
            block_ = scratch_acquire(std::size_t(n) * sizeof(T));
        }
    }
    Buffer(Buffer&& o) noexcept : n_(o.n_), block_(o.block_) { o.n_ = 0, o.block_ = {}; }
    Buffer& operator=(Buffer&& o) noexcept {
        if (this != &o) {
            scratch_release(block_);
            n_ = o.n_, block_ = o.block_;
            o.n_ = 0, o.block_ = {};
        }
        return *this;
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { scratch_release(block_); }

    T* data() { return static_cast<T*>(block_.p); }
    const T* data() const { return static_cast<const T*>(block_.p); }
    idx size() const { return n_; }

   private:
    idx n_ = 0;
    ScratchBlock block_;
};

// ---------------------------------------------------------------- threads

// The threads the kernels may use: set_num_threads, else OMP_NUM_THREADS, else all cores,
// at most max_threads() (four per core, past which more threads only cost); 1 under a
// OneThreadHere and in a forked child (forked_after_pool).
int num_threads();
int max_threads();

// Threads worth starting for work done in pieces of `flops_between_barriers`: a team
// costs a wake-up and a barrier per piece, which small pieces do not repay, and while the
// team rests (below: another process holds a core) one thread does it all. Results do not
// depend on the choice.
int threads_for(double flops_between_barriers);
double min_flops_per_thread();
void set_min_flops_per_thread(double flops);  // 0: always the full team (for tests)
void set_num_threads(int n);  // n <= 0 restores the default

// While one lives, kernels called on the thread that made it run on that thread alone
// (num_threads() is 1 there), whatever set_num_threads says. Nests.
class OneThreadHere {
   public:
    OneThreadHere();
    ~OneThreadHere();
    OneThreadHere(const OneThreadHere&) = delete;
    OneThreadHere& operator=(const OneThreadHere&) = delete;

   private:
    bool outer_;
};

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

// The team's barrier. Waiters spin briefly, then sleep in the kernel, so that a thread
// that finished early does not hold a core that a late one (or another process) needs:
// OpenMP's own barrier may spin for far longer, which on a busy machine costs a whole
// scheduler slice per timestep.
// It also sums how long its members waited past the spin (time lost to a partner that was
// not running, which the team's health below weighs) and carries the stop flag of a call
// that may be abandoned.
class TeamBarrier {
   public:
    void set_size(int size) { size_.store(size, std::memory_order_relaxed); }
    void wait();
    void add_stall(std::int64_t ns) { stalled_ns_.fetch_add(ns, std::memory_order_relaxed); }
    std::int64_t stalled_ns() const { return stalled_ns_.load(std::memory_order_relaxed); }

    // The calling thread's stop flag (see below), seen by the whole team: the last member to
    // arrive at a barrier reads it for all, so every member acts on the same answer.
    void watch(const std::atomic<bool>* stop) { stop_source_ = stop; }
    bool stop_pending() const { return stop_source_ != nullptr && stop_source_->load(std::memory_order_relaxed); }
    bool stopped() const {
        if (stop_source_ == nullptr) return false;
        return size_.load(std::memory_order_relaxed) <= 1 ? stop_source_->load(std::memory_order_relaxed)
                                                          : stopped_.load(std::memory_order_relaxed);
    }

   private:
    std::atomic<int> size_{1};
    std::atomic<int> arrived_{0};
    std::atomic<int> generation_{0};
    std::atomic<int> sleepers_{0};
    std::atomic<std::int64_t> stalled_ns_{0};
    const std::atomic<bool>* stop_source_ = nullptr;
    std::atomic<bool> stopped_{false};
};

// A busy machine: when another process holds a core, a team member is descheduled now
// and then, and every barrier waits a scheduler slice for it (three to thirty times the
// one-thread time was seen). run_team reports each team's wall time and stalls here; when
// stalls take a large share of the recent team time, the team rests (threads_for() is 1)
// for a while, then a team is tried again. Results do not depend on it.
std::int64_t monotonic_ns();
void note_team_time(std::int64_t wall_ns, std::int64_t stalled_ns);
// Waits of the calling thread longer than this count as stalls.
std::int64_t stall_threshold_ns();

TeamBarrier*& current_barrier();  // this thread's team, or nullptr outside run_team

// A call that may be abandoned (a Ctrl-C, see interrupt.hpp) gives its calling thread a stop
// flag; the teams it starts see it too. Long kernels test team_stopped() after the barrier
// that ends a time step and return early when it is set: the caller then discards the
// call's results. Work that must not stop halfway runs under a NoStop.
const std::atomic<bool>*& thread_stop_flag();  // nullptr: this thread's calls run to the end
inline bool thread_stop_set() {  // outside a team, where the calling thread is alone
    const std::atomic<bool>* flag = thread_stop_flag();
    return flag != nullptr && flag->load(std::memory_order_relaxed);
}
inline bool team_stopped() {
    const TeamBarrier* b = current_barrier();
    return b != nullptr ? b->stopped() : thread_stop_set();
}
// The flag as it is now, for a member's work between two barriers, which it may cut short
// on its own (the next barrier's team_stopped() then tells every member).
inline bool stop_pending() {
    const TeamBarrier* b = current_barrier();
    return b != nullptr ? b->stop_pending() : thread_stop_set();
}
class NoStop {
   public:
    NoStop() : outer_(thread_stop_flag()) { thread_stop_flag() = nullptr; }
    ~NoStop() { thread_stop_flag() = outer_; }
    NoStop(const NoStop&) = delete;
    NoStop& operator=(const NoStop&) = delete;

   private:
    const std::atomic<bool>* outer_;
};

// A count that one thread raises and another waits on: the steps a recurrence has
// finished, say, for a partner that works on each finished step meanwhile. Everything the
// raising thread wrote before publish(n) is visible to a thread that wait_for(n) released.
// Waiting spins, then sleeps, as the barrier does.
class Progress {
   public:
    void publish(int count);
    int wait_for(int count);  // returns the count it saw, at least `count`

   private:
    std::atomic<int> count_{0};
    std::atomic<int> sleepers_{0};
};

// Waits for the whole team; a no-op outside run_team.
inline void team_barrier() {
    if (TeamBarrier* b = current_barrier()) {
        b->wait();
    }
}

// In the child of a fork() made after a team of several threads had run, OpenMP's pool
// is unusable (runtime.cpp): there run_team runs body() alone on the calling thread (no
// team can enclose the call), and num_threads() is 1.
void note_pool_started();
bool forked_after_pool();

// Runs body() once on each thread of a team of `threads` (the runtime may give fewer).
// Inside, team_rank(), team_size() and team_barrier() refer to this team.
template <class F>
void run_team(int threads, F&& body) {
    if (forked_after_pool()) {
        body();
        return;
    }
    if (threads > 1) {
        note_pool_started();
    }
    TeamBarrier barrier;
    barrier.watch(thread_stop_flag());
    int size = 1;
    std::int64_t first_done = 0;  // when rank 0 finished; then it waits for the rest
    const std::int64_t start = monotonic_ns();
#pragma omp parallel num_threads(threads)
    {
        barrier.set_size(team_size());
        TeamBarrier*& slot = current_barrier();
        TeamBarrier* outer = slot;
        slot = &barrier;
        body();
        slot = outer;
        if (team_rank() == 0) {
            size = team_size();
            first_done = monotonic_ns();
        }
    }
    if (size > 1) {
        const std::int64_t end = monotonic_ns(), join = end - first_done;
        note_team_time(end - start, barrier.stalled_ns() + (join > stall_threshold_ns() ? join : 0));
    }
}

// run_team(threads, body), or body() on the calling thread alone when threads <= 1 (no
// team to wake for work too small to share).
template <class F>
void run_team_or_inline(int threads, F&& body) {
    if (threads <= 1) {
        body();
    } else {
        run_team(threads, body);
    }
}

// f(std::true_type{}) or f(std::false_type{}): a run-time flag handed to code that needs
// it as a compile-time constant, so that an elementwise loop has no branch and vectorises.
template <class F>
void with_flag(bool flag, F&& f) {
    if (flag) {
        f(std::true_type{});
    } else {
        f(std::false_type{});
    }
}

// p[i] *= factor for i in [i0, i1), at the widest vectors the CPU has.
template <class T>
FASTRNN_WIDEST void scale_range(T* p, idx i0, idx i1, T factor) {
    for (idx i = i0; i < i1; ++i) p[i] *= factor;
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

// dst[ids[i]] += src[i] for the rows i < rows where take(i) holds, in the order of i, over
// this member's share of the `width` columns: rows are (rows, width) and dst (any, width).
// Each element is summed by one thread in one order, whatever the team size.
template <class T, class Take>
void add_rows_at(idx rows, idx width, const std::int64_t* ids, const T* src, T* dst, Take take) {
    const Range cols = my_share(width);
    for (idx i = 0; i < rows; ++i) {
        if (!take(i)) continue;
        T* out = dst + ids[i] * width;
        const T* in = src + i * width;
        for (idx j = cols.begin; j < cols.end; ++j) out[j] += in[j];
    }
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
