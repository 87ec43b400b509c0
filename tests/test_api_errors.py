"""Bad arguments raise ValueError or TypeError whose message names the offending argument.

Each case is (call, exception type, regex the message must contain). The calls are built
from one set of valid float64 inputs (N=2, T=3, D=4, H=5) with a single thing broken.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_inputs
from fastrnn import functional as F

N, T, D, H = 2, 3, 4, 5

RNN = make_inputs("rnn", N, T, D, H, seed=1)
LSTM = make_inputs("lstm", N, T, D, H, seed=2)
GRU = make_inputs("gru", N, T, D, H, seed=3)
RNN_STEP = make_inputs("rnn", N, 1, D, H, seed=4, step=True)
LSTM_STEP = make_inputs("lstm", N, 1, D, H, seed=5, step=True)
GRU_STEP = make_inputs("gru", N, 1, D, H, seed=6, step=True)


def f32(a):
    return a.astype(np.float32)


def rnn_forward(x=RNN.x, h0=RNN.h0, Wx=RNN.params[0], Wh=RNN.params[1], b=RNN.params[2], **kw):
    return F.rnn_forward(x, h0, Wx, Wh, b, **kw)


def lstm_forward(x=LSTM.x, h0=LSTM.h0, Wx=LSTM.params[0], Wh=LSTM.params[1], b=LSTM.params[2], c0=LSTM.c0):
    return F.lstm_forward(x, h0, Wx, Wh, b, c0)


def gru_forward(x=GRU.x, h0=GRU.h0, Wx=GRU.params[0], Wh=GRU.params[1], b=GRU.params[2], bh=GRU.params[3], **kw):
    return F.gru_forward(x, h0, Wx, Wh, b, bh, **kw)


def rnn_step(x=RNN_STEP.x, prev_h=RNN_STEP.h0, Wx=RNN_STEP.params[0], Wh=RNN_STEP.params[1], b=RNN_STEP.params[2], **kw):
    return F.rnn_step_forward(x, prev_h, Wx, Wh, b, **kw)


def lstm_step(x=LSTM_STEP.x, prev_h=LSTM_STEP.h0, prev_c=LSTM_STEP.c0, Wx=LSTM_STEP.params[0],
              Wh=LSTM_STEP.params[1], b=LSTM_STEP.params[2]):
    return F.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)


def gru_step(x=GRU_STEP.x, prev_h=GRU_STEP.h0, Wx=GRU_STEP.params[0], Wh=GRU_STEP.params[1],
             b=GRU_STEP.params[2], bh=GRU_STEP.params[3], **kw):
    return F.gru_step_forward(x, prev_h, Wx, Wh, b, bh, **kw)


def seq(cell="lstm", x=None, params="default", state0="default", **kw):
    inp = {"rnn": RNN, "lstm": LSTM, "gru": GRU}.get(cell if isinstance(cell, str) else "lstm", LSTM)
    x = inp.x if x is None else x
    params = inp.params if isinstance(params, str) else params
    if isinstance(state0, str):
        state0 = (inp.h0, inp.c0) if cell == "lstm" else (inp.h0,)
    return F.sequence_forward(cell, x, params, state0, **kw)


def cache_of(name):
    """A fresh cache of one kind of forward call."""
    return {
        "rnn": lambda: rnn_forward()[1],
        "lstm": lambda: lstm_forward()[1],
        "gru": lambda: gru_forward()[1],
        "rnn_step": lambda: rnn_step()[1],
        "lstm_step": lambda: lstm_step()[2],
        "gru_step": lambda: gru_step()[1],
        "lstm_seq": lambda: seq("lstm")[2],
        "rnn_seq": lambda: seq("rnn")[2],
    }[name]()


HN = np.zeros((N, H))  # a valid (N, H) gradient
DH = np.zeros((N, T, H))  # a valid (N, T, H) gradient

# id -> (call, exception, message regex)
CASES = {
    # ---- wrong number of dimensions
    "x-2d-in-sequence": (lambda: rnn_forward(x=RNN.x[:, 0]), ValueError, r"x must be 3-D"),
    "x-4d-in-sequence": (lambda: lstm_forward(x=LSTM.x[None]), ValueError, r"x must be 3-D"),
    "x-3d-in-step": (lambda: rnn_step(x=RNN.x), ValueError, r"x must be 2-D"),
    "x-scalar": (lambda: gru_forward(x=1.0), ValueError, r"x must be 3-D"),
    "Wx-1d": (lambda: rnn_forward(Wx=RNN.params[0].ravel()), ValueError, r"Wx must be 2-D"),
    "Wh-1d": (lambda: rnn_forward(Wh=RNN.params[1].ravel()), ValueError, r"Wh must be 2-D"),
    "Wh-3d": (lambda: lstm_forward(Wh=LSTM.params[1][None]), ValueError, r"Wh must be 2-D"),
    "b-2d": (lambda: rnn_forward(b=RNN.params[2][None]), ValueError, r"\bb must be 1-D"),
    "h0-1d": (lambda: rnn_forward(h0=RNN.h0[0]), ValueError, r"h0 must be 2-D"),
    "h0-3d": (lambda: rnn_forward(h0=RNN.h0[None]), ValueError, r"h0 must be 2-D"),
    # ---- mismatched shapes
    "Wx-wrong-D": (lambda: rnn_forward(Wx=np.zeros((D + 1, H))), ValueError, r"Wx must have shape \(D, H\)"),
    "Wx-wrong-width-lstm": (lambda: lstm_forward(Wx=np.zeros((D, 3 * H))), ValueError, r"Wx must have shape"),
    "Wh-non-square-rnn": (lambda: rnn_forward(Wh=np.zeros((H, H + 1))), ValueError, r"Wh must have shape"),
    "Wh-wrong-width-lstm": (lambda: lstm_forward(Wh=np.zeros((H, 3 * H))), ValueError, r"Wh must have shape \(H, 4\*H\)"),
    "Wh-wrong-width-gru": (lambda: gru_forward(Wh=np.zeros((H, 4 * H))), ValueError, r"Wh must have shape \(H, 3\*H\)"),
    "Wh-wrong-height": (lambda: rnn_forward(Wh=np.zeros((H + 1, H))), ValueError, r"Wh must have shape"),
    "b-wrong-length": (lambda: lstm_forward(b=np.zeros(3 * H)), ValueError, r"\bb must have shape"),
    "bh-wrong-length": (lambda: gru_forward(bh=np.zeros(4 * H)), ValueError, r"bh must have shape"),
    "h0-wrong-N": (lambda: rnn_forward(h0=np.zeros((N + 1, H))), ValueError, r"h0 must have shape"),
    "h0-wrong-H": (lambda: gru_forward(h0=np.zeros((N, H + 1))), ValueError, r"h0 must have shape"),
    "c0-wrong-shape": (lambda: lstm_forward(c0=np.zeros((N, H + 1))), ValueError, r"c0 must have shape"),
    "prev_h-wrong-shape": (lambda: rnn_step(prev_h=np.zeros((N + 1, H))), ValueError, r"prev_h must have shape"),
    "prev_c-wrong-shape": (lambda: lstm_step(prev_c=np.zeros((N, H - 1))), ValueError, r"prev_c must have shape"),
    "step-Wx-wrong-D": (lambda: gru_step(Wx=np.zeros((D + 2, 3 * H))), ValueError, r"Wx must have shape"),
    "dh-wrong-shape": (lambda: F.rnn_backward(np.zeros((N, T + 1, H)), cache_of("rnn")), ValueError, r"dh must have shape"),
    "dh-2d": (lambda: F.lstm_backward(HN, cache_of("lstm")), ValueError, r"dh must be 3-D"),
    "dh-wrong-shape-gru": (lambda: F.gru_backward(np.zeros((N, T, H + 1)), cache_of("gru")), ValueError, r"dh must have shape"),
    "dnext_h-wrong-shape": (lambda: F.rnn_step_backward(np.zeros((N, H + 1)), cache_of("rnn_step")), ValueError, r"dnext_h must have shape"),
    "dnext_c-wrong-shape": (lambda: F.lstm_step_backward(HN, np.zeros((N + 1, H)), cache_of("lstm_step")), ValueError, r"dnext_c must have shape"),
    "dhT-wrong-shape": (lambda: F.sequence_backward(DH, cache_of("lstm_seq"), (np.zeros((N, H + 1)), None)), ValueError, r"dhT must have shape"),
    "dcT-wrong-shape": (lambda: F.sequence_backward(DH, cache_of("lstm_seq"), (None, np.zeros((N + 1, H)))), ValueError, r"dcT must have shape"),
    # ---- mixed dtypes: no silent cast
    "x-f32-weights-f64": (lambda: rnn_forward(x=f32(RNN.x)), TypeError, r"Wh has dtype float64 but x has float32"),
    "Wx-f32-rest-f64": (lambda: rnn_forward(Wx=f32(RNN.params[0])), TypeError, r"Wx has dtype float32"),
    "b-f32-rest-f64": (lambda: lstm_forward(b=f32(LSTM.params[2])), TypeError, r"\bb has dtype float32"),
    "bh-f32-rest-f64": (lambda: gru_forward(bh=f32(GRU.params[3])), TypeError, r"bh has dtype float32"),
    "h0-f32-rest-f64": (lambda: rnn_forward(h0=f32(RNN.h0)), TypeError, r"h0 has dtype float32"),
    "c0-f32-rest-f64": (lambda: lstm_forward(c0=f32(LSTM.c0)), TypeError, r"c0 has dtype float32"),
    "prev_h-f32-rest-f64": (lambda: gru_step(prev_h=f32(GRU_STEP.h0)), TypeError, r"prev_h has dtype float32"),
    "dh-f32-forward-f64": (lambda: F.rnn_backward(f32(DH), cache_of("rnn")), TypeError, r"dh has dtype float32"),
    "dnext_h-f32-forward-f64": (lambda: F.gru_step_backward(f32(HN), cache_of("gru_step")), TypeError, r"dnext_h has dtype float32"),
    "dcT-f32-forward-f64": (lambda: F.sequence_backward(DH, cache_of("lstm_seq"), (HN, f32(HN))), TypeError, r"dcT has dtype float32"),
    # ---- unsupported dtypes
    "x-int": (lambda: rnn_forward(x=RNN.x.astype(np.int64)), TypeError, r"x must be a float32 or float64 array, got dtype int64"),
    "x-int32": (lambda: rnn_step(x=RNN_STEP.x.astype(np.int32)), TypeError, r"x must be a float32 or float64"),
    "x-bool": (lambda: rnn_forward(x=RNN.x > 0), TypeError, r"x must be a float32 or float64"),
    "x-complex": (lambda: lstm_forward(x=LSTM.x.astype(np.complex128)), TypeError, r"x must be a float32 or float64"),
    "x-float16": (lambda: gru_forward(x=GRU.x.astype(np.float16)), TypeError, r"x must be a float32 or float64"),
    "x-longdouble": (lambda: rnn_forward(x=RNN.x.astype(np.longdouble)), TypeError, r"x must be a float32 or float64"),
    "x-object": (lambda: rnn_forward(x=RNN.x.astype(object)), TypeError, r"x must be a float32 or float64"),
    "x-strings": (lambda: rnn_step(x=np.full((N, D), "a")), TypeError, r"x must be a float32 or float64"),
    "Wx-int": (lambda: rnn_forward(Wx=np.ones((D, H), dtype=np.int64)), TypeError, r"Wx has dtype int64"),
    "Wh-complex": (lambda: lstm_forward(Wh=LSTM.params[1].astype(np.complex128)), TypeError, r"Wh has dtype complex128"),
    "b-float16": (lambda: rnn_forward(b=RNN.params[2].astype(np.float16)), TypeError, r"\bb has dtype float16"),
    "h0-object": (lambda: rnn_forward(h0=RNN.h0.astype(object)), TypeError, r"h0 has dtype object"),
    "c0-int": (lambda: lstm_forward(c0=np.zeros((N, H), dtype=np.int32)), TypeError, r"c0 has dtype int32"),
    "dh-int": (lambda: F.rnn_backward(np.zeros((N, T, H), dtype=np.int64), cache_of("rnn")), TypeError, r"dh has dtype int64"),
    "dnext_c-complex": (lambda: F.lstm_step_backward(HN, HN.astype(np.complex64), cache_of("lstm_step")), TypeError, r"dnext_c has dtype complex64"),
    "x-ragged-list": (lambda: rnn_step(x=[[1.0, 2.0], [3.0]]), TypeError, r"\bx must be an array"),
    # ---- None where an array is needed
    "x-None": (lambda: rnn_forward(x=None), TypeError, r"x must be an array, got None"),
    "x-None-step": (lambda: lstm_step(x=None), TypeError, r"x must be an array, got None"),
    "Wx-None": (lambda: rnn_forward(Wx=None), TypeError, r"Wx must be an array, got None"),
    "Wh-None": (lambda: lstm_forward(Wh=None), TypeError, r"Wh must be an array, got None"),
    "b-None": (lambda: gru_forward(b=None), TypeError, r"\bb must be an array, got None"),
    "bh-None": (lambda: gru_forward(bh=None), TypeError, r"bh must be an array, got None"),
    "prev_h-None": (lambda: rnn_step(prev_h=None), TypeError, r"prev_h must be an array, got None"),
    "prev_c-None": (lambda: lstm_step(prev_c=None), TypeError, r"prev_c must be an array, got None"),
    "dnext_h-None": (lambda: F.gru_step_backward(None, cache_of("gru_step")), TypeError, r"dnext_h must be an array, got None"),
    "dnext_c-None": (lambda: F.lstm_step_backward(HN, None, cache_of("lstm_step")), TypeError, r"dnext_c must be an array, got None"),
    "params-None": (lambda: seq("rnn", params=None), TypeError, r"params must be a tuple"),
    "params-entry-None": (lambda: seq("lstm", params=(LSTM.params[0], None, LSTM.params[2])), TypeError, r"Wh must be an array, got None"),
    # ---- nonlinearity, reset_after, cell
    "nonlinearity-unknown": (lambda: rnn_forward(nonlinearity="sigmoid"), ValueError, r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
    "nonlinearity-unknown-step": (lambda: rnn_step(nonlinearity="Tanh"), ValueError, r"nonlinearity must be"),
    "nonlinearity-None": (lambda: rnn_forward(nonlinearity=None), ValueError, r"nonlinearity must be"),
    "nonlinearity-unknown-sequence": (lambda: seq("rnn", nonlinearity="gelu"), ValueError, r"nonlinearity must be"),
    "reset_after-not-bool": (lambda: gru_forward(reset_after="yes"), TypeError, r"reset_after must be True or False"),
    "reset_after-None-step": (lambda: gru_step(reset_after=None), TypeError, r"reset_after must be True or False"),
    "cell-unknown": (lambda: seq("lstm2"), ValueError, r"cell must be 'rnn', 'lstm' or 'gru', got 'lstm2'"),
    "cell-uppercase": (lambda: seq("GRU"), ValueError, r"cell must be"),
    "cell-None": (lambda: seq(None), ValueError, r"cell must be"),
    "cell-unhashable-list": (lambda: seq(["rnn"]), (ValueError, TypeError), r"\bcell\b"),
    # ---- tuples of the wrong length or type
    "params-too-few-gru": (lambda: seq("gru", params=GRU.params[:3]), ValueError, r"params must be a tuple"),
    "params-too-many-rnn": (lambda: seq("rnn", params=GRU.params), ValueError, r"params must be a tuple"),
    "params-dict": (lambda: seq("rnn", params={"Wx": RNN.params[0]}), TypeError, r"params must be a tuple"),
    "state0-too-long": (lambda: seq("rnn", state0=(RNN.h0, RNN.h0)), ValueError, r"state0 must be a tuple"),
    "state0-array-not-tuple": (lambda: seq("rnn", state0=RNN.h0), TypeError, r"state0 must be a tuple"),
    "dfinal_state-too-long": (lambda: F.sequence_backward(DH, cache_of("rnn_seq"), (HN, HN)), ValueError, r"dfinal_state must be a tuple"),
    "dfinal_state-array-not-tuple": (lambda: F.sequence_backward(DH, cache_of("rnn_seq"), HN), TypeError, r"dfinal_state must be a tuple"),
    # ---- caches
    "cache-lstm-into-gru_backward": (lambda: F.gru_backward(DH, cache_of("lstm")), TypeError, r"cache comes from a lstm"),
    "cache-gru-into-rnn_backward": (lambda: F.rnn_backward(DH, cache_of("gru")), TypeError, r"cache comes from a gru"),
    "cache-rnn-into-lstm_backward": (lambda: F.lstm_backward(DH, cache_of("rnn")), TypeError, r"cache comes from a rnn"),
    "cache-rnn-step-into-lstm_step_backward": (lambda: F.lstm_step_backward(HN, HN, cache_of("rnn_step")), TypeError, r"\bcache\b"),
    "cache-lstm-step-into-gru_step_backward": (lambda: F.gru_step_backward(HN, cache_of("lstm_step")), TypeError, r"\bcache\b"),
    "cache-sequence-into-step_backward": (lambda: F.rnn_step_backward(HN, cache_of("rnn")), TypeError, r"\bcache\b.*T=3"),
    "cache-dict-into-rnn_backward": (lambda: F.rnn_backward(DH, {"x": RNN.x}), TypeError, r"cache must be the cache"),
    "cache-dict-into-lstm_step_backward": (lambda: F.lstm_step_backward(HN, HN, {}), TypeError, r"cache must be the cache"),
    "cache-None-into-gru_backward": (lambda: F.gru_backward(DH, None), TypeError, r"cache must be the cache"),
    "cache-tuple-into-rnn_step_backward": (lambda: F.rnn_step_backward(HN, (1, 2)), TypeError, r"cache must be the cache"),
    "cache-dict-into-sequence_backward": (lambda: F.sequence_backward(DH, {"cell": "rnn"}), TypeError, r"cache must be the cache"),
    "cache-None-into-sequence_backward": (lambda: F.sequence_backward(DH, None), TypeError, r"cache must be the cache"),
    # ---- lengths
    "lengths-above-T": (lambda: seq("rnn", lengths=[1, T + 1]), ValueError, r"lengths must lie in \[0, T\] = \[0, 3\]"),
    "lengths-negative": (lambda: seq("lstm", lengths=np.array([-1, 2])), ValueError, r"lengths must lie in \[0, T\]"),
    "lengths-float": (lambda: seq("gru", lengths=np.array([1.0, 2.0])), TypeError, r"lengths must be an integer array"),
    "lengths-float-list": (lambda: seq("rnn", lengths=[1.5, 2.0]), TypeError, r"lengths must be an integer array"),
    "lengths-bool": (lambda: seq("rnn", lengths=np.array([True, False])), TypeError, r"lengths must be an integer array"),
    "lengths-too-long": (lambda: seq("rnn", lengths=np.array([1, 2, 3])), ValueError, r"lengths must have shape \(N,\)"),
    "lengths-too-short": (lambda: seq("lstm", lengths=[2]), ValueError, r"lengths must have shape \(N,\)"),
    "lengths-2d": (lambda: seq("gru", lengths=np.array([[1], [2]])), ValueError, r"lengths must be 1-D"),
    "lengths-scalar": (lambda: seq("rnn", lengths=2), ValueError, r"lengths must be 1-D"),
    "lengths-uint64-huge": (lambda: seq("rnn", lengths=np.array([2**63, 1], dtype=np.uint64)), ValueError,
                            r"lengths must lie in .*, got lengths\[0\] = 9223372036854775808$"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_argument_raises_error_naming_it(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()


def test_valid_base_calls_succeed():
    """The cases above break one thing each; unbroken, every call works."""
    rnn_forward(), lstm_forward(), gru_forward(), rnn_step(), lstm_step(), gru_step()
    for cell in ("rnn", "lstm", "gru"):
        seq(cell, lengths=[0, T])
    F.rnn_backward(DH, cache_of("rnn"))
    F.lstm_step_backward(HN, HN, cache_of("lstm_step"))
    F.sequence_backward(DH, cache_of("lstm_seq"), (HN, HN))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sequence_forward_rejects_unknown_nonlinearity_for_every_cell_like_the_reference(cell):
    """fastrnn.reference.sequence_forward validates `nonlinearity` for every cell (it is
    only used by the RNN); the compiled one must not silently accept a typo either."""
    from fastrnn import reference as R

    inp = {"rnn": RNN, "lstm": LSTM, "gru": GRU}[cell]
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu'"):
        R.sequence_forward(cell, inp.x, inp.params, None, nonlinearity="sigmod")
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu'"):
        F.sequence_forward(cell, inp.x, inp.params, None, nonlinearity="sigmod")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_cannot_be_mixed_in_any_position(dtype):
    """Every array argument, one at a time, in the other float dtype: always TypeError."""
    other = np.float64 if dtype == np.float32 else np.float32
    inp = make_inputs("lstm", N, T, D, H, dtype, seed=7)
    args = {"x": inp.x, "h0": inp.h0, "Wx": inp.params[0], "Wh": inp.params[1], "b": inp.params[2], "c0": inp.c0}
    for name in args:
        broken = dict(args, **{name: args[name].astype(other)})
        with pytest.raises(TypeError, match=r"(no silent cast|float32 or float64)"):
            F.lstm_forward(broken["x"], broken["h0"], broken["Wx"], broken["Wh"], broken["b"], broken["c0"])
    _, cache = F.lstm_forward(inp.x, inp.h0, *inp.params, inp.c0)
    with pytest.raises(TypeError, match=r"dh has dtype"):
        F.lstm_backward(inp.dh.astype(other), cache)


def test_set_isa_rejects_unknown_name():
    from fastrnn import _core

    before = _core.isa()
    with pytest.raises(ValueError, match=r"isa must be 'generic', 'avx2' or 'avx512', got 'avx1024'"):
        _core.set_isa("avx1024")
    assert _core.isa() == before
