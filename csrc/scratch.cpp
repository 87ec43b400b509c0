// The scratch allocator behind Buffer (common.hpp). Blocks of a MiB or more are kept in a
// pool after release, and those of 32 MiB or more are huge pages. Small blocks are also
// kept, a few per thread: a kernel call asks for the same sizes every time, and for a
// small model (min-char-rnn's, say) the C library's malloc and free, and the merging of
// its free lists they trigger, were a twentieth of the whole call.
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "common.hpp"

namespace fastrnn {
namespace {

constexpr std::size_t ALIGN = 64;
// Pooled from this size on. Handed back to the C library, blocks of this size were paged
// in afresh on the next call: glibc trims the top of its heap as they are freed. A training
// iteration of a 2-layer LSTM of 256 at batch 50 x seq 50 had 4,500 page faults, and took
// 0.86x the time with its 10 MiB gate buffers kept here.
constexpr std::size_t LARGE = std::size_t(1) << 20;
// Huge pages from this size on. Smaller blocks are page-aligned: aligned to 2 MiB, the
// several buffers of an LSTM at (N,T,H) = (50,50,256) made its forward+backward 1.1x slower.
constexpr std::size_t HUGE_FROM = std::size_t(32) << 20;
constexpr std::size_t HUGE_PAGE = std::size_t(2) << 20;  // x86-64's huge page
constexpr std::size_t PAGE = std::size_t(4) << 10;
constexpr std::size_t KEEP_AT_MOST = std::size_t(512) << 20;

std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

// Per-thread cache of released blocks under SMALL bytes: at most SMALL_KEPT blocks and
// SMALL_BYTES in all. A thread's cache is freed when the thread ends; t_small_closed (plain
// data, valid for the thread's whole life) then sends later releases to the C library.
// Sanitizer builds keep nothing, so that a use after release is still caught.
constexpr std::size_t SMALL = std::size_t(256) << 10;
constexpr std::size_t SMALL_BYTES = std::size_t(2) << 20;
#if defined(__SANITIZE_ADDRESS__)
constexpr int SMALL_KEPT = 0;
#else
constexpr int SMALL_KEPT = 32;
#endif

thread_local bool t_small_closed = false;

struct SmallCache {
    ScratchBlock blocks[SMALL_KEPT > 0 ? SMALL_KEPT : 1];
    int count = 0;
    std::size_t bytes = 0;
    ~SmallCache() {
        for (int i = 0; i < count; ++i) std::free(blocks[i].p);
        count = 0;
        t_small_closed = true;
    }
};
thread_local SmallCache t_small;

// A kept block of exactly `size` bytes (the most recently released one), or none.
ScratchBlock take_small(std::size_t size) {
    if (t_small_closed) {
        return {};
    }
    SmallCache& c = t_small;
    for (int i = c.count - 1; i >= 0; --i) {
        if (c.blocks[i].bytes == size) {
            const ScratchBlock b = c.blocks[i];
            c.blocks[i] = c.blocks[--c.count];
            c.bytes -= b.bytes;
            return b;
        }
    }
    return {};
}

bool keep_small(ScratchBlock b) {
    if (t_small_closed) {
        return false;
    }
    SmallCache& c = t_small;
    if (c.count >= SMALL_KEPT || c.bytes + b.bytes > SMALL_BYTES) {
        return false;
    }
    c.blocks[c.count++] = b;
    c.bytes += b.bytes;
    return true;
}

struct Pool {
    std::mutex mutex;
    std::vector<ScratchBlock> blocks;  // released, oldest first
    std::size_t kept = 0;
};

// Never destroyed: kernels may release buffers while the process exits.
Pool& pool() {
    static Pool* p = new Pool;
    return *p;
}

#if defined(__unix__) || defined(__APPLE__)
// fork() while another thread holds the pool's lock would leave it locked for good in the
// child: the forking thread takes it first and both sides let it go.
void lock_pool() { pool().mutex.lock(); }
void unlock_pool() { pool().mutex.unlock(); }
const int g_atfork_registered = pthread_atfork(&lock_pool, &unlock_pool, &unlock_pool);
#endif

void* aligned(std::size_t alignment, std::size_t bytes) {
    void* p = std::aligned_alloc(alignment, bytes);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

}  // namespace

ScratchBlock scratch_acquire(std::size_t bytes) {
    if (bytes < LARGE) {
        const std::size_t size = round_up(bytes, ALIGN);
        if (size < SMALL) {
            const ScratchBlock kept = take_small(size);
            if (kept.p != nullptr) return kept;
        }
        return {aligned(ALIGN, size), size};
    }
    const bool huge = bytes >= HUGE_FROM;
    const std::size_t size = round_up(bytes, huge ? HUGE_PAGE : PAGE);
    {
        // The smallest kept block that fits without wasting more than its own size.
        Pool& pl = pool();
        std::lock_guard<std::mutex> lock(pl.mutex);
        auto best = pl.blocks.end();
        for (auto it = pl.blocks.begin(); it != pl.blocks.end(); ++it) {
            if (it->bytes >= size && it->bytes <= 2 * size && (best == pl.blocks.end() || it->bytes < best->bytes)) {
                best = it;
            }
        }
        if (best != pl.blocks.end()) {
            const ScratchBlock b = *best;
            pl.blocks.erase(best);
            pl.kept -= b.bytes;
            return b;
        }
    }
    if (!huge) {
        return {aligned(PAGE, size), size};
    }
    void* p = aligned(HUGE_PAGE, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, size, MADV_HUGEPAGE);  // a hint: without it the block still works
#endif
    return {p, size};
}

void scratch_release(ScratchBlock block) {
    if (block.p == nullptr) {
        return;
    }
    if (block.bytes < LARGE) {
        if (block.bytes >= SMALL || !keep_small(block)) std::free(block.p);
        return;
    }
    std::vector<void*> evicted;
    {
        Pool& pl = pool();
        std::lock_guard<std::mutex> lock(pl.mutex);
        pl.blocks.push_back(block);
        pl.kept += block.bytes;
        while (pl.kept > KEEP_AT_MOST) {  // the oldest go first
            evicted.push_back(pl.blocks.front().p);
            pl.kept -= pl.blocks.front().bytes;
            pl.blocks.erase(pl.blocks.begin());
        }
    }
    for (void* p : evicted) std::free(p);
}

}  // namespace fastrnn
