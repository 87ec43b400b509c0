// Ctrl-C during a long compiled call. While a CtrlCWatch lives, SIGINT sets a stop flag
// that the kernels started from this thread test between time steps (common.hpp:
// team_stopped), then goes on to the handler that was installed before (Python's, which
// records the signal for the interpreter). The bindings release the GIL inside a watch and,
// when it tripped, let Python's handler decide: raise, or run the call again.
#pragma once

#include <atomic>

namespace fastrnn {

class CtrlCWatch {
   public:
    // Watches only when `wanted`, on the process's main thread (where Python runs its
    // signal handlers), and when SIGINT has a handler to pass the signal on to.
    explicit CtrlCWatch(bool wanted);
    ~CtrlCWatch();
    CtrlCWatch(const CtrlCWatch&) = delete;
    CtrlCWatch& operator=(const CtrlCWatch&) = delete;

    bool tripped() const;

   private:
    bool installed_ = false;
    const std::atomic<bool>* outer_ = nullptr;
};

}  // namespace fastrnn
