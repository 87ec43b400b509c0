// The language model's forward, loss and backward (language_model.hpp), as one chain of
// the existing kernels; each opens its own thread team.
//
// When the recurrence is too small to share (its team would be one thread) and a second
// core is free, the head runs beside it: one thread runs the cells, the other turns the
// steps of the top layer finished so far into scores, loss and dh while the next steps
// run, then forms dWy and dby while the cells run backward. Every product is split by rows only, so
// each value is computed exactly as in the serial chain: the bits do not change.
//
// On a quiet machine that pair is the faster way (min-char-rnn's step: 25 µs, against 34
// on one thread). On a shared one, for minutes at a time, two busy threads each run at
// about half speed and the pair is the slower (40-53 µs). So by default each calling
// thread times both ways now and then, for the shape at hand, and takes the faster.
#include "language_model.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <utility>

#include "gemm.hpp"
#include "sequence.hpp"
#include "training.hpp"

namespace fastrnn {

namespace {

// One call's activations and the stages that produce them.
template <class T>
class Chain {
   public:
    explicit Chain(const LanguageModel<T>& m)
        : m_(m),
          L_(idx(m.layers.size())),
          rows_(m.N * m.steps),
          one_hot_(m.embed == nullptr),
          folded_(!one_hot_ && 2 * m.V <= rows_),
          GH_(gate_count(m.kind.cell) * m.H),
          x_(std::size_t(L_ + 1), nullptr),
          embedded_(one_hot_ || folded_ ? 0 : rows_ * m.E),
          table_(folded_ ? m.V * GH_ : 0),
          scores_(rows_ * m.V),
          dh_(rows_ * m.H),
          dx_(rows_ * (one_hot_ || folded_ ? m.H : std::max(m.H, m.E))) {
        h_.reserve(std::size_t(L_)), ws_.reserve(std::size_t(L_)), masked_.reserve(std::size_t(L_));
        for (idx l = 0; l < L_; ++l) {
            h_.emplace_back(rows_ * m.H);
            ws_.emplace_back(rows_ * workspace_width(m.kind.cell) * m.H);
            masked_.emplace_back(m.layers[std::size_t(l)].mask != nullptr ? rows_ * m.H : 0);
            x_[std::size_t(l + 1)] = masked_.back().size() ? masked_.back().data() : h_.back().data();
        }
    }

    Dims dims(idx l) const { return {m_.N, m_.steps, l > 0 ? m_.H : reads_ids(0) ? m_.V : m_.E, m_.H}; }

    // x[0] (N,T,E): the embedded ids (nothing with one-hot inputs). Folded, the table
    // E·Wx (V,G*H) instead: layer 0 then reads its rows as one-hot inputs read Wx's, the
    // same values, since row v of E·Wx is E[v]·Wx summed in the same order.
    void embed() {
        if (one_hot_) return;
        if (folded_) {
            matmul<T>(m_.V, GH_, m_.E, row_major(m_.embed, m_.E), row_major(m_.layers[0].Wx, GH_), table_.data(), GH_);
            return;
        }
        for (idx r = 0; r < rows_; ++r) {
            std::copy(m_.embed + m_.ids[r] * m_.E, m_.embed + (m_.ids[r] + 1) * m_.E, embedded_.data() + r * m_.E);
        }
        x_[0] = embedded_.data();
    }

    // Layer l reads x[l] (nullptr: the ids) and writes h[l] (N,T,H); x[l+1] is h[l] times
    // its dropout mask, applied here unless `steps` reports each step to a partner that
    // applies it.
    void forward_layer(idx l, Progress* steps) {
        const LanguageModelLayer<T>& p = m_.layers[std::size_t(l)];
        ForwardArgs<T> f{};
        f.dims = dims(l);
        f.x = x_[std::size_t(l)];
        f.ids = reads_ids(l) ? m_.ids : nullptr;
        f.h0 = p.h0, f.c0 = p.c0, f.Wx = on_table(l) ? table_.data() : p.Wx, f.Wh = p.Wh, f.b = p.b, f.bh = p.bh;
        f.h = h_[std::size_t(l)].data(), f.ws = ws_[std::size_t(l)].data(), f.hT = p.hT, f.cT = p.cT;
        f.progress = steps;
        cell_forward(m_.kind, f);
        if (steps == nullptr) mask_rows(l, 0, rows_);
    }

    // The head on all rows at once: scores (N*T,V) = top·Wy + by, the loss, dscores in
    // place of the scores, and dh = dscores·Wyᵀ, the gradient reaching the top layer.
    void head_all() {
        const idx H = m_.H, V = m_.V;
        matmul<T>(rows_, V, H, row_major(top(), H), row_major(m_.Wy, V), scores_.data(), V);
        for (idx r = 0; r < rows_; ++r) add_bias(r);
        loss_ = softmax_cross_entropy<T>(rows_, V, scores_.data(), m_.targets, nullptr, m_.row_scale,
                                         scores_.data());
        matmul<T>(rows_, H, V, row_major(scores_.data(), V), row_major(m_.Wy, V).t(), dh_.data(), H);
    }

    // The same for steps [t0, t1) only (rows n*T + t0 ... n*T + t1 - 1 of each n), with Wy
    // and Wyᵀ from prepare_head_steps(). Rows are independent, so any split into step
    // ranges gives head_all's bits.
    void head_steps(idx t0, idx t1, const PackedB<T>& Wy, const PackedB<T>& WyT) {
        const idx H = m_.H, V = m_.V, steps = t1 - t0;
        for (idx n = 0; n < m_.N; ++n) {
            const idx r0 = n * m_.steps + t0;
            mask_rows(L_ - 1, r0, r0 + steps);
            T* s = scores_.data() + r0 * V;
            gemm<T>(steps, row_major(top() + r0 * H, H), Wy, false, s, V);
            for (idx r = r0; r < r0 + steps; ++r, s += V) {
                add_bias(r);
                nll_[std::size_t(r)] = softmax_cross_entropy_row<T>(V, s, m_.targets[r], m_.row_scale, s);
            }
            gemm<T>(steps, row_major(scores_.data() + r0 * V, V), WyT, false, dh_.data() + r0 * H, H);
        }
    }
    // Wy and Wyᵀ for head_steps, and room for the rows' losses.
    std::pair<PackedB<T>, PackedB<T>> prepare_head_steps() {
        const idx H = m_.H, V = m_.V;
        nll_.assign(std::size_t(rows_), 0.0);
        return {pack_b_for_rows(rows_, H, V, row_major(m_.Wy, V)),
                pack_b_for_rows(rows_, V, H, row_major(m_.Wy, V).t())};
    }
    // After head_steps on every step: the loss, summed in row order as head_all sums it.
    void sum_step_losses() {
        loss_ = 0;
        for (double x : nll_) loss_ += x;
    }

    // dWy = topᵀ·dscores, dby = the column sums of dscores.
    void head_weight_grads() {
        const idx H = m_.H, V = m_.V;
        matmul<T>(H, V, rows_, row_major(top(), H).t(), row_major(scores_.data(), V), m_.dWy, V);
        sum_rows(rows_, 0, V, scores_.data(), V, m_.dby);
    }

    // Top layer first: dh is the gradient reaching x[l+1], turned into the one reaching
    // h[l] by the mask; each layer's dx is the next one's dh.
    void backward_layers() {
        Buffer<T> dh0(m_.N * m_.H), dc0(m_.N * m_.H);
        for (idx l = L_ - 1; l >= 0; --l) {
            const LanguageModelLayer<T>& p = m_.layers[std::size_t(l)];
            if (p.mask != nullptr) {
                T* g = dh_.data();
                for (idx i = 0; i < rows_ * m_.H; ++i) g[i] = g[i] * p.mask[i];
            }
            const bool wants_dx = l > 0 || !reads_ids(0);
            BackwardArgs<T> b{};
            b.dims = dims(l);
            b.x = x_[std::size_t(l)];
            b.ids = reads_ids(l) ? m_.ids : nullptr;
            b.h0 = p.h0, b.c0 = p.c0, b.Wh = p.Wh;
            b.Wx = on_table(l) ? nullptr : p.Wx;  // with ids (no dx) Wx is not read
            b.h = h_[std::size_t(l)].data(), b.ws = ws_[std::size_t(l)].data();
            b.dh = dh_.data();
            b.dx = wants_dx ? dx_.data() : nullptr;
            b.dh0 = dh0.data(), b.dc0 = m_.kind.cell == Cell::lstm ? dc0.data() : nullptr;
            b.dWx = on_table(l) ? table_.data() : p.dWx, b.dWh = p.dWh, b.db = p.db, b.dbh = p.dbh;
            cell_backward(m_.kind, b);
            if (team_stopped()) return;
            std::swap(dh_, dx_);
        }
        if (folded_) {  // table holds S (V,G*H), dA's rows summed by id: dWx = Eᵀ·S, dE = S·Wxᵀ
            const LanguageModelLayer<T>& p = m_.layers[0];
            matmul<T>(m_.E, GH_, m_.V, row_major(m_.embed, m_.E).t(), row_major(table_.data(), GH_), p.dWx, GH_);
            matmul<T>(m_.V, m_.E, GH_, row_major(table_.data(), GH_), row_major(p.Wx, GH_).t(), m_.dembed, m_.E);
        } else if (!one_hot_) {  // dh now holds the gradient reaching the embedded rows (N,T,E)
            std::fill(m_.dembed, m_.dembed + m_.V * m_.E, T(0));
            embedding_backward<T>(rows_, m_.E, m_.ids, dh_.data(), m_.dembed);
        }
    }

    double loss() const { return loss_; }

   private:
    const T* top() const { return x_[std::size_t(L_)]; }
    bool on_table(idx l) const { return l == 0 && folded_; }  // layer l reads rows of E·Wx
    bool reads_ids(idx l) const { return l == 0 && (one_hot_ || folded_); }

    void add_bias(idx r) {
        T* s = scores_.data() + r * m_.V;
        for (idx j = 0; j < m_.V; ++j) s[j] += m_.by[j];
    }

    // x[l+1] = h[l] * mask for rows [r0, r1), when layer l has a mask.
    void mask_rows(idx l, idx r0, idx r1) {
        const T* mask = m_.layers[std::size_t(l)].mask;
        if (mask == nullptr) return;
        const T* in = h_[std::size_t(l)].data();
        T* out = masked_[std::size_t(l)].data();
        for (idx i = r0 * m_.H; i < r1 * m_.H; ++i) out[i] = in[i] * mask[i];
    }

    const LanguageModel<T>& m_;
    const idx L_, rows_;
    const bool one_hot_;
    // With an embedding and at most half as many tokens as rows, layer 0's input side runs
    // on the table E·Wx: three products of V rows instead of N*T (x·Wx, dWx, dx).
    const bool folded_;
    const idx GH_;
    std::vector<const T*> x_;  // x[l]: layer l's input; x[L]: the head's
    Buffer<T> embedded_;
    Buffer<T> table_;  // folded: E·Wx (V,G*H), then in backward S
    std::vector<Buffer<T>> h_, ws_, masked_;
    Buffer<T> scores_;  // (N*T,V): the scores, then dscores
    std::vector<double> nll_;  // per row, with head_steps
    Buffer<T> dh_, dx_;
    double loss_ = 0;
};

// The whole call, stage after stage, each kernel with its own team.
// A Ctrl-C abandons it between stages, never once the update has begun.
template <class T>
void run_serially(const LanguageModel<T>& m, Chain<T>& chain) {
    for (idx l = 0; l < idx(m.layers.size()); ++l) {
        chain.forward_layer(l, nullptr);
        if (team_stopped()) return;
    }
    chain.head_all();
    chain.head_weight_grads();
    chain.backward_layers();
    if (team_stopped()) return;
    if (m.update != nullptr) optimizer_update(*m.update, m.update_arrays);
}

// The head on a second thread beside the cells (see the top of this file).
template <class T>
void head_beside_cells(const LanguageModel<T>& m, Chain<T>& chain) {
    const idx L = idx(m.layers.size());
    // With an update, the head's own parameters (Wy and by, last) are updated as soon as
    // their gradients are, during backward; the rest is shared once backward ends.
    idx total = 0;
    for (idx n : m.update_arrays.n) total += n;
    const idx head = total - (m.H * m.V + m.V), half = head / 2;
    const auto update = [&](idx begin, idx end) {
        if (m.update != nullptr) optimizer_update_range(*m.update, m.update_arrays, begin, end);
    };
    Progress top_steps, head_done, cells_done;
    NoStop whole_call;  // a partner waits on the cells' steps: neither may stop halfway
    run_team(2, [&] {
        if (team_size() < 2) {  // the runtime gave one thread (inside another team, say)
            run_serially(m, chain);
        } else if (team_rank() == 0) {
            // Each member in a team of its own: the kernels it calls share work only there.
            run_team(1, [&] {
                for (idx l = 0; l < L; ++l) chain.forward_layer(l, l == L - 1 ? &top_steps : nullptr);
                head_done.wait_for(1);
                chain.backward_layers();
                cells_done.publish(1);
                update(0, half);
            });
        } else {
            run_team(1, [&] {
                const auto [Wy, WyT] = chain.prepare_head_steps();
                // Every step finished since the last pass, in one pass: products of a
                // few rows at a time, and the head keeps up with the cells.
                for (idx t = 0; t < m.steps;) {
                    const idx done = top_steps.wait_for(int(t + 1));
                    chain.head_steps(t, done, Wy, WyT);
                    t = done;
                }
                chain.sum_step_losses();
                head_done.publish(1);
                chain.head_weight_grads();
                update(head, total);
                if (m.update != nullptr) {
                    cells_done.wait_for(1);
                    update(half, head);
                }
            });
        }
    });
}

// Per calling thread: the times of the last calls run each way (the head beside the
// cells, or everything on this thread alone), for one shape. Until each way has WARM
// timed calls it alternates; then it takes the way of the lower median of its last KEEP
// times (one slow call, an interrupt say, does not move a median). Now and then it runs
// PROBE calls the other way, whose time may have changed with the machine's load: after
// RECHECK calls, then twice as many after each probe that finds it still the slower (up to
// MAX_RECHECK), since a slow way's probes cost time, and a partner thread woken by one
// spins for a while beside the calls that follow. The first call of each way is not
// timed, nor are a probe's first calls: they pay for what the other way left cold (buffers
// to allocate, a partner thread asleep, a core that idled at a low clock); its last KEEP
// calls replace the way's times.
class BesideOrAlone {
   public:
    using Shape = std::array<idx, 6>;

    bool beside(const Shape& shape) {
        if (shape != shape_) {
            *this = BesideOrAlone();
            shape_ = shape;
        }
        ++calls_;
        if (timed_[0] < WARM || timed_[1] < WARM) return timed_[1] <= timed_[0];
        if (probe_left_ > 0) {
            --probe_left_;
            return probe_beside_;
        }
        const bool faster = median(1) <= median(0);
        if (probed_) {  // a probe just ended
            probed_ = false;
            interval_ = faster == probe_beside_ ? RECHECK : std::min(2 * interval_, MAX_RECHECK);
            next_probe_ = calls_ + interval_;
        }
        if (calls_ >= next_probe_) {
            probe_beside_ = !faster;
            probe_left_ = PROBE - 1;
            probed_ = true;
            untimed_ = PROBE - KEEP;
            return probe_beside_;
        }
        return faster;
    }

    void record(bool beside, double seconds) {
        const int way = beside ? 1 : 0;
        if (seen_[way]++ == 0) return;
        if (untimed_ > 0) {
            --untimed_;
            return;
        }
        last_[way][timed_[way]++ % KEEP] = seconds;
    }

    HeadBesideStats stats() const {
        return {seen_[1], seen_[0], timed_[1] ? median(1) : 0.0, timed_[0] ? median(0) : 0.0};
    }

   private:
    static constexpr int WARM = 3, KEEP = 5, PROBE = 16;
    static constexpr long RECHECK = 256, MAX_RECHECK = 16384;

    double median(int way) const {
        const int n = int(std::min<long>(timed_[way], KEEP));
        std::array<double, KEEP> t{};
        std::copy(last_[way], last_[way] + n, t.begin());
        std::nth_element(t.begin(), t.begin() + n / 2, t.begin() + n);
        return t[std::size_t(n / 2)];
    }

    Shape shape_{};
    double last_[2][KEEP] = {};
    long timed_[2] = {0, 0}, seen_[2] = {0, 0};
    long calls_ = 0, interval_ = RECHECK, next_probe_ = RECHECK;
    int probe_left_ = 0, untimed_ = 0;
    bool probe_beside_ = false, probed_ = false;
};

thread_local BesideOrAlone t_way;
std::atomic<int> g_head_beside{int(HeadBeside::timed)};

}  // namespace

void set_head_beside(HeadBeside mode) { g_head_beside.store(int(mode)); }
HeadBeside get_head_beside() { return HeadBeside(g_head_beside.load()); }
HeadBesideStats head_beside_stats() { return t_way.stats(); }

bool head_runs_beside_cells(Cell cell, idx N, idx steps, idx H) {
    return get_head_beside() != HeadBeside::never && num_threads() >= 2 && !forked_after_pool() && N > 0 &&
           steps > 1 && sequence_threads({N, steps, H, H}, gate_count(cell)) == 1;
}

template <class T>
double language_model_loss(const LanguageModel<T>& m) {
    Chain<T> chain(m);
    chain.embed();
    if (!head_runs_beside_cells(m.kind.cell, m.N, m.steps, m.H)) {
        run_serially(m, chain);
        return chain.loss();
    }
    if (get_head_beside() == HeadBeside::timed) {
        const BesideOrAlone::Shape shape{idx(m.kind.cell), m.N, m.steps, m.H, m.V, idx(m.layers.size())};
        const bool beside = t_way.beside(shape);
        const auto start = std::chrono::steady_clock::now();
        if (beside) {
            head_beside_cells(m, chain);
        } else {
            OneThreadHere alone;
            run_serially(m, chain);
        }
        t_way.record(beside, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    } else {
        head_beside_cells(m, chain);
    }
    return chain.loss();
}

template <class T>
void language_model_chunks(const LanguageModel<T>& m, idx K, const std::vector<std::vector<const T*>>& masks,
                           const std::vector<UpdateRule>& rules, double* losses) {
    const idx L = idx(m.layers.size()), NH = m.N * m.H, NT = m.N * m.steps;
    const bool lstm = m.kind.cell == Cell::lstm;
    // Chunk k writes its final state into one of two buffers and chunk k+1 starts from it:
    // a chunk reads its initial state until its backward ends.
    Buffer<T> states[2] = {Buffer<T>(2 * L * NH), Buffer<T>(2 * L * NH)};  // h (L,N,H), then c
    LanguageModel<T> chunk = m;
    std::optional<NoStop> committed;  // once a chunk has updated the parameters, run to the end
    for (idx k = 0; k < K; ++k) {
        chunk.ids = m.ids + k * NT;
        chunk.targets = m.targets + k * NT;
        chunk.update = rules.empty() ? nullptr : &rules[std::size_t(k)];
        T* out = states[k % 2].data();
        for (idx l = 0; l < L; ++l) {
            LanguageModelLayer<T>& layer = chunk.layers[std::size_t(l)];
            const LanguageModelLayer<T>& given = m.layers[std::size_t(l)];
            layer.mask = masks.empty() || l == L - 1 ? nullptr : masks[std::size_t(k)][std::size_t(l)];
            if (k > 0) {
                const T* in = states[(k - 1) % 2].data();
                layer.h0 = in + l * NH;
                layer.c0 = lstm ? in + (L + l) * NH : nullptr;
            }
            const bool last = k == K - 1;
            layer.hT = last ? given.hT : out + l * NH;
            layer.cT = !lstm ? nullptr : last ? given.cT : out + (L + l) * NH;
        }
        losses[k] = language_model_loss(chunk);
        if (team_stopped()) return;  // Ctrl-C before any update: the caller discards the call
        if (chunk.update != nullptr && !committed) committed.emplace();
    }
    for (idx l = 0; K == 0 && l < L; ++l) {  // no chunk: the final state is the initial one
        const LanguageModelLayer<T>& layer = m.layers[std::size_t(l)];
        std::copy(layer.h0, layer.h0 + NH, layer.hT);
        if (lstm) std::copy(layer.c0, layer.c0 + NH, layer.cT);
    }
}

template double language_model_loss<float>(const LanguageModel<float>&);
template double language_model_loss<double>(const LanguageModel<double>&);
template void language_model_chunks<float>(const LanguageModel<float>&, idx,
                                           const std::vector<std::vector<const float*>>&,
                                           const std::vector<UpdateRule>&, double*);
template void language_model_chunks<double>(const LanguageModel<double>&, idx,
                                            const std::vector<std::vector<const double*>>&,
                                            const std::vector<UpdateRule>&, double*);

}  // namespace fastrnn
