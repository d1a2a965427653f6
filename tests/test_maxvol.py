"""MaxVol (aceuq.maxvol): dominance, brute-force optimum, streaming, degenerate data."""
import itertools

import numpy as np
import pytest

from aceuq import maxvol as mv


def test_dominant_and_brute_force_optimum(rng):
    agree = 0
    for _ in range(20):
        A = rng.normal(size=(9, 3)) * rng.uniform(0.01, 100, size=3)
        res = mv.maxvol(A, tol=1e-9)
        assert res.converged and np.abs(res.coefficients).max() <= 1 + 1e-12
        np.testing.assert_allclose(res.coefficients @ A[res.rows], A, atol=1e-9 * np.abs(A).max())
        best = max(itertools.combinations(range(9), 3), key=lambda c: abs(np.linalg.det(A[list(c)])))
        agree += set(best) == set(res.rows.tolist())
    # MaxVol is a local search; on 9x3 it finds the global optimum nearly always
    assert agree >= 18


def test_tolerance_and_start(rng):
    A = rng.normal(size=(400, 20))
    bad_start = np.arange(20)
    res = mv.maxvol(A, tol=0.05, start=bad_start)
    assert np.abs(res.coefficients).max() <= 1.05 and res.swaps > 0
    capped = mv.maxvol(A, tol=0.0, start=bad_start, max_iters=1)
    assert capped.swaps == 1
    with pytest.raises(ValueError):
        mv.maxvol(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        mv.maxvol(np.full((4, 2), np.nan))


def test_streaming_equals_in_memory(rng):
    A = rng.normal(size=(1500, 30)) * np.logspace(-3, 2, 30)
    full = mv.select_active_set(A)
    same = mv.select_active_set(A, memory_limit=10 * A.nbytes)   # fits: one batch, identical
    np.testing.assert_array_equal(full.rows, same.rows)
    np.testing.assert_array_equal(full.inverse, same.inverse)
    for batch in (100, 400):
        st = mv.select_active_set(A, batch_rows=batch)
        assert st.batches > 1
        assert mv.gamma_of(A, st.inverse).max() <= 1 + 1e-3 + 1e-9
        # both are dominant submatrices, so their volumes are within r^(r/2) (1 + tol)^r of the
        # maximum (Goreinov-Tyrtyshnikov), and of each other
        ld = lambda rows: np.linalg.slogdet(A[rows])[1]
        assert abs(ld(st.rows) - ld(full.rows)) <= 15 * np.log(30) + 30 * np.log(1.001)
    blocks = [A[:700], A[700:]]
    assert mv.gamma_of(A, mv.select_active_set(blocks).inverse).max() <= 1.001 + 1e-9
    assert mv.batch_rows_for(2 ** 20, 30) > 60
    with pytest.raises(ValueError):
        mv.batch_rows_for(100, 30)
    assert mv.parse_memory("2GB") == 2 * 2 ** 30 and mv.parse_memory("500MB") == 500 * 2 ** 20
    assert mv.parse_memory("64kB") == 64 * 2 ** 10 and mv.parse_memory("3 K") == 3072
    assert mv.parse_memory("auto") is None


def test_streamed_rows_meet_the_tolerance_asked_for(rng):
    """The criterion holds at the tolerance given, not only at the default: every row's γ against
    the streamed active set is at most 1 + tol (recomputed here by brute force)."""
    A = np.random.default_rng(3).standard_t(3, size=(3000, 20))
    for tol in (1e-2, 1e-1):
        m = mv.select_active_set(A, tol=tol, batch_rows=40)
        assert m.batches > 1
        g = np.abs(A @ np.linalg.inv(A[m.rows])).max()
        assert g <= 1 + tol + 1e-9, (tol, g)


def test_rank_deficient_data_is_graded_sanely(rng):
    basis = rng.normal(size=(5, 40)) * np.logspace(-2, 2, 40)
    A = rng.normal(size=(300, 5)) @ basis
    A[:, 7] = 0.0                                  # a function that vanishes on all training rows
    assert np.linalg.cond(A) > 1e14
    m = mv.select_active_set(A)
    assert m.rank == 5 and m.condition < 1e8 and m.notes
    assert np.all(np.isfinite(m.inverse))
    assert mv.gamma_of(A, m.inverse).max() <= 1.001 + 1e-9          # training rows interpolate
    inside = rng.normal(size=(20, 5)) * 0.3 @ basis
    inside[:, 7] = 0.0
    assert mv.gamma_of(inside, m.inverse).max() < 10                  # same subspace: modest grade
    outside = inside + 1e-3 * rng.normal(size=inside.shape) * np.abs(A).max(axis=0)
    assert np.all(mv.gamma_of(outside, m.inverse) > 100)              # unseen directions: extrapolation
    # streaming sees the same subspace
    st = mv.select_active_set(A, batch_rows=80)
    assert st.rank == 5 and mv.gamma_of(A, st.inverse).max() <= 1.001 + 1e-9


def test_directions_discarded_by_rank_rtol_still_cover_the_training_rows(rng):
    """A rank_rtol that discards directions the data do span (their spread decays to 1e-5): the
    spread added along them covers the training rows on both sides, so every one still grades
    <= 1 + tol (numpy's max |b A^-1| here)."""
    Q = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    A = (rng.normal(size=(400, 12)) * np.logspace(0, -5, 12)) @ Q
    m = mv.select_active_set(A, rank_rtol=1e-3)
    assert m.rank < 12
    assert np.abs(A @ m.inverse).max() <= 1.001 + 1e-9


def test_a_nearly_vanishing_function_is_floored_not_scaled_up(rng):
    """A function (column) at 1e-22 on every training row, i.e. zero up to rounding: the rank cut
    sees it as missing (rank 9 of 10), and a new atom with a small value there (1e-10) gets a
    grade bounded by the floors (1e-8 of the largest column norm, and of the spread): ~2e3 here.
    Scaling the column up to unit norm would make it a resolved direction and grade that atom
    ~1e11."""
    A = rng.normal(size=(400, 10))
    A[:, 9] = 1e-22 * rng.normal(size=400)
    m = mv.select_active_set(A)
    assert m.rank == 9
    new = rng.normal(size=(5, 10)) * 0.5
    new[:, 9] = 1e-10
    g = mv.gamma_of(new, m.inverse)
    assert np.all(np.isfinite(g)) and g.max() < 1e5, g


def test_working_set_in_memory(rng):
    """In memory MaxVol runs on the rows of largest leverage and refines; every row still
    interpolates, also when refinement is cut short (a MaxVol over all rows finishes)."""
    n, p = 6000, 25
    A = rng.standard_t(3, size=(n, p)) @ (rng.normal(size=(p, p)) * np.logspace(-3, 2, p))
    full = mv.maxvol(A @ np.linalg.inv(np.linalg.qr(A, mode="r")), tol=1e-3)
    ld = lambda rows: np.linalg.slogdet(A[rows])[1]
    for cap in (30, 0):
        m = mv.select_active_set(A, max_refinements=cap)
        assert m.batches == 1 and m.rank == p and not m.notes
        assert mv.gamma_of(A, m.inverse).max() <= 1 + 1e-3 + 1e-9
        assert abs(m.max_gamma - mv.gamma_of(A, m.inverse).max()) < 1e-9
        assert abs(ld(m.rows) - ld(full.rows)) <= p / 2 * np.log(p) + p * np.log(1.001)
    C = np.asfortranarray(rng.normal(size=(50, 7)))
    i, j, big = mv._largest(C)
    assert big == np.abs(C).max() and abs(C[i, j]) == big


def test_a_working_set_that_misses_a_direction_is_finished_over_all_rows(monkeypatch):
    """Rows of largest leverage that all sit on outliers of 24 directions hold no extreme of the
    25th, so MaxVol on them alone leaves ordinary rows above 1 + tol; with refinement cut short,
    the final MaxVol over all rows must bring every row back within the tolerance."""
    rng = np.random.default_rng(0)
    n, p = 6000, 25
    A = rng.normal(size=(n, p))
    outliers = rng.permutation(n)[: 30 * (p - 1)].reshape(p - 1, 30)
    for d in range(p - 1):
        A[outliers[d], d] = rng.choice([-1, 1], 30) * rng.uniform(50, 100, 30)
    graded = []
    grade_top = mv._grade_top
    monkeypatch.setattr(mv, "_grade_top", lambda *a: graded.append(grade_top(*a)[0]) or grade_top(*a))
    m = mv.select_active_set(A, max_refinements=0, pacemaker_start=False)
    assert graded[0] > 1.01  # the working set's MaxVol did leave rows outside the tolerance
    assert mv.gamma_of(A, m.inverse).max() <= 1 + 1e-3 + 1e-9
    assert abs(m.max_gamma - mv.gamma_of(A, m.inverse).max()) < 1e-9
