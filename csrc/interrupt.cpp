#include "interrupt.hpp"

#include "common.hpp"

#if defined(__linux__)
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastrnn {

#if defined(__linux__)

namespace {

// The stop flag and the handler a watch displaced. Only the main thread installs a watch,
// and its calls do not nest, so one of each is enough; static, so that a handler still
// running in another thread as a watch ends never writes to freed memory.
std::atomic<bool> g_stop{false};
struct sigaction g_previous;

extern "C" void on_sigint(int sig, siginfo_t* info, void* context) {
    g_stop.store(true, std::memory_order_relaxed);
    if (g_previous.sa_flags & SA_SIGINFO) {
        g_previous.sa_sigaction(sig, info, context);
    } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
        g_previous.sa_handler(sig);
    }
}

bool on_main_thread() { return syscall(SYS_gettid) == getpid(); }

}  // namespace

CtrlCWatch::CtrlCWatch(bool wanted) : outer_(thread_stop_flag()) {
    if (!wanted || !on_main_thread()) return;
    struct sigaction current;
    if (sigaction(SIGINT, nullptr, &current) != 0) return;
    const bool has_handler = (current.sa_flags & SA_SIGINFO) ||
                             (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN);
    if (!has_handler) return;
    g_previous = current;
    g_stop.store(false, std::memory_order_relaxed);
    struct sigaction mine = current;
    mine.sa_flags = (current.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
    mine.sa_sigaction = &on_sigint;
    if (sigaction(SIGINT, &mine, nullptr) != 0) return;
    installed_ = true;
    thread_stop_flag() = &g_stop;
}

CtrlCWatch::~CtrlCWatch() {
    if (!installed_) return;
    sigaction(SIGINT, &g_previous, nullptr);
    thread_stop_flag() = outer_;
}

bool CtrlCWatch::tripped() const { return installed_ && g_stop.load(std::memory_order_relaxed); }

#else

CtrlCWatch::CtrlCWatch(bool) {}
CtrlCWatch::~CtrlCWatch() {}
bool CtrlCWatch::tripped() const { return false; }

#endif

}  // namespace fastrnn
