"""Benchmark: fastrnn's compiled ``Vocab.encode`` against the plain-Python encoder.

The plain encoder is min-char-rnn's ``[char_to_ix[ch] for ch in data]``; both run on about
1 MB of :func:`fastrnn.data.default_corpus` text and must give the same ids.

    pytest bench/bench_encode.py                  # pytest-benchmark, group "encode"
    python bench/bench_encode.py                  # prints the times and the speed-up
"""
from __future__ import annotations

import timeit
from typing import Dict, List

import numpy as np
import pytest

from fastrnn.data import Vocab, default_corpus

CORPUS_CHARS = 1_000_000


def python_encode(stoi: Dict[str, int], text: str) -> List[int]:
    """The plain-Python encoder: a list comprehension over a dict."""
    return [stoi[ch] for ch in text]


@pytest.fixture(scope="module")
def corpus():
    text = default_corpus(CORPUS_CHARS)
    vocab = Vocab.from_text(text)
    return text, vocab, dict(vocab.stoi)


@pytest.mark.benchmark(group="encode")
def test_encode_cython(benchmark, corpus):
    text, vocab, stoi = corpus
    ids = benchmark(vocab.encode, text)
    np.testing.assert_array_equal(ids, np.array(python_encode(stoi, text), dtype=np.int32))


@pytest.mark.benchmark(group="encode")
def test_encode_python(benchmark, corpus):
    text, vocab, stoi = corpus
    ids = benchmark(python_encode, stoi, text)
    np.testing.assert_array_equal(np.array(ids, dtype=np.int32), vocab.encode(text))


def main() -> None:
    text = default_corpus(CORPUS_CHARS)
    vocab = Vocab.from_text(text)
    stoi = dict(vocab.stoi)
    assert np.array_equal(vocab.encode(text), np.array(python_encode(stoi, text), dtype=np.int32))

    def best(fn, number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number

    t_cy = best(lambda: vocab.encode(text), 20)
    t_py = best(lambda: python_encode(stoi, text), 3)
    print(f"encode {len(text):,} characters ({len(vocab)} distinct)")
    print(f"  Cython Vocab.encode      {t_cy * 1e3:8.3f} ms")
    print(f"  Python list comprehension {t_py * 1e3:7.3f} ms")
    print(f"  speed-up: {t_py / t_cy:.1f}x")


if __name__ == "__main__":
    main()
