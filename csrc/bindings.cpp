// pybind11 module fastrnn._core: argument checks, array allocation and GIL release.
// No math lives here; it is all in the cell kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cells.hpp"
#include "gemm.hpp"
#include "interrupt.hpp"
#include "language_model.hpp"
#include "training.hpp"

namespace py = pybind11;
using namespace fastrnn;

namespace {

// ---------------------------------------------------------------- long calls

// Runs a kernel of about `flops` with the GIL released, under a CtrlCWatch when it is long
// enough for a person to wait on. After a Ctrl-C the kernel has stopped early and its
// results are void; Python's handler then runs: its exception (KeyboardInterrupt by
// default) propagates, and a handler that returns has the call run again from the start
// (its inputs are untouched until it completes).
template <class F>
void run_released(double flops, F&& kernel) {
    constexpr double WATCHED_FLOPS = 1e7;  // shorter calls end within a millisecond or so
    for (;;) {
        CtrlCWatch watch(flops >= WATCHED_FLOPS);
        {
            py::gil_scoped_release release;
            kernel();
        }
        if (!watch.tripped()) return;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

// ---------------------------------------------------------------- checks

std::string shape_str(const std::vector<idx>& shape) {
    std::ostringstream s;
    s << "(";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        s << (i ? ", " : "") << shape[i];
    }
    s << (shape.size() == 1 ? ",)" : ")");
    return s.str();
}

std::vector<idx> shape_of(const py::array& a) {
    return std::vector<idx>(a.shape(), a.shape() + a.ndim());
}

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// numpy.ndarray, numpy.ma.MaskedArray and numpy.asarray, looked up by the module's import
// (see PYBIND11_MODULE) and released on purpose, so they outlive the interpreter's teardown
// order. Not function-local statics: the first call would then import numpy.ma, which lets
// go of the GIL midway, and a second thread's first call, waiting for that static while
// holding the GIL, would deadlock both.
struct NumpyHandles {
    py::handle ndarray, masked, asarray;
};
NumpyHandles g_numpy;

void look_up_numpy() {
    g_numpy.ndarray = py::object(py::module_::import("numpy").attr("ndarray")).release();
    g_numpy.masked = py::object(py::module_::import("numpy.ma").attr("MaskedArray")).release();
    g_numpy.asarray = py::object(py::module_::import("numpy").attr("asarray")).release();
    (void)py::dtype::of<float>();  // pybind11's own NumPy table, filled on first use, likewise
}

// Any array-like (array, list, scalar) as an ndarray, without changing its dtype.
py::array as_array(py::handle obj, const std::string& name) {
    const py::handle ndarray = g_numpy.ndarray, masked = g_numpy.masked, asarray = g_numpy.asarray;
    if (py::type::handle_of(obj).is(ndarray)) {
        return py::reinterpret_borrow<py::array>(obj);
    }
    if (obj.is_none()) {
        throw py::type_error(name + " must be an array, got None");
    }
    if (py::isinstance(obj, masked)) {
        throw py::type_error(name + " is a masked array; fastrnn would ignore its mask: pass "
                             "a plain array (for example " + name + ".filled())");
    }
    py::object arr;
    try {
        arr = asarray(obj);  // lists, scalars, and ndarray subclasses such as np.matrix
    } catch (py::error_already_set&) {
        throw py::type_error(name + " must be an array, got " + type_name(obj));
    }
    return py::reinterpret_borrow<py::array>(arr);
}

bool is_float_dtype(const py::array& a) {
    const int num = a.dtype().num();
    return num == py::dtype::of<float>().num() || num == py::dtype::of<double>().num();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()); }

idx checked_product(const std::vector<idx>& dims) {
    idx p = 1;
    for (idx d : dims) {
        if (d != 0 && p > INT64_MAX / d) {
            throw py::value_error("array sizes overflow 64 bits: " + shape_str(dims));
        }
        p *= d;
    }
    return p;
}

// Checks that `arr` has `expected` shape; `symbols` spells it out, e.g. "(N, T, D)".
void expect_shape(const py::array& arr, const std::string& name, const std::vector<idx>& expected,
                  const std::string& symbols) {
    if (arr.ndim() != py::ssize_t(expected.size())) {
        throw py::value_error(name + " must be " + std::to_string(expected.size()) + "-D with shape " +
                              symbols + " = " + shape_str(expected) + ", got a " +
                              std::to_string(arr.ndim()) + "-D array of shape " + shape_str(shape_of(arr)));
    }
    if (shape_of(arr) != expected) {
        throw py::value_error(name + " must have shape " + symbols + " = " + shape_str(expected) +
                              ", got " + shape_str(shape_of(arr)));
    }
}

template <class T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

// The float arrays of one call: all must share the dtype of the first one checked.
class FloatArgs {
   public:
    explicit FloatArgs(const py::array& first, const std::string& first_name)
        : first_name_(first_name), dtype_(first.dtype()) {
        if (!is_float_dtype(first)) {
            throw py::type_error(first_name + " must be a float32 or float64 array, got dtype " +
                                 dtype_str(first));
        }
        is_double_ = dtype_.num() == py::dtype::of<double>().num();
    }

    bool is_double() const { return is_double_; }

    py::array take(py::handle obj, const std::string& name) const {
        py::array a = as_array(obj, name);
        if (!is_float_dtype(a) || a.dtype().num() != dtype_.num()) {
            throw py::type_error(name + " has dtype " + dtype_str(a) + " but " + first_name_ +
                                 " has " + py::str(dtype_).cast<std::string>() +
                                 "; all arrays of one call must share a float dtype (no silent cast)");
        }
        return a;
    }

    // A C-contiguous version (a copy only when needed; never a dtype change).
    template <class T>
    static CArray<T> contiguous(const py::array& a) {
        // C-contiguous, aligned and in native byte order; a copy only when needed. Unlike
        // array_t::ensure, a failure (MemoryError for an absurd size) propagates.
        auto& api = py::detail::npy_api::get();
        const int flags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                          py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_ | py::detail::npy_api::NPY_ARRAY_FORCECAST_;
        PyObject* out = api.PyArray_FromAny_(a.ptr(), py::dtype::of<T>().release().ptr(), 0, 0, flags, nullptr);
        if (out == nullptr) {
            throw py::error_already_set();
        }
        return py::reinterpret_steal<CArray<T>>(out);
    }

   private:
    std::string first_name_;
    py::dtype dtype_;
    bool is_double_ = false;
};

bool is_int_dtype(const py::array& a) {
    const char kind = a.dtype().kind();
    return kind == 'i' || kind == 'u';
}

// An integer taken from `raw` into int64 (same bits), as `raw` holds it: a uint64 past
// INT64_MAX reads as itself in a message, not as the negative number it became.
std::string int_str(const py::array& raw, std::int64_t v) {
    const bool u64 = raw.dtype().kind() == 'u' && raw.itemsize() == 8;
    return u64 ? std::to_string(static_cast<std::uint64_t>(v)) : std::to_string(v);
}

// Integer ids as a C-contiguous int64 array (a copy only when needed), each in [0, limit)
// wherever checked(flat index) holds. `context` follows the range in the error message.
template <class Checked>
py::array_t<std::int64_t> checked_ids(const py::array& raw, const std::string& name, idx limit,
                                      const std::string& context, Checked checked) {
    if (!is_int_dtype(raw)) {
        throw py::type_error(name + " must be an integer array, got dtype " + dtype_str(raw));
    }
    auto ids = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(raw);
    if (!ids) throw py::error_already_set();
    const std::int64_t* p = ids.data();
    for (idx i = 0; i < idx(ids.size()); ++i) {
        if (checked(i) && (p[i] < 0 || p[i] >= limit)) {
            std::string at;  // i as a multi-index
            for (idx k = ids.ndim() - 1, rest = i; k >= 0; rest /= ids.shape(k), --k) {
                at = std::to_string(rest % ids.shape(k)) + (at.empty() ? "" : ", ") + at;
            }
            throw py::value_error(name + " must lie in [0, " + std::to_string(limit) + ")" + context + ", got " +
                                  name + "[" + at + "] = " + int_str(raw, p[i]));
        }
    }
    return ids;
}

// ---------------------------------------------------------------- cells

struct CellSpec {
    std::string name;
    Cell cell;
    idx gates;      // G
    bool has_c;     // LSTM
    bool has_bh;    // GRU
};

CellSpec cell_spec(const std::string& cell) {
    if (cell == "rnn") return {"rnn", Cell::rnn, 1, false, false};
    if (cell == "lstm") return {"lstm", Cell::lstm, 4, true, false};
    if (cell == "gru") return {"gru", Cell::gru, 3, false, true};
    throw py::value_error("cell must be 'rnn', 'lstm' or 'gru', got '" + cell + "'");
}

Activation parse_nonlinearity(py::handle obj) {
    if (py::isinstance<py::str>(obj)) {
        const std::string s = py::str(obj);
        if (s == "tanh") return Activation::tanh;
        if (s == "relu") return Activation::relu;
    }
    throw py::value_error("nonlinearity must be 'tanh' or 'relu', got " +
                          py::repr(obj).cast<std::string>());
}

// What forward leaves for backward. Opaque to users.
struct Cache {
    CellSpec spec;
    Activation act = Activation::tanh;
    bool reset_after = true;
    bool step = false;  // from a *_step_forward call
    bool is_double = false;
    Dims dims{};
    py::array x, h0, c0, Wx, Wh, h;
    std::optional<py::array_t<std::int64_t>> ids;  // token ids given in place of x
    // The gates and other per-step values backward needs: (N,T,workspace_width*H) of the dtype,
    // from the scratch pool, so a training loop reuses the previous step's pages.
    Buffer<unsigned char> ws;
    std::optional<py::array_t<std::int64_t>> lengths;

    std::string repr() const {
        std::ostringstream s;
        s << "<fastrnn " << (step ? "step " : "") << "cache: " << spec.name << " "
          << (is_double ? "float64" : "float32") << " N=" << dims.N << " T=" << dims.T
          << " D=" << dims.D << " H=" << dims.H << ">";
        return s.str();
    }
};

template <class T>
const T* ptr(const py::array& a) {
    return static_cast<const T*>(a.data());
}
template <class T>
T* mut(py::array& a) {
    return static_cast<T*>(a.mutable_data());
}

template <class T>
py::array empty(const std::vector<idx>& shape) {
    checked_product(shape);
    return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

template <class T>
py::array zeros(const std::vector<idx>& shape) {
    py::array a = empty<T>(shape);
    std::fill(mut<T>(a), mut<T>(a) + a.size(), T(0));
    return a;
}

// A new C-contiguous array with a's values.
template <class T>
py::array copy_of(const py::array& a) {
    py::array out = empty<T>(shape_of(a));
    const CArray<T> src = FloatArgs::contiguous<T>(a);
    std::copy(src.data(), src.data() + src.size(), mut<T>(out));
    return out;
}

struct ForwardInputs {
    CellSpec spec;
    Activation act;
    bool reset_after;
    bool step;
    const char* x_symbols;  // "(N, T, D)" or "(N, D)"
    py::array x;            // always seen as (N, T, D), or as (N, T) token ids
    py::object h0, c0, Wx, Wh, b, bh, lengths;
    std::string h0_name, c0_name;
};

template <class T>
py::tuple run_forward(ForwardInputs in, const FloatArgs& args) {
    const CellSpec& spec = in.spec;
    const bool with_ids = is_int_dtype(in.x);
    const idx N = in.x.shape(0), Tn = in.x.shape(1);
    idx D = with_ids ? 0 : in.x.shape(2);
    if (with_ids) {
        const py::array Wx_arr = args.take(in.Wx, "Wx");
        if (Wx_arr.ndim() != 2) {
            throw py::value_error("Wx must be 2-D with shape (D, G*H), got shape " + shape_str(shape_of(Wx_arr)));
        }
        D = Wx_arr.shape(0);  // the vocabulary: x is one-hot
    }

    py::array Wh = args.take(in.Wh, "Wh");
    if (Wh.ndim() != 2) {
        throw py::value_error("Wh must be 2-D with shape (H, " + std::to_string(spec.gates) +
                              "*H), got a " + std::to_string(Wh.ndim()) + "-D array of shape " +
                              shape_str(shape_of(Wh)));
    }
    const idx H = Wh.shape(0);
    const idx GH = spec.gates * H;
    const std::string G = spec.gates == 1 ? "H" : std::to_string(spec.gates) + "*H";
    expect_shape(Wh, "Wh", {H, GH}, "(H, " + G + ")");
    py::array Wx = args.take(in.Wx, "Wx");
    expect_shape(Wx, "Wx", {D, GH}, "(D, " + G + ")");
    py::array b = args.take(in.b, "b");
    expect_shape(b, "b", {GH}, "(" + G + ",)");
    py::array bh;
    if (spec.has_bh) {
        bh = args.take(in.bh, "bh");
        expect_shape(bh, "bh", {GH}, "(" + G + ",)");
    }
    py::array h0, c0;
    if (in.h0.is_none()) {
        h0 = zeros<T>({N, H});
    } else {
        h0 = args.take(in.h0, in.h0_name);
        expect_shape(h0, in.h0_name, {N, H}, "(N, H)");
    }
    if (spec.has_c) {
        if (in.c0.is_none()) {
            c0 = zeros<T>({N, H});
        } else {
            c0 = args.take(in.c0, in.c0_name);
            expect_shape(c0, in.c0_name, {N, H}, "(N, H)");
        }
    }
    std::optional<py::array_t<std::int64_t>> lengths;
    if (!in.lengths.is_none()) {
        py::array raw = as_array(in.lengths, "lengths");
        if (!is_int_dtype(raw)) {
            throw py::type_error("lengths must be an integer array, got dtype " + dtype_str(raw));
        }
        expect_shape(raw, "lengths", {N}, "(N,)");
        // A private copy: later changes to the caller's array cannot reach the cache.
        lengths = py::array_t<std::int64_t>(py::module_::import("numpy").attr("array")(raw, "int64"));
        const std::int64_t* l = lengths->data();
        for (idx n = 0; n < N; ++n) {
            if (l[n] < 0 || l[n] > Tn) {
                throw py::value_error("lengths must lie in [0, T] = [0, " + std::to_string(Tn) +
                                      "], got lengths[" + std::to_string(n) + "] = " + int_str(raw, l[n]));
            }
        }
    }

    auto cache = std::make_unique<Cache>();
    cache->spec = spec;
    cache->act = in.act;
    cache->reset_after = in.reset_after;
    cache->step = in.step;
    cache->is_double = std::is_same<T, double>::value;
    cache->dims = {N, Tn, D, H};
    if (with_ids) {
        const std::int64_t* len = lengths ? lengths->data() : nullptr;  // padding is not read
        cache->ids = checked_ids(in.x, "x", D, " (x holds token ids; D = Wx.shape[0])",
                                 [&](idx i) { return len == nullptr || i % Tn < len[i / Tn]; });
    } else {
        cache->x = FloatArgs::contiguous<T>(in.x);
    }
    cache->h0 = copy_of<T>(h0);  // small: a private copy, safe from later changes
    cache->Wx = FloatArgs::contiguous<T>(Wx);
    cache->Wh = FloatArgs::contiguous<T>(Wh);
    if (spec.has_c) cache->c0 = copy_of<T>(c0);
    cache->lengths = lengths;
    py::array bc = FloatArgs::contiguous<T>(b);
    py::array bhc = spec.has_bh ? py::array(FloatArgs::contiguous<T>(bh)) : py::array();

    cache->h = empty<T>({N, Tn, H});
    cache->ws = Buffer<unsigned char>(checked_product({N, Tn, workspace_width(spec.cell) * H, idx(sizeof(T))}));
    py::array hT = empty<T>({N, H});
    py::array cT = spec.has_c ? empty<T>({N, H}) : py::array();

    ForwardArgs<T> a{};
    a.dims = cache->dims;
    a.lengths.len = lengths ? lengths->data() : nullptr;
    a.x = with_ids ? nullptr : ptr<T>(cache->x);
    a.ids = with_ids ? cache->ids->data() : nullptr;
    a.h0 = ptr<T>(cache->h0);
    a.c0 = spec.has_c ? ptr<T>(cache->c0) : nullptr;
    a.Wx = ptr<T>(cache->Wx);
    a.Wh = ptr<T>(cache->Wh);
    a.b = ptr<T>(bc);
    a.bh = spec.has_bh ? ptr<T>(bhc) : nullptr;
    a.h = mut<T>(cache->h);
    a.ws = reinterpret_cast<T*>(cache->ws.data());
    a.hT = mut<T>(hT);
    a.cT = spec.has_c ? mut<T>(cT) : nullptr;
    run_released(2.0 * double(N * Tn) * double(D + H) * double(spec.gates * H),
                 [&] { cell_forward(CellKind{spec.cell, in.act, in.reset_after}, a); });
    // The caller gets its own h: changing it must not change what backward sees.
    py::array h = copy_of<T>(cache->h);
    return py::make_tuple(h, hT, spec.has_c ? py::object(cT) : py::none(), py::cast(std::move(cache)));
}

template <class T>
py::tuple run_backward(Cache& c, py::object dh_obj, py::object dhT_obj, py::object dcT_obj,
                       const std::string& dh_name, const std::string& dhT_name,
                       const std::string& dcT_name) {
    const Dims d = c.dims;
    const idx GH = c.spec.gates * d.H;
    const FloatArgs args(c.Wx, "the forward weights Wx");
    // A default py::array is an empty array, not a null handle: keep "absent" explicit.
    const bool has_dh = !dh_obj.is_none(), has_dhT = !dhT_obj.is_none(), has_dcT = !dcT_obj.is_none();
    py::array dh, dhT, dcT;
    if (has_dh) {
        dh = args.take(dh_obj, dh_name);
        expect_shape(dh, dh_name, {d.N, d.T, d.H}, "(N, T, H)");
        dh = FloatArgs::contiguous<T>(dh);
    }
    if (has_dhT) {
        dhT = args.take(dhT_obj, dhT_name);
        expect_shape(dhT, dhT_name, {d.N, d.H}, "(N, H)");
        dhT = FloatArgs::contiguous<T>(dhT);
    }
    if (has_dcT) {
        if (!c.spec.has_c) {
            throw py::value_error(dcT_name + " is only defined for the LSTM, not for a " + c.spec.name);
        }
        dcT = args.take(dcT_obj, dcT_name);
        expect_shape(dcT, dcT_name, {d.N, d.H}, "(N, H)");
        dcT = FloatArgs::contiguous<T>(dcT);
    }

    const bool with_ids = c.ids.has_value();  // then x has no gradient
    py::array dx = with_ids ? py::array() : empty<T>({d.N, d.T, d.D}), dh0 = empty<T>({d.N, d.H});
    py::array dWx = empty<T>({d.D, GH}), dWh = empty<T>({d.H, GH}), db = empty<T>({GH});
    py::array dc0 = c.spec.has_c ? empty<T>({d.N, d.H}) : py::array();
    py::array dbh = c.spec.has_bh ? empty<T>({GH}) : py::array();

    BackwardArgs<T> a{};
    a.dims = d;
    a.lengths.len = c.lengths ? c.lengths->data() : nullptr;
    a.x = with_ids ? nullptr : ptr<T>(c.x);
    a.ids = with_ids ? c.ids->data() : nullptr;
    a.h0 = ptr<T>(c.h0);
    a.c0 = c.spec.has_c ? ptr<T>(c.c0) : nullptr;
    a.Wx = ptr<T>(c.Wx);
    a.Wh = ptr<T>(c.Wh);
    a.h = ptr<T>(c.h);
    a.ws = reinterpret_cast<const T*>(c.ws.data());
    a.dh = has_dh ? ptr<T>(dh) : nullptr;
    a.dhT = has_dhT ? ptr<T>(dhT) : nullptr;
    a.dcT = has_dcT ? ptr<T>(dcT) : nullptr;
    a.dx = with_ids ? nullptr : mut<T>(dx);
    a.dh0 = mut<T>(dh0);
    a.dc0 = c.spec.has_c ? mut<T>(dc0) : nullptr;
    a.dWx = mut<T>(dWx);
    a.dWh = mut<T>(dWh);
    a.db = mut<T>(db);
    a.dbh = c.spec.has_bh ? mut<T>(dbh) : nullptr;
    run_released(4.0 * double(d.N * d.T) * double(d.D + d.H) * double(GH),
                 [&] { cell_backward(CellKind{c.spec.cell, c.act, c.reset_after}, a); });
    auto opt = [](bool has, py::array& arr) { return has ? py::object(arr) : py::object(py::none()); };
    return py::make_tuple(opt(!with_ids, dx), dh0, opt(c.spec.has_c, dc0), dWx, dWh, db, opt(c.spec.has_bh, dbh));
}

py::tuple forward_dispatch(ForwardInputs in) {
    if (is_int_dtype(in.x)) {  // token ids: the dtype is the weights'
        const FloatArgs args(as_array(in.Wx, "Wx"), "Wx");
        return args.is_double() ? run_forward<double>(std::move(in), args) : run_forward<float>(std::move(in), args);
    }
    const FloatArgs args(in.x, "x");
    in.x = args.take(in.x, "x");
    if (args.is_double()) return run_forward<double>(std::move(in), args);
    return run_forward<float>(std::move(in), args);
}

Cache& expect_cache(py::handle obj, const std::string& cell, bool step) {
    if (!py::isinstance<Cache>(obj)) {
        throw py::type_error("cache must be the cache returned by a fastrnn " + cell +
                             " forward call, got " + type_name(obj));
    }
    Cache& c = obj.cast<Cache&>();
    if (c.spec.name != cell) {
        throw py::type_error("cache comes from a " + c.spec.name + " forward call, but this is the " +
                             cell + " backward");
    }
    if (step && !c.step) {
        throw py::type_error("cache comes from a sequence forward call (T=" + std::to_string(c.dims.T) +
                             "); a step backward needs the cache of a step forward");
    }
    if (!step && c.step) {
        throw py::type_error("cache comes from a step forward call; this backward needs the cache of "
                             "a sequence forward call");
    }
    return c;
}

// ---------------------------------------------------------------- entry points

py::tuple sequence_forward(const std::string& cell, py::object x, py::object h0, py::object c0,
                           py::object Wx, py::object Wh, py::object b, py::object bh,
                           py::object lengths, py::object nonlinearity, bool reset_after) {
    const CellSpec spec = cell_spec(cell);
    ForwardInputs in{spec, parse_nonlinearity(nonlinearity), reset_after, false, "(N, T, D)", {}, h0, c0, Wx, Wh, b, bh, lengths, "h0", "c0"};
    in.x = as_array(x, "x");
    if (is_int_dtype(in.x) && in.x.ndim() != 2) {
        throw py::type_error("x must be a float32 or float64 array, got dtype " + dtype_str(in.x) + " of shape " +
                             shape_str(shape_of(in.x)) + " (an integer x holds token ids, with shape (N, T))");
    }
    if (!is_int_dtype(in.x) && in.x.ndim() != 3) {
        throw py::value_error("x must be 3-D with shape (N, T, D), got a " + std::to_string(in.x.ndim()) +
                              "-D array of shape " + shape_str(shape_of(in.x)));
    }
    return forward_dispatch(std::move(in));
}

py::tuple step_forward(const std::string& cell, py::object x, py::object prev_h, py::object prev_c,
                       py::object Wx, py::object Wh, py::object b, py::object bh,
                       py::object nonlinearity, bool reset_after) {
    const CellSpec spec = cell_spec(cell);
    ForwardInputs in{spec, parse_nonlinearity(nonlinearity), reset_after, true, "(N, D)", {}, prev_h, prev_c, Wx, Wh, b, bh, py::none(), "prev_h", "prev_c"};
    if (prev_h.is_none()) throw py::type_error("prev_h must be an array, got None");
    if (spec.has_c && prev_c.is_none()) throw py::type_error("prev_c must be an array, got None");
    py::array xa = as_array(x, "x");
    if (is_int_dtype(xa)) {  // token ids (N,)
        if (xa.ndim() != 1) {
            throw py::type_error("x must be a float32 or float64 array, got dtype " + dtype_str(xa) + " of shape " +
                                 shape_str(shape_of(xa)) + " (an integer x holds token ids, with shape (N,))");
        }
        in.x = xa.attr("reshape")(xa.shape(0), 1);
        return forward_dispatch(std::move(in));
    }
    if (xa.ndim() != 2) {
        throw py::value_error("x must be 2-D with shape (N, D), got a " + std::to_string(xa.ndim()) +
                              "-D array of shape " + shape_str(shape_of(xa)));
    }
    in.x = xa.attr("reshape")(xa.shape(0), 1, xa.shape(1));
    return forward_dispatch(std::move(in));
}

py::tuple sequence_backward(py::object cache, const std::string& cell, py::object dh,
                            py::object dhT, py::object dcT) {
    Cache& c = expect_cache(cache, cell, false);
    if (c.is_double) return run_backward<double>(c, dh, dhT, dcT, "dh", "dhT", "dcT");
    return run_backward<float>(c, dh, dhT, dcT, "dh", "dhT", "dcT");
}

py::tuple step_backward(py::object cache, const std::string& cell, py::object dnext_h,
                        py::object dnext_c) {
    Cache& c = expect_cache(cache, cell, true);
    if (dnext_h.is_none()) throw py::type_error("dnext_h must be an array, got None");
    if (c.spec.has_c && dnext_c.is_none()) throw py::type_error("dnext_c must be an array, got None");
    // h_t of a one-step forward is also its final state, so dnext_h enters as dhT.
    py::tuple g = c.is_double ? run_backward<double>(c, py::none(), dnext_h, dnext_c, "dh", "dnext_h", "dnext_c")
                              : run_backward<float>(c, py::none(), dnext_h, dnext_c, "dh", "dnext_h", "dnext_c");
    py::object dx = g[0].is_none() ? py::object(py::none()) : g[0].attr("reshape")(c.dims.N, c.dims.D);
    return py::make_tuple(dx, g[1], g[2], g[3], g[4], g[5], g[6]);
}

// A·B with fastrnn's own matrix multiply. Strided views (a transpose, a slice) are read in
// place; unaligned or byte-swapped data, or strides that are not whole elements, are copied.
template <class T>
MatRef<T> view_of(const py::array& a, py::object& keep) {
    const auto item = py::ssize_t(sizeof(T));
    const bool readable = a.dtype().attr("isnative").cast<bool>() && a.attr("flags").attr("aligned").cast<bool>();
    if (!readable || a.strides(0) % item != 0 || a.strides(1) % item != 0) {
        const CArray<T> c = FloatArgs::contiguous<T>(a);
        keep = c;  // owns the copy for the caller
        return {c.data(), c.shape(1), 1};
    }
    return {ptr<T>(a), a.strides(0) / item, a.strides(1) / item};
}

template <class T>
py::array run_matmul(const py::array& A_in, const py::array& B_in) {
    py::object keep_a, keep_b;
    const MatRef<T> A = view_of<T>(A_in, keep_a), B = view_of<T>(B_in, keep_b);
    const idx M = A_in.shape(0), K = A_in.shape(1), N = B_in.shape(1);
    py::array C = empty<T>({M, N});
    {
        py::gil_scoped_release release;
        matmul<T>(M, N, K, A, B, mut<T>(C), N);
    }
    return C;
}

py::array matmul_entry(py::object A_obj, py::object B_obj) {
    const py::array A = as_array(A_obj, "A");
    const FloatArgs args(A, "A");
    const py::array B = args.take(B_obj, "B");
    if (A.ndim() != 2 || B.ndim() != 2 || A.shape(1) != B.shape(0)) {
        throw py::value_error("matmul needs A (M, K) and B (K, N), got A " + shape_str(shape_of(A)) +
                              " and B " + shape_str(shape_of(B)));
    }
    return args.is_double() ? run_matmul<double>(A, B) : run_matmul<float>(A, B);
}

// ---------------------------------------------------------------- training kernels

// A list of arrays updated in place: each a C-contiguous, writeable ndarray of `dtype`.
template <class T>
struct InPlaceList {
    std::vector<py::array> keep;
    std::vector<T*> ptrs;
    std::vector<idx> sizes;
};

// "name[index]", or just name when index < 0: built only for an error message.
std::string item_name(const std::string& name, long index) {
    return index < 0 ? name : name + "[" + std::to_string(index) + "]";
}

bool native_byte_order(const py::array& a) {
    const std::uint16_t one = 1;
    const bool little = *reinterpret_cast<const unsigned char*>(&one) == 1;
    const char order = a.dtype().byteorder();
    return order == '=' || order == '|' || order == (little ? '<' : '>');
}

// An ndarray of T that a kernel may write through: no copy is made, so it must be
// writeable, aligned, C-contiguous and in native byte order.
template <class T>
py::array in_place_array(py::handle obj, const std::string& name, long index = -1) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(item_name(name, index) + " must be a np.ndarray, got " + type_name(obj));
    }
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().num() != py::dtype::of<T>().num()) {
        throw py::type_error(item_name(name, index) + " has dtype " + dtype_str(a) + "; expected " +
                             py::str(py::dtype::of<T>()).cast<std::string>() + " like the first array");
    }
    constexpr int needed = py::array::c_style | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                           py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    if ((a.flags() & needed) != needed || !native_byte_order(a)) {
        throw py::value_error(item_name(name, index) + " must be a writeable, aligned, C-contiguous array in "
                              "native byte order (it is updated in place)");
    }
    return a;
}

template <class T>
InPlaceList<T> in_place_list(const py::list& list, const std::string& name) {
    InPlaceList<T> out;
    for (std::size_t k = 0; k < list.size(); ++k) {
        py::array a = in_place_array<T>(list[k], name, long(k));
        out.ptrs.push_back(mut<T>(a));
        out.sizes.push_back(idx(a.size()));
        out.keep.push_back(a);
    }
    return out;
}

// Read-only companions of `like` (same length, same shapes): copied to C order if needed.
template <class T>
std::vector<const T*> read_list(const py::list& list, const std::string& name, const InPlaceList<T>& like,
                                const std::string& like_name, std::vector<py::array>& keep) {
    if (list.size() != like.keep.size()) {
        throw py::value_error(name + " has " + std::to_string(list.size()) + " arrays but " + like_name +
                              " has " + std::to_string(like.keep.size()));
    }
    std::vector<const T*> out;
    for (std::size_t k = 0; k < list.size(); ++k) {
        const py::array a = as_array(list[k], item_name(name, long(k)));
        if (a.dtype().num() != py::dtype::of<T>().num()) {
            throw py::type_error(item_name(name, long(k)) + " has dtype " + dtype_str(a) + " but " +
                                 item_name(like_name, long(k)) + " has " + dtype_str(like.keep[k]));
        }
        if (shape_of(a) != shape_of(like.keep[k])) {
            throw py::value_error(item_name(name, long(k)) + " has shape " + shape_str(shape_of(a)) + " but " +
                                  item_name(like_name, long(k)) + " has shape " + shape_str(shape_of(like.keep[k])));
        }
        keep.push_back(FloatArgs::contiguous<T>(a));
        out.push_back(ptr<T>(keep.back()));
    }
    return out;
}

// The dtype of a list's first array (float32 or float64), for dispatch.
bool list_is_double(const py::list& list, const std::string& name) {
    if (list.size() == 0) {
        throw py::value_error(name + " is empty");
    }
    if (!py::isinstance<py::array>(list[0])) {
        throw py::type_error(name + "[0] must be a np.ndarray, got " + type_name(list[0]));
    }
    const py::array a = py::reinterpret_borrow<py::array>(list[0]);
    if (!is_float_dtype(a)) {
        throw py::type_error(name + "[0] must be float32 or float64, got dtype " + dtype_str(a));
    }
    return a.dtype().num() == py::dtype::of<double>().num();
}

UpdateRule parse_rule(const std::string& kind, const py::dict& coef) {
    UpdateRule r;
    if (kind == "sgd") r.kind = UpdateRule::sgd;
    else if (kind == "adagrad") r.kind = UpdateRule::adagrad;
    else if (kind == "rmsprop") r.kind = UpdateRule::rmsprop;
    else if (kind == "adam") r.kind = UpdateRule::adam;
    else throw py::value_error("rule must be 'sgd', 'adagrad', 'rmsprop' or 'adam', got '" + kind + "'");
    // One pass over the entries given (absent ones keep their defaults): a small model's
    // step is short enough that looking up every possible key was a sizeable part of it.
    for (const auto& item : coef) {
        const std::string key = py::cast<std::string>(item.first);
        const py::handle value = item.second;
        if (key == "nesterov") r.nesterov = py::cast<bool>(value);
        else if (key == "decoupled") r.decoupled = py::cast<bool>(value);
        else {
            const double v = py::cast<double>(value);
            if (key == "lr") r.lr = v;
            else if (key == "momentum") r.momentum = v;
            else if (key == "weight_decay") r.weight_decay = v;
            else if (key == "alpha") r.alpha = v;
            else if (key == "eps") r.eps = v;
            else if (key == "beta1") r.beta1 = v;
            else if (key == "beta2") r.beta2 = v;
            else if (key == "step_size") r.step_size = v;
            else if (key == "bc2_sqrt") r.bc2_sqrt = v;
            else if (key == "clip_value") r.clip_value = v;
            else if (key == "grad_scale") r.grad_scale = v;
            else throw py::value_error("unknown update coefficient '" + key + "'");
        }
    }
    if (!(r.clip_value >= 0) || !std::isfinite(r.clip_value) || !std::isfinite(r.grad_scale)) {
        throw py::value_error("clip_value must be finite and >= 0 and grad_scale finite");
    }
    return r;
}

std::size_t buffers_of(const UpdateRule& r) {
    switch (r.kind) {
        case UpdateRule::sgd: return r.momentum > 0 ? 1 : 0;
        case UpdateRule::adam: return 2;
        default: return 1;
    }
}

bool same_shape(const py::array& a, const py::array& b) {
    return a.ndim() == b.ndim() && std::equal(a.shape(), a.shape() + a.ndim(), b.shape());
}

// One compiled update's arrays: the parameters p (checked for updating in place), their
// gradients g (checked against p), and the rule's state buffers, checked here; `list`
// points into them.
template <class T>
struct UpdateArrays {
    InPlaceList<T> p, s0, s1;
    ParamList<T> list;
};

template <class T>
UpdateArrays<T> update_arrays(const UpdateRule& rule, InPlaceList<T> p, std::vector<const T*> g,
                              const py::list& state0, const py::list& state1) {
    UpdateArrays<T> u;
    u.p = std::move(p);
    u.list.p = u.p.ptrs;
    u.list.n = u.p.sizes;
    u.list.g = std::move(g);
    const std::size_t buffers = buffers_of(rule);
    // The state buffers: one per parameter, shaped like it.
    auto state = [&](const py::list& list, const std::string& name) {
        if (list.size() != u.p.keep.size()) {
            throw py::value_error(name + " has " + std::to_string(list.size()) + " arrays but params has " +
                                  std::to_string(u.p.keep.size()));
        }
        InPlaceList<T> out = in_place_list<T>(list, name);
        for (std::size_t k = 0; k < out.keep.size(); ++k) {
            if (!same_shape(out.keep[k], u.p.keep[k])) {
                throw py::value_error(name + "[" + std::to_string(k) + "] has shape " +
                                      shape_str(shape_of(out.keep[k])) + " but params[" + std::to_string(k) +
                                      "] has shape " + shape_str(shape_of(u.p.keep[k])));
            }
        }
        return out;
    };
    if (buffers >= 1) {
        u.s0 = state(state0, "state0");
        u.list.s0 = u.s0.ptrs;
    }
    if (buffers >= 2) {
        u.s1 = state(state1, "state1");
        u.list.s1 = u.s1.ptrs;
    }
    return u;
}

template <class T>
void run_optimizer_update(const UpdateRule& rule, const py::list& params, const py::list& grads,
                          const py::list& state0, const py::list& state1) {
    InPlaceList<T> p = in_place_list<T>(params, "params");
    std::vector<py::array> keep;
    std::vector<const T*> g = read_list<T>(grads, "grads", p, "params", keep);
    const UpdateArrays<T> u = update_arrays<T>(rule, std::move(p), std::move(g), state0, state1);
    py::gil_scoped_release release;
    optimizer_update<T>(rule, u.list);
}

void optimizer_update_entry(const std::string& kind, const py::list& params, const py::list& grads,
                            const py::list& state0, const py::list& state1, const py::dict& coef) {
    const UpdateRule rule = parse_rule(kind, coef);
    if (list_is_double(params, "params")) run_optimizer_update<double>(rule, params, grads, state0, state1);
    else run_optimizer_update<float>(rule, params, grads, state0, state1);
}

template <class T>
double run_sum_of_squares(const py::list& arrays) {
    std::vector<py::array> keep;
    std::vector<const T*> ptrs;
    std::vector<idx> sizes;
    for (std::size_t k = 0; k < arrays.size(); ++k) {
        const std::string item = "arrays[" + std::to_string(k) + "]";
        const py::array a = as_array(arrays[k], item);
        if (a.dtype().num() != py::dtype::of<T>().num()) {
            throw py::type_error(item + " has dtype " + dtype_str(a) + "; all arrays must share one float dtype");
        }
        keep.push_back(FloatArgs::contiguous<T>(a));
        ptrs.push_back(ptr<T>(keep.back()));
        sizes.push_back(idx(a.size()));
    }
    py::gil_scoped_release release;
    return sum_of_squares<T>(ptrs, sizes);
}

double sum_of_squares_entry(const py::list& arrays) {
    return list_is_double(arrays, "arrays") ? run_sum_of_squares<double>(arrays) : run_sum_of_squares<float>(arrays);
}

template <class T>
void run_in_place(const py::list& arrays, double value, bool clamp) {
    const InPlaceList<T> a = in_place_list<T>(arrays, "arrays");
    py::gil_scoped_release release;
    if (clamp) clamp_all<T>(a.ptrs, a.sizes, T(value));
    else scale_all<T>(a.ptrs, a.sizes, T(value));
}

void in_place_entry(const py::list& arrays, double value, bool clamp) {
    if (list_is_double(arrays, "arrays")) run_in_place<double>(arrays, value, clamp);
    else run_in_place<float>(arrays, value, clamp);
}

// 1-D integer ids of length M, each in [0, limit) where mask (M,) is nonzero (or null).
py::array_t<std::int64_t> row_ids(py::object obj, const std::string& name, idx M, idx limit,
                                  const std::uint8_t* mask) {
    const py::array raw = as_array(obj, name);
    if (!is_int_dtype(raw)) {  // before the shape: a float array is a type error
        throw py::type_error(name + " must be an integer array, got dtype " + dtype_str(raw));
    }
    expect_shape(raw, name, {M}, "(M,)");
    return checked_ids(raw, name, limit, "", [&](idx i) { return mask == nullptr || mask[i] != 0; });
}

template <class T>
py::tuple run_softmax(const py::array& scores_in, py::object targets, py::object mask_obj, double row_scale) {
    const CArray<T> scores = FloatArgs::contiguous<T>(scores_in);
    const idx M = scores.shape(0), V = scores.shape(1);
    std::optional<py::array_t<std::uint8_t>> mask;
    if (!mask_obj.is_none()) {
        const py::array m = as_array(mask_obj, "mask");
        if (m.dtype().kind() != 'b') {
            throw py::type_error("mask must be a bool array, got dtype " + dtype_str(m));
        }
        expect_shape(m, "mask", {M}, "(M,)");
        mask = py::array_t<std::uint8_t>(py::module_::import("numpy").attr("ascontiguousarray")(m, "uint8"));
    }
    const std::uint8_t* mk = mask ? mask->data() : nullptr;
    const py::array_t<std::int64_t> ids = row_ids(targets, "targets", M, V, mk);
    py::array dscores = empty<T>({M, V});
    double total;
    {
        py::gil_scoped_release release;
        total = softmax_cross_entropy<T>(M, V, scores.data(), ids.data(), mk, T(row_scale), mut<T>(dscores));
    }
    return py::make_tuple(total, dscores);
}

py::tuple softmax_entry(py::object scores_obj, py::object targets, py::object mask, double row_scale) {
    const py::array scores = as_array(scores_obj, "scores");
    const FloatArgs args(scores, "scores");
    if (scores.ndim() != 2) {
        throw py::value_error("scores must be 2-D (M, V), got shape " + shape_str(shape_of(scores)));
    }
    return args.is_double() ? run_softmax<double>(scores, targets, mask, row_scale)
                            : run_softmax<float>(scores, targets, mask, row_scale);
}

template <class T>
void run_embedding_backward(py::object ids_obj, const py::array& dout_in, py::array& dW) {
    const idx V = dW.shape(0), D = dW.shape(1);
    if (dout_in.ndim() != 2 || dout_in.shape(1) != D) {
        throw py::value_error("dout must have shape (M, D) with D = " + std::to_string(D) + ", got " +
                              shape_str(shape_of(dout_in)));
    }
    const idx M = dout_in.shape(0);
    const py::array_t<std::int64_t> ids = row_ids(ids_obj, "ids", M, V, nullptr);
    const CArray<T> dout = FloatArgs::contiguous<T>(dout_in);
    py::gil_scoped_release release;
    embedding_backward<T>(M, D, ids.data(), dout.data(), mut<T>(dW));
}

void embedding_backward_entry(py::object ids, py::object dout_obj, py::object dW_obj) {
    const FloatArgs args(as_array(dW_obj, "dW"), "dW");
    py::array dW = args.is_double() ? in_place_array<double>(dW_obj, "dW") : in_place_array<float>(dW_obj, "dW");
    if (dW.ndim() != 2) {
        throw py::value_error("dW must be 2-D (V, D), got shape " + shape_str(shape_of(dW)));
    }
    const py::array dout = args.take(dout_obj, "dout");
    if (args.is_double()) run_embedding_backward<double>(ids, dout, dW);
    else run_embedding_backward<float>(ids, dout, dW);
}

// ---------------------------------------------------------------- language model

// params and grads are flat lists in the order [E] + per layer [Wx, Wh, b(, bh)] + [Wy, by];
// grads are written in place. Returns (loss sum, hT (L,N,H), cT (L,N,H) or None).
template <class T>
py::tuple run_language_model(const CellSpec& spec, const py::array& ids_raw, py::object targets_obj,
                             const py::list& params, const py::list& grads, bool embedding, py::object h0_obj,
                             py::object c0_obj, const py::list& masks, Activation act, bool reset_after,
                             double row_scale, const FloatArgs& args, const py::object& update) {
    const idx per_layer = spec.has_bh ? 4 : 3;
    const idx fixed = (embedding ? 1 : 0) + 2;
    const idx count = idx(params.size());
    if (count < fixed + per_layer || (count - fixed) % per_layer != 0) {
        throw py::value_error("params must hold " + std::string(embedding ? "[E] + " : "") + "per layer [Wx, Wh, b" +
                              (spec.has_bh ? ", bh" : "") + "] + [Wy, by], got " + std::to_string(count) + " arrays");
    }
    const idx L = (count - fixed) / per_layer;
    std::vector<py::array> p;  // C-contiguous copies only where needed
    for (idx k = 0; k < count; ++k) {
        p.push_back(FloatArgs::contiguous<T>(args.take(params[std::size_t(k)], item_name("params", long(k)))));
    }
    const py::array& Wy = p[std::size_t(count - 2)];
    if (Wy.ndim() != 2) {
        throw py::value_error("Wy (params[-2]) must be 2-D (H, V), got shape " + shape_str(shape_of(Wy)));
    }
    const idx H = Wy.shape(0), V = Wy.shape(1), GH = spec.gates * H;
    const std::string G = spec.gates == 1 ? "H" : std::to_string(spec.gates) + "*H";
    idx E = 0;
    if (embedding) {
        if (p[0].ndim() != 2) {
            throw py::value_error("E (params[0]) must be 2-D (V, E), got " + shape_str(shape_of(p[0])));
        }
        E = p[0].shape(1);
        expect_shape(p[0], "E (params[0])", {V, E}, "(V, E)");
    }
    auto param_name = [](idx k, const char* what) {
        return std::string(what) + " (params[" + std::to_string(k) + "])";
    };
    for (idx l = 0; l < L; ++l) {
        const idx k = (embedding ? 1 : 0) + l * per_layer;
        const idx D = l > 0 ? H : (embedding ? E : V);
        expect_shape(p[std::size_t(k)], param_name(k, "Wx"), {D, GH}, "(D, " + G + ")");
        expect_shape(p[std::size_t(k + 1)], param_name(k + 1, "Wh"), {H, GH}, "(H, " + G + ")");
        expect_shape(p[std::size_t(k + 2)], param_name(k + 2, "b"), {GH}, "(" + G + ",)");
        if (spec.has_bh) expect_shape(p[std::size_t(k + 3)], param_name(k + 3, "bh"), {GH}, "(" + G + ",)");
    }
    expect_shape(p[std::size_t(count - 1)], param_name(count - 1, "by"), {V}, "(V,)");

    if (idx(grads.size()) != count) {
        throw py::value_error("grads has " + std::to_string(grads.size()) + " arrays but params has " +
                              std::to_string(count));
    }
    const InPlaceList<T> g = in_place_list<T>(grads, "grads");
    for (idx k = 0; k < count; ++k) {
        const std::vector<idx> want = shape_of(p[std::size_t(k)]), got = shape_of(g.keep[std::size_t(k)]);
        if (got != want) {
            throw py::value_error(item_name("grads", long(k)) + " has shape " + shape_str(got) + " but " +
                                  item_name("params", long(k)) + " has shape " + shape_str(want));
        }
    }

    // inputs (N,T), one chunk; or (K,N,T), K consecutive chunks of the same N streams.
    const bool chunked = ids_raw.ndim() == 3;
    if (ids_raw.ndim() != 2 && !chunked) {
        throw py::value_error("inputs must be 2-D (N, T) or 3-D (K, N, T), got shape " + shape_str(shape_of(ids_raw)));
    }
    const idx K = chunked ? ids_raw.shape(0) : 1;
    const idx N = ids_raw.shape(chunked ? 1 : 0), Tn = ids_raw.shape(chunked ? 2 : 1);
    const std::vector<idx> ids_shape = chunked ? std::vector<idx>{K, N, Tn} : std::vector<idx>{N, Tn};
    const std::string ids_doc = chunked ? "(K, N, T)" : "(N, T)";
    const auto all = [](idx) { return true; };
    const py::array_t<std::int64_t> ids = checked_ids(ids_raw, "inputs", V, "", all);
    const py::array targets_raw = as_array(targets_obj, "targets");
    if (!is_int_dtype(targets_raw)) {
        throw py::type_error("targets must be an integer array, got dtype " + dtype_str(targets_raw));
    }
    expect_shape(targets_raw, "targets", ids_shape, ids_doc);
    const py::array_t<std::int64_t> targets = checked_ids(targets_raw, "targets", V, "", all);

    auto state = [&](py::object obj, const std::string& name) {
        if (obj.is_none()) return py::array(zeros<T>({L, N, H}));
        py::array a = FloatArgs::contiguous<T>(args.take(obj, name));
        expect_shape(a, name, {L, N, H}, "(L, N, H)");
        return a;
    };
    const py::array h0 = state(h0_obj, "h0");
    const py::array c0 = spec.has_c ? state(c0_obj, "c0") : py::array();
    if (!spec.has_c && !c0_obj.is_none()) throw py::value_error("c0 is only defined for the LSTM");
    // Dropout masks: (L - 1) per chunk, chunk by chunk, or none.
    const idx mask_count = K * (L - 1);
    if (!masks.empty() && idx(masks.size()) != mask_count) {
        throw py::value_error("masks must be empty or hold " + std::string(chunked ? "K * (L - 1) = " : "L - 1 = ") +
                              std::to_string(mask_count) + " arrays, got " + std::to_string(masks.size()));
    }
    std::vector<py::array> mk;
    std::vector<std::vector<const T*>> chunk_masks(masks.empty() ? 0 : std::size_t(K));
    for (std::size_t k = 0; k < masks.size(); ++k) {
        mk.push_back(FloatArgs::contiguous<T>(args.take(masks[k], item_name("masks", long(k)))));
        expect_shape(mk.back(), item_name("masks", long(k)), {N, Tn, H}, "(N, T, H)");
        chunk_masks[k / std::size_t(L - 1)].push_back(ptr<T>(mk.back()));
    }
    py::array hT = empty<T>({L, N, H});
    py::array cT = spec.has_c ? empty<T>({L, N, H}) : py::array();

    LanguageModel<T> m{};
    m.kind = CellKind{spec.cell, act, reset_after};
    m.N = N, m.steps = Tn, m.V = V, m.H = H, m.E = E;
    m.ids = ids.data(), m.targets = targets.data();
    m.embed = embedding ? ptr<T>(p[0]) : nullptr;
    m.dembed = embedding ? g.ptrs[0] : nullptr;
    for (idx l = 0; l < L; ++l) {
        const std::size_t k = std::size_t((embedding ? 1 : 0) + l * per_layer);
        LanguageModelLayer<T> layer{};
        layer.Wx = ptr<T>(p[k]), layer.Wh = ptr<T>(p[k + 1]), layer.b = ptr<T>(p[k + 2]);
        layer.bh = spec.has_bh ? ptr<T>(p[k + 3]) : nullptr;
        layer.dWx = g.ptrs[k], layer.dWh = g.ptrs[k + 1], layer.db = g.ptrs[k + 2];
        layer.dbh = spec.has_bh ? g.ptrs[k + 3] : nullptr;
        layer.h0 = ptr<T>(h0) + l * N * H;
        layer.c0 = spec.has_c ? ptr<T>(c0) + l * N * H : nullptr;
        layer.hT = mut<T>(hT) + l * N * H;
        layer.cT = spec.has_c ? mut<T>(cT) + l * N * H : nullptr;
        m.layers.push_back(layer);
    }
    m.Wy = ptr<T>(Wy), m.by = ptr<T>(p[std::size_t(count - 1)]);
    m.dWy = g.ptrs[std::size_t(count - 2)], m.dby = g.ptrs[std::size_t(count - 1)];
    m.row_scale = T(row_scale);

    // The optimizer's step on the same parameters after each chunk's gradients: a tuple
    // (rule, state0, state1, coef) as optimizer_update takes them (with K chunks, coef is a
    // list of K dicts, one per step), or None.
    std::vector<UpdateRule> rules;
    UpdateArrays<T> u;
    if (!update.is_none()) {
        const py::tuple args_u = py::cast<py::tuple>(update);
        if (args_u.size() != 4) throw py::value_error("update must be (rule, state0, state1, coef)");
        const std::string kind = py::cast<std::string>(args_u[0]);
        if (chunked) {
            const py::list coefs = py::cast<py::list>(args_u[3]);
            if (idx(coefs.size()) != K) {
                throw py::value_error("update's coef must be a list of K = " + std::to_string(K) + " dicts, got " +
                                      std::to_string(coefs.size()));
            }
            for (const py::handle c : coefs) rules.push_back(parse_rule(kind, py::cast<py::dict>(c)));
        } else {
            rules.push_back(parse_rule(kind, py::cast<py::dict>(args_u[3])));
        }
        // The parameters must be updatable in place, and be the arrays the call read above.
        InPlaceList<T> in_place = in_place_list<T>(params, "params");
        for (idx k = 0; k < count; ++k) {
            if (in_place.ptrs[std::size_t(k)] != p[std::size_t(k)].data()) {
                throw py::value_error(item_name("params", long(k)) + " cannot be updated in place");
            }
        }
        std::vector<const T*> grad_ptrs(g.ptrs.begin(), g.ptrs.end());
        const UpdateRule any_rule = rules.empty() ? parse_rule(kind, py::dict()) : rules.front();  // K = 0: none runs
        u = update_arrays<T>(any_rule, std::move(in_place), std::move(grad_ptrs), py::cast<py::list>(args_u[1]),
                             py::cast<py::list>(args_u[2]));
        m.update_arrays = u.list;
    }
    py::array_t<double> losses(std::vector<py::ssize_t>{py::ssize_t(K)});
    // Per character: each layer's forward and backward (about 3 products of its width
    // (E or H) + H by G*H), and the head's three products H by V.
    const double per_char = 6.0 * double(L) * double(std::max(E, H) + H) * double(GH) + 6.0 * double(H * V);
    run_released(per_char * double(N * Tn * K),
                 [&] { language_model_chunks<T>(m, K, chunk_masks, rules, losses.mutable_data()); });
    const py::object loss = chunked ? py::object(losses) : py::float_(*losses.data());
    return py::make_tuple(loss, hT, spec.has_c ? py::object(cT) : py::none());
}

py::tuple language_model_entry(const std::string& cell, py::object inputs, py::object targets, const py::list& params,
                               const py::list& grads, bool embedding, py::object h0, py::object c0,
                               const py::list& masks, py::object nonlinearity, bool reset_after, double row_scale,
                               const py::object& update) {
    const CellSpec spec = cell_spec(cell);
    if (params.empty()) throw py::value_error("params is empty");
    const FloatArgs args(as_array(params[0], "params[0]"), "params[0]");
    const py::array ids_raw = as_array(inputs, "inputs");
    if (!is_int_dtype(ids_raw)) {
        throw py::type_error("inputs must be an integer array, got dtype " + dtype_str(ids_raw));
    }
    const Activation act = parse_nonlinearity(nonlinearity);
    if (args.is_double()) {
        return run_language_model<double>(spec, ids_raw, targets, params, grads, embedding, h0, c0, masks, act,
                                          reset_after, row_scale, args, update);
    }
    return run_language_model<float>(spec, ids_raw, targets, params, grads, embedding, h0, c0, masks, act,
                                     reset_after, row_scale, args, update);
}

Isa parse_isa(const std::string& name) {
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
        if (name == isa_name(isa)) return isa;
    }
    throw py::value_error("isa must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastrnn compiled kernels (private; use fastrnn.functional)";
    look_up_numpy();

    py::class_<Cache>(m, "Cache", "What a forward pass keeps for its backward pass. Opaque.")
        .def_property_readonly("cell", [](const Cache& c) { return c.spec.name; })
        .def("__repr__", &Cache::repr);

    m.def("sequence_forward", &sequence_forward, py::arg("cell"), py::arg("x"), py::arg("h0"),
          py::arg("c0"), py::arg("Wx"), py::arg("Wh"), py::arg("b"), py::arg("bh"),
          py::arg("lengths"), py::arg("nonlinearity"), py::arg("reset_after"),
          "-> (h (N,T,H), hT (N,H), cT (N,H) or None, cache)");
    m.def("step_forward", &step_forward, py::arg("cell"), py::arg("x"), py::arg("prev_h"),
          py::arg("prev_c"), py::arg("Wx"), py::arg("Wh"), py::arg("b"), py::arg("bh"),
          py::arg("nonlinearity"), py::arg("reset_after"),
          "-> (h (N,1,H), next_h (N,H), next_c (N,H) or None, cache)");
    m.def("sequence_backward", &sequence_backward, py::arg("cache"), py::arg("cell"), py::arg("dh"),
          py::arg("dhT"), py::arg("dcT"), "-> (dx, dh0, dc0 or None, dWx, dWh, db, dbh or None)");
    m.def("step_backward", &step_backward, py::arg("cache"), py::arg("cell"), py::arg("dnext_h"),
          py::arg("dnext_c"), "-> (dx (N,D), dprev_h, dprev_c or None, dWx, dWh, db, dbh or None)");

    m.def("matmul", &matmul_entry, py::arg("A"), py::arg("B"),
          "A (M,K) · B (K,N) with fastrnn's matrix multiply (for benchmarks and tests).");
    m.def("optimizer_update", &optimizer_update_entry, py::arg("rule"), py::arg("params"),
          py::arg("grads"), py::arg("state0"), py::arg("state1"), py::arg("coef"),
          "One optimizer step over lists of arrays, in place (see fastrnn.optim).");
    m.def("sum_of_squares", &sum_of_squares_entry, py::arg("arrays"),
          "Sum of the squares of all elements, in float64 and a fixed order.");
    m.def("scale_arrays", [](const py::list& a, double f) { in_place_entry(a, f, false); },
          py::arg("arrays"), py::arg("factor"), "arrays[k] *= factor, in place.");
    m.def("clamp_arrays", [](const py::list& a, double c) { in_place_entry(a, c, true); },
          py::arg("arrays"), py::arg("limit"), "arrays[k] clipped to [-limit, limit], in place.");
    m.def("softmax_cross_entropy", &softmax_entry, py::arg("scores"), py::arg("targets"),
          py::arg("mask"), py::arg("row_scale"),
          "scores (M,V), targets (M,), mask (M,) bool or None -> (sum of masked losses, dscores)");
    m.def("embedding_backward", &embedding_backward_entry, py::arg("ids"), py::arg("dout"), py::arg("dW"),
          "dW[ids[m]] += dout[m] for m in order, in place; ids (M,), dout (M,D), dW (V,D).");
    m.def("language_model_loss", &language_model_entry, py::arg("cell"), py::arg("inputs"), py::arg("targets"),
          py::arg("params"), py::arg("grads"), py::arg("embedding"), py::arg("h0"), py::arg("c0"), py::arg("masks"),
          py::arg("nonlinearity"), py::arg("reset_after"), py::arg("row_scale"), py::arg("update") = py::none(),
          "A language model's loss sum and gradients (grads written in place) -> (loss, hT, cT or None). "
          "With update = (rule, state0, state1, coef), optimizer_update's arguments but for params and grads, "
          "the same call then updates the parameters. inputs and targets (K, N, T) train K consecutive chunks, "
          "each from the previous one's final state (masks: K * (L - 1) arrays; coef: K dicts) -> "
          "(losses (K,), hT, cT or None).");
    m.def("head_runs_beside_cells",
          [](const std::string& cell, idx N, idx T, idx H) {
              return head_runs_beside_cells(cell_spec(cell).cell, N, T, H);
          },
          py::arg("cell"), py::arg("N"), py::arg("T"), py::arg("H"),
          "Whether language_model_loss may run its head on a second thread beside the cells, for these sizes.");
    // HeadBeside's names, in its order.
    static const std::array<const char*, 3> head_beside_names = {"timed", "always", "never"};
    m.def("set_head_beside",
          [](const std::string& mode) {
              for (std::size_t k = 0; k < head_beside_names.size(); ++k) {
                  if (mode == head_beside_names[k]) return set_head_beside(HeadBeside(k));
              }
              throw py::value_error("mode must be 'timed', 'always' or 'never', got '" + mode + "'");
          },
          py::arg("mode"),
          "Where the head may run beside the cells: 'timed' (default: that way or the whole call on one "
          "thread, whichever is timed faster), 'always', or 'never'.");
    m.def("head_beside_stats", [] {
        const HeadBesideStats s = head_beside_stats();
        py::dict d;
        d["beside"] = s.beside, d["alone"] = s.alone;
        d["beside_seconds"] = s.beside_seconds, d["alone_seconds"] = s.alone_seconds;
        return d;
    }, "The calling thread's 'timed' choices for the last language-model shape it ran: calls run each way "
       "and the median of each way's last few times.");
    m.def("get_head_beside", [] { return head_beside_names[std::size_t(get_head_beside())]; });
    m.def("get_num_threads", &num_threads, "Threads the kernels use.");
    m.def("set_num_threads", [](const py::int_& n) {
              if (n > py::int_(max_threads())) {
                  throw py::value_error("set_num_threads: n must be at most " + std::to_string(max_threads()) +
                                        " (4 per core on this machine), got " + std::string(py::str(n)));
              }
              set_num_threads(n < py::int_(0) ? 0 : n.cast<int>());
          }, py::arg("n"),
          "Sets the kernels' thread count, at most 4 per core; n <= 0 restores the default (OMP_NUM_THREADS or "
          "all cores).");
    m.def("min_flops_per_thread", &min_flops_per_thread,
          "Work (FLOPs between two barriers) below which a kernel uses fewer threads.");
    m.def("set_min_flops_per_thread", &set_min_flops_per_thread, py::arg("flops"),
          "Sets that threshold; 0 makes every kernel use the full team (for tests).");
    m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The micro-kernel in use.");
    m.def("best_isa", [] { return std::string(isa_name(best_isa())); }, "The best one this CPU supports.");
    m.def("set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); }, py::arg("name"),
          "Selects a micro-kernel (clamped to best_isa()); for tests and benchmarks.");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
