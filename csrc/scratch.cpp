// The scratch allocator behind Buffer (common.hpp): blocks under 32 MiB straight from the C
// library, larger ones as huge pages kept in a pool after release.
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common.hpp"

namespace fastrnn {
namespace {

constexpr std::size_t ALIGN = 64;
// Pooled from this size on. Smaller blocks go back to the C library, whose heap reuses them
// (and lets NumPy's arrays reuse them) without new page faults; glibc maps blocks from 32
// MiB on afresh every time (its largest mmap threshold), so those are the ones to keep.
constexpr std::size_t LARGE = std::size_t(32) << 20;
constexpr std::size_t HUGE_PAGE = std::size_t(2) << 20;  // x86-64's huge page
constexpr std::size_t KEEP_AT_MOST = std::size_t(512) << 20;

std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

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
        return {aligned(ALIGN, size), size};
    }
    const std::size_t size = round_up(bytes, HUGE_PAGE);
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
        std::free(block.p);
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
