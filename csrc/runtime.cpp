// Process-wide settings: which instruction-set build runs, and how many threads.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "isa.hpp"

namespace fastrnn {

// The three builds of simd.cpp.
namespace generic {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace generic
#ifdef FASTRNN_HAVE_X86_SIMD
namespace avx2 {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace avx2
namespace avx512 {
extern const Kernels<float> kernels_f32;
extern const Kernels<double> kernels_f64;
}  // namespace avx512
#endif

// ---------------------------------------------------------------- instruction set

namespace {

Isa detect_isa() {
#ifdef FASTRNN_HAVE_X86_SIMD
    __builtin_cpu_init();
    // libgcc's checks include the OS's support for saving the wider registers.
    if (__builtin_cpu_supports("avx512f")) {
        return Isa::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return Isa::avx2;
    }
#endif
    return Isa::generic;
}

Isa requested_isa() {
    const Isa best = detect_isa();
    const char* env = std::getenv("FASTRNN_ISA");
    if (env == nullptr) {
        return best;
    }
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
        if (std::strcmp(env, isa_name(isa)) == 0) {
            return isa < best ? isa : best;
        }
    }
    return best;
}

std::atomic<int> g_isa{int(requested_isa())};
std::atomic<int> g_threads{0};  // 0: the OpenMP default

}  // namespace

Isa best_isa() {
    static const Isa best = detect_isa();
    return best;
}
Isa active_isa() { return Isa(g_isa.load()); }
void set_active_isa(Isa isa) { g_isa.store(int(isa < best_isa() ? isa : best_isa())); }

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

template <>
const Kernels<float>& kernels<float>(Isa isa) {
#ifdef FASTRNN_HAVE_X86_SIMD
    if (isa == Isa::avx512) return avx512::kernels_f32;
    if (isa == Isa::avx2) return avx2::kernels_f32;
#endif
    (void)isa;
    return generic::kernels_f32;
}

template <>
const Kernels<double>& kernels<double>(Isa isa) {
#ifdef FASTRNN_HAVE_X86_SIMD
    if (isa == Isa::avx512) return avx512::kernels_f64;
    if (isa == Isa::avx2) return avx2::kernels_f64;
#endif
    (void)isa;
    return generic::kernels_f64;
}

// ---------------------------------------------------------------- fork

// GNU OpenMP's thread pool does not survive fork(): in the child of a process whose pool
// had started, the first parallel region waits forever for threads that were not copied.
// Such a child runs every kernel on its calling thread, as PyTorch's children do.
namespace {
std::atomic<bool> g_pool_started{false};
std::atomic<bool> g_forked_after_pool{false};

#if defined(__unix__) || defined(__APPLE__)
void in_forked_child() {
    if (g_pool_started.load()) g_forked_after_pool.store(true);
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &in_forked_child);
#endif
}  // namespace

void note_pool_started() { g_pool_started.store(true, std::memory_order_relaxed); }
bool forked_after_pool() { return g_forked_after_pool.load(std::memory_order_relaxed); }

// ---------------------------------------------------------------- threads

namespace {
thread_local bool t_one_thread = false;
}

OneThreadHere::OneThreadHere() : outer_(t_one_thread) { t_one_thread = true; }
OneThreadHere::~OneThreadHere() { t_one_thread = outer_; }

bool team_resting();  // below

int max_threads() {
#ifdef _OPENMP
    return 4 * std::max(1, omp_get_num_procs());
#else
    return 1;
#endif
}

namespace {
int thread_setting() {
    const int n = g_threads.load();
#ifdef _OPENMP
    return std::min(n > 0 ? n : omp_get_max_threads(), max_threads());
#else
    return n > 0 ? std::min(n, max_threads()) : 1;
#endif
}
}  // namespace

int num_threads() {
    if (forked_after_pool() || t_one_thread) {
        return 1;
    }
    return thread_setting();
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0); }

namespace {
std::atomic<double> g_min_flops_per_thread{double(1 << 15)};
}

double min_flops_per_thread() { return g_min_flops_per_thread.load(); }
void set_min_flops_per_thread(double flops) { g_min_flops_per_thread.store(flops > 0 ? flops : 0); }

int threads_for(double flops_between_barriers) {
    const int n = num_threads();
    const double per_thread = g_min_flops_per_thread.load();
    if (per_thread <= 0) {
        return n;
    }
    if (team_resting()) {
        return 1;
    }
    const double worth = flops_between_barriers / per_thread;
    return worth >= n ? n : worth >= 2 ? int(worth) : 1;
}

// ---------------------------------------------------------------- barrier

namespace {

// Sleep until *word != expected (or a spurious wake-up); wake_all wakes every sleeper.
void sleep_while_equal(std::atomic<int>& word, int expected) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
    if (word.load() == expected) std::this_thread::yield();
#endif
}

void wake_all(std::atomic<int>& word) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
    (void)word;
#endif
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// How long a waiter spins before it sleeps: longer than a partner thread usually lags on
// an idle machine (waking a sleeper costs tens of microseconds, more in a VM), far
// shorter than a scheduler slice. FASTRNN_SPIN_US overrides it.
std::chrono::microseconds spin_time() {
    static const std::chrono::microseconds t{[] {
        const char* env = std::getenv("FASTRNN_SPIN_US");
        return env != nullptr ? std::max(0, std::atoi(env)) : 250;
    }()};
    return t;
}

}  // namespace

const std::atomic<bool>*& thread_stop_flag() {
    thread_local const std::atomic<bool>* flag = nullptr;
    return flag;
}

TeamBarrier*& current_barrier() {
    thread_local TeamBarrier* barrier = nullptr;
    return barrier;
}

void TeamBarrier::wait() {
    const int size = size_.load(std::memory_order_relaxed);
    if (size <= 1) {
        return;
    }
    const int gen = generation_.load(std::memory_order_acquire);
    // acq_rel: each arrival publishes its writes; the last one sees everyone's.
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == size) {
        arrived_.store(0, std::memory_order_relaxed);
        if (stop_source_ != nullptr) stopped_.store(stop_source_->load(std::memory_order_relaxed), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_seq_cst);  // releases the others
        if (sleepers_.load(std::memory_order_seq_cst) > 0) {
            wake_all(generation_);
        }
        return;
    }
    const auto arrived = std::chrono::steady_clock::now();
    const auto give_up = arrived + spin_time();
    for (int i = 0;; ++i) {
        if (generation_.load(std::memory_order_acquire) != gen) {
            return;
        }
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > give_up) {
            break;
        }
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (generation_.load(std::memory_order_seq_cst) == gen) {
        sleep_while_equal(generation_, gen);
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    add_stall(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - arrived).count());
}

void Progress::publish(int count) {
    count_.store(count, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
        wake_all(count_);
    }
}

int Progress::wait_for(int count) {
    const auto give_up = std::chrono::steady_clock::now() + spin_time();
    for (int i = 0;; ++i) {
        if (const int seen = count_.load(std::memory_order_acquire); seen >= count) {
            return seen;
        }
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > give_up) {
            break;
        }
    }
    // seq_cst on both sides: either publish() sees this sleeper, or this sees its count.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    int seen;
    while ((seen = count_.load(std::memory_order_seq_cst)) < count) {
        sleep_while_equal(count_, seen);
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return seen;
}

// ---------------------------------------------------------------- team health

std::int64_t monotonic_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::int64_t stall_threshold_ns() { return std::chrono::nanoseconds(spin_time()).count(); }

namespace {

// The share of recent team time lost to stalls is a decaying sum over team time: a call's
// weight halves every HALF_LIFE of team time after it. Above MAX_STALL_SHARE a team of two
// is slower than one thread (each member idles that share of the time, and the partner
// that was descheduled ran slower too), so the kernels rest on one thread: REST at first,
// twice as long after each team that stalled again soon after a rest, up to MAX_REST.
constexpr double HALF_LIFE_NS = 50e6;
constexpr double MAX_STALL_SHARE = 0.3;
constexpr std::int64_t REST_NS = 50'000'000, MAX_REST_NS = 1'600'000'000;

struct TeamHealth {
    std::mutex lock;
    double wall = 0, stalled = 0;  // decaying sums, ns
    std::int64_t rest = REST_NS, last_rest_end = 0;
};
TeamHealth g_health;
std::atomic<std::int64_t> g_resting_until{0};

}  // namespace

bool team_resting() {
    const std::int64_t until = g_resting_until.load(std::memory_order_relaxed);
    return until != 0 && monotonic_ns() < until;
}

void note_team_time(std::int64_t wall_ns, std::int64_t stalled_ns) {
    if (wall_ns <= 0) return;
    std::lock_guard<std::mutex> guard(g_health.lock);
    TeamHealth& h = g_health;
    const double keep = std::exp2(-double(wall_ns) / HALF_LIFE_NS);
    h.wall = h.wall * keep + double(wall_ns);
    h.stalled = h.stalled * keep + double(std::min(stalled_ns, wall_ns));
    if (stalled_ns == 0 || h.stalled <= MAX_STALL_SHARE * h.wall) return;
    const std::int64_t now = monotonic_ns();
    // A stall soon after the last rest ended: the machine is still busy, rest longer.
    h.rest = now - h.last_rest_end < 4 * h.rest ? std::min(2 * h.rest, MAX_REST_NS) : REST_NS;
    h.last_rest_end = now + h.rest;
    g_resting_until.store(h.last_rest_end, std::memory_order_relaxed);
}

}  // namespace fastrnn
