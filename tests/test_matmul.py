"""fastrnn.functional.matmul: the kernels' own matrix multiply, against numpy.matmul."""
import numpy as np
import pytest

from fastrnn import _core
from fastrnn.functional import matmul

ISAS = ["generic", "avx2", "avx512"][: ["generic", "avx2", "avx512"].index(_core.best_isa()) + 1]
SHAPES = [(1, 1, 1), (1, 7, 33), (2, 129, 13), (13, 33, 129), (70, 600, 97), (0, 5, 3), (4, 0, 3), (4, 5, 0)]


@pytest.fixture(params=ISAS)
def isa(request):
    before = _core.isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy(isa, M, K, N, dtype):
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    got = matmul(a, b)
    assert got.dtype == dtype and got.shape == (M, N)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got, a @ b, rtol=tol, atol=tol * max(1, K))


@pytest.mark.parametrize("make", [
    lambda a, b: (a.T.copy().T, b),                      # Fortran-order A
    lambda a, b: (np.ascontiguousarray(a.T).T, b.T.copy().T),
    lambda a, b: (a[::-1], b[:, ::-1]),                  # negative strides
    lambda a, b: (np.repeat(a, 2, axis=1)[:, ::2], b),   # stride 2
    lambda a, b: (a.astype(a.dtype.newbyteorder(">")), b),  # byte-swapped
], ids=["fortran", "both-transposed", "negative", "strided", "byteswapped"])
def test_matmul_reads_views_like_copies(make):
    rng = np.random.default_rng(3)
    a0 = rng.standard_normal((37, 41))
    b0 = rng.standard_normal((41, 29))
    a, b = make(a0, b0)
    np.testing.assert_array_equal(matmul(a, b), matmul(np.ascontiguousarray(a, dtype=np.float64),
                                                       np.ascontiguousarray(b, dtype=np.float64)))


@pytest.mark.parametrize("K,N", [(100, 79), (16, 32), (17, 5), (33, 47), (256, 100)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_b_gives_the_bits_of_its_contiguous_copy(isa, K, N, dtype):
    # A transposed B is packed by register transposes of whole blocks, a contiguous one row
    # by row; with 40 rows both are packed, then run through the same tiles.
    rng = np.random.default_rng(K * 100 + N)
    a = rng.standard_normal((40, K)).astype(dtype)
    bt = rng.standard_normal((N, K)).astype(dtype)
    np.testing.assert_array_equal(matmul(a, bt.T), matmul(a, np.ascontiguousarray(bt.T)))


@pytest.mark.parametrize("K,N", [(512, 2048), (300, 700), (200, 96), (17, 4096), (1000, 33), (100, 79)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_row_alone_gives_its_bits_in_a_larger_product(isa, K, N, dtype):
    # One row against a large B streams B's rows through sums kept in L1; two or more
    # rows run register tiles. Both must sum every element in the same order (the
    # language model's head relies on it when it computes a few rows at a time).
    rng = np.random.default_rng(K + N)
    a = rng.standard_normal((5, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    whole = matmul(a, b)
    for i in range(5):
        np.testing.assert_array_equal(matmul(a[i:i + 1], b)[0], whole[i])
        np.testing.assert_array_equal(matmul(a[i:i + 2], b), whole[i:i + 2])


def test_matmul_is_bitwise_the_same_for_any_thread_count():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 150)).astype(np.float32)
    before = _core.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            _core.set_num_threads(n)
            results.append(matmul(a, b))
    finally:
        _core.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_matmul_rejects_mismatched_shapes_and_dtypes():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="A .3, 4. and B .5, 2."):
        matmul(a, np.zeros((5, 2), np.float32))
    with pytest.raises(TypeError, match="B has dtype float64"):
        matmul(a, np.zeros((4, 2)))
    with pytest.raises(TypeError, match="A must be a float32 or float64"):
        matmul(np.zeros((3, 4), np.int64), np.zeros((4, 2), np.int64))
