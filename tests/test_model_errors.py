"""Bad input to the layers and models raises ValueError/TypeError naming the argument."""
import numpy as np
import pytest

import fastrnn
from fastrnn.models import CaptioningRNN, CharRNN

IDS = np.zeros((2, 3), int)
WORDS = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}


def _charrnn():
    return CharRNN(10, hidden_size=8, num_layers=2, cell="lstm", seed=0)


def _lstm():
    return fastrnn.LSTM(4, 6, 2, bidirectional=True, seed=0)


def _captioner():
    return CaptioningRNN(WORDS, input_dim=5, wordvec_dim=4, hidden_dim=6, cell_type="lstm")


def _backward_with_wrong_dout():
    layer = _lstm()
    layer.forward(np.zeros((2, 3, 4), np.float32))
    layer.backward(np.zeros((2, 3, 5), np.float32))


CASES = {
    "charrnn-float-inputs": (lambda: _charrnn().loss(np.zeros((2, 3)), IDS), TypeError, "inputs"),
    "charrnn-id-too-large": (lambda: _charrnn().loss(IDS + 10, IDS), ValueError, r"inputs must lie in \[0, 10\)"),
    "charrnn-negative-id": (lambda: _charrnn().loss(IDS - 1, IDS), ValueError, "inputs"),
    "charrnn-targets-shape": (lambda: _charrnn().loss(IDS, np.zeros((2, 4), int)), ValueError, r"targets.*\(2, 4\)"),
    "charrnn-1d-inputs": (lambda: _charrnn().loss(np.zeros(3, int), np.zeros(3, int)), ValueError, "inputs"),
    "charrnn-none-inputs": (lambda: _charrnn().loss(None, IDS), TypeError, "inputs"),
    "charrnn-bad-state": (lambda: _charrnn().loss(IDS, IDS, (np.zeros((2, 2, 8), np.float32),)), TypeError, "state"),
    "charrnn-step-bad-id": (lambda: _charrnn().step(np.array([11]), None), ValueError, "token_ids"),
    "lstm-wrong-D": (lambda: _lstm().forward(np.zeros((2, 3, 5), np.float32)), ValueError, "input_size = 4"),
    "lstm-2d-x": (lambda: _lstm().forward(np.zeros((2, 3), np.float32)), ValueError, "x must be 3-D"),
    "lstm-float64-into-float32": (lambda: _lstm().forward(np.zeros((2, 3, 4))), TypeError, "x has dtype float64"),
    "lstm-lengths-too-long": (lambda: _lstm().forward(np.zeros((2, 3, 4), np.float32), lengths=[4, 1]), ValueError, "lengths"),
    "lstm-backward-before-forward": (lambda: fastrnn.LSTM(4, 6).backward(np.zeros((2, 3, 6), np.float32)), RuntimeError, "forward"),
    "lstm-wrong-dout": (_backward_with_wrong_dout, ValueError, r"dout.*\(2, 3, 12\)"),
    "lstm-hidden-0": (lambda: fastrnn.LSTM(4, 0), ValueError, "hidden_size"),
    "lstm-layers-0": (lambda: fastrnn.LSTM(4, 3, 0), ValueError, "num_layers"),
    "lstm-dropout-1": (lambda: fastrnn.LSTM(4, 3, 2, dropout=1.0), ValueError, "dropout"),
    "rnn-unknown-nonlinearity": (lambda: fastrnn.RNN(4, 3, nonlinearity="sigmoid"), ValueError, "nonlinearity"),
    "embedding-id-too-large": (lambda: fastrnn.Embedding(10, 4).forward(np.array([[10]])), ValueError, r"\[0, 10\)"),
    "affine-wrong-D": (lambda: fastrnn.TemporalAffine(4, 3).forward(np.zeros((2, 3, 5), np.float32)), ValueError, "D = 4"),
    "softmax-target-too-large": (lambda: fastrnn.temporal_softmax_loss(np.zeros((2, 3, 4), np.float32), IDS + 4),
                                 ValueError, "targets"),
    "captioner-features-shape": (lambda: _captioner().loss(np.zeros((2, 4)), np.zeros((2, 5), int)), ValueError, "features"),
    "captioner-caption-id": (lambda: _captioner().loss(np.zeros((2, 5)), np.zeros((2, 5), int) + 9), ValueError, "captions"),
    "captioner-max-length": (lambda: _captioner().sample(np.zeros((2, 5)), max_length=-1), ValueError, "max_length"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_to_layers_and_models_raises_error_naming_it(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()
