"""aceuq.select with a clustered (.casi) active set, and the frames it hands back, against a
brute-force numpy recomputation of the rule in select.py's docstring and ASE's own reading of
the candidates."""
import numpy as np
import pytest
from ase.io import read, write

import aceuq
from aceuq.activeset import ActiveSet, build_active_set, load_npz
from aceuq.select import select_structures, selected_frames
from maxvol_reference import reference_one_shot, reference_select
from potentials import SPECS, emt_training_set
from structures import selection_candidates, slab

pytest.importorskip("pyace")
TOL = 1e-3


@pytest.fixture(scope="module")
def cu2(tmp_path_factory):
    """Cu potential, a k = 2 clustered active set (.casi) on EMT frames, loaded."""
    import potentials

    folder = tmp_path_factory.mktemp("select_cu")
    path = potentials.make_potential(SPECS["Cu_sbessel"], str(folder))
    pot = aceuq.Potential(path)
    train = emt_training_set(["Cu"], n=20, seed=7)
    built = build_active_set(pot, train, clusters=2)
    assert built.elements["Cu"].k == 2
    aset = ActiveSet.load(built.save(str(folder / "cu.casi")), pot)
    return pot, aset


def _candidates():
    return selection_candidates() + emt_training_set(["Cu"], n=6, seed=103)


def test_clustered_select_follows_the_documented_rule_per_cluster(cu2):
    """select.py's docstring: candidate rows go to the cluster the grader assigns them (for
    assign 'nearest': the nearest centre in the stored transform's space), and MaxVol runs per
    cluster, each from that cluster's active set; a candidate's count is its rows entering any of
    them. Recomputed in numpy from the .casi's arrays."""
    pot, aset = cu2
    cands = _candidates()
    n = len(cands)
    sel = select_structures(pot, cands, aset, n)

    data = load_npz(aset.path)
    proj = pot.projections(cands)["Cu"]
    rows, owner = np.asarray(proj.values), np.asarray(proj.structure)
    # cluster of each row: the nearest centre of the whitened, projected features
    feats = ((rows - data["Cu/mean"]) / data["Cu/scale"]) @ data["Cu/components"].T
    d2 = ((feats[:, None, :] - data["Cu/centers"][None]) ** 2).sum(axis=2)
    clus = np.argmin(d2, axis=1)
    np.testing.assert_array_equal(clus, aset.grade("Cu", rows)[1])
    assert set(clus) == {0, 1}
    # both clusters hold rows of extrapolating candidates: the case discriminates
    invs = [data["Cu/inv/0"], data["Cu/inv/1"]]
    g0 = np.zeros(len(rows))
    for cl in (0, 1):
        m = clus == cl
        g0[m] = np.abs(rows[m] @ invs[cl]).max(axis=1)
        assert g0[m].max() > 1 + TOL
    max_gamma = np.array([g0[owner == s].max() for s in range(n)])
    np.testing.assert_allclose(sel.max_gamma, max_gamma, rtol=1e-8)

    chosen, brought, entered_per_cluster, A = reference_select([np.linalg.inv(inv) for inv in invs], rows, owner,
                                                               clus, max_gamma, n, TOL)
    assert entered_per_cluster[1] > 0 and len(chosen) >= 3
    assert sel.indices == chosen
    # rows brought: MaxVol's path over a working set can end in another optimum than greedy swaps
    # over all rows (module docstring): the rows each pick brings are not compared, only the picks
    assert len(sel.new_rows) == len(brought) and min(sel.new_rows) >= 1
    # every chosen candidate's atoms now interpolate in its cluster's updated active set
    for cl in (0, 1):
        mine = np.isin(owner, chosen) & (clus == cl)
        if mine.any():
            assert np.abs(rows[mine] @ np.linalg.inv(A[cl])).max() <= 1 + TOL + 1e-9


def test_one_shot_ranks_the_rows_of_one_maxvol(cu2):
    """one_shot (pace_select's rule): per cluster, one MaxVol from its active set over all
    candidate rows; candidates ranked by the rows it swaps in (ties: the larger max gamma), none
    without rows. Recomputed with greedy swaps in numpy; its first pick is the greedy rule's."""
    pot, aset = cu2
    cands = _candidates()
    n = len(cands)
    one = select_structures(pot, cands, aset, n, one_shot=True)
    data = load_npz(aset.path)
    proj = pot.projections(cands)["Cu"]
    rows, owner = np.asarray(proj.values), np.asarray(proj.structure)
    clus = aset.grade("Cu", rows)[1]
    invs = [data["Cu/inv/0"], data["Cu/inv/1"]]
    g0 = np.array([np.abs(r @ invs[c]).max() for r, c in zip(rows, clus)])
    max_gamma = np.array([g0[owner == s].max() for s in range(n)])
    picks, counts = reference_one_shot([np.linalg.inv(inv) for inv in invs], rows, owner, clus, max_gamma, n, TOL)
    assert len(picks) >= 3
    # MaxVol over a working set can end in another optimum than greedy swaps over all rows (select's
    # module docstring), a row more or less for some candidates: the leading picks, whose counts
    # stand apart from the rest, are the same, and the ranking follows the rule
    assert one.indices[:4] == picks[:4] and one.new_rows[:4] == counts[:4]
    assert counts[3] >= counts[4] + 1 and 0 not in one.new_rows
    keys = [(-r, -max_gamma[i]) for i, r in zip(one.indices, one.new_rows)]
    assert keys == sorted(keys)
    greedy = select_structures(pot, cands, aset, len(picks))
    assert greedy.indices[0] == one.indices[0] and greedy.new_rows[0] == one.new_rows[0]
    assert greedy.indices != one.indices  # the rules differ after the first pick on this case


def test_candidates_of_the_second_cluster_are_selected(cu2):
    """Candidates whose atoms all fall in cluster 1 (and extrapolate there) are selectable."""
    pot, aset = cu2
    cands = _candidates()
    grades = aset.gamma(cands)
    only1 = [i for i, (g, c) in enumerate(grades) if np.all(c == 1) and g.max() > 1 + TOL]
    assert only1, [np.bincount(c, minlength=2) for _, c in grades]
    sel = select_structures(pot, cands, aset, len(cands))
    assert set(only1) <= set(sel.indices)


def test_selected_frames_keep_labels_and_the_candidates_max_gamma(cu2, tmp_path):
    """selected_frames: copies in the order chosen, with the candidate's stored energy and forces
    (as ASE reads them from the input file) and max_gamma = the candidate's own largest γ against
    the initial active set (ActiveSet.gamma)."""
    pot, aset = cu2
    cands = _candidates()
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for a in cands:
        b = a.copy()
        b.info = {}
        b.arrays.pop("forces_ref", None)
        b.calc = EMT()
        e, f = b.get_potential_energy(), b.get_forces()
        b.calc = SinglePointCalculator(b, energy=e, forces=f)
        b.info["counted_max_gamma"] = 0.123  # an earlier selection's (of cut-outs): not carried over
        labelled.append(b)
    path = tmp_path / "cands.extxyz"
    write(path, labelled, format="extxyz")
    frames = aceuq.data.read_structures(str(path))
    ref = read(path, ":")
    sel = select_structures(pot, frames, aset, 4)
    out = selected_frames(frames, sel)
    assert len(out) == 4 == len(sel.indices)
    gammas = aset.gamma(frames)
    assert len({round(gammas[i][0].max(), 6) for i in sel.indices}) == 4  # distinct: discriminates
    for a, i, rows in zip(out, sel.indices, sel.new_rows):
        assert a.info["candidate_index"] == i
        assert a.info["active_rows_added"] == rows
        assert a.info["max_gamma"] == pytest.approx(gammas[i][0].max(), rel=1e-10)
        assert "counted_max_gamma" not in a.info
        np.testing.assert_array_equal(a.positions, ref[i].positions)
        assert a.get_potential_energy() == ref[i].get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), ref[i].get_forces())
        assert a is not frames[i]


def test_a_singular_active_set_takes_the_rows_that_restore_its_rank():
    """An active set of rank 5 in 10 dimensions (stored with its pseudo-inverse, as pacemaker
    stores one built on data that never activate some functions) and candidate rows that leave
    its span by a little: the rows MaxVol takes make the active set whole (full rank) and every
    row then interpolates (γ <= 1 + tol)."""
    from aceuq.select import _absorb, _Group, _whole

    rng = np.random.default_rng(0)
    p = 10
    B = rng.normal(size=(5, p))
    A = rng.normal(size=(p, 5)) @ B
    rows = rng.normal(size=(50, 5)) @ B + 1e-3 * rng.normal(size=(50, p))
    m, inv = _whole(A.copy(), np.linalg.pinv(A))
    # within the span the grading matrix is the stored one
    np.testing.assert_allclose(B @ inv @ A, B @ np.linalg.pinv(A) @ A, rtol=1e-6, atol=1e-6)
    grp = _Group(m, inv, rows, np.zeros(50, dtype=int), np.empty((0, p)))
    _absorb(grp, np.arange(len(rows)), TOL, 1000)
    assert np.linalg.matrix_rank(grp.matrix) == p
    assert np.abs(rows @ np.linalg.inv(grp.matrix)).max() <= 1 + TOL + 1e-9


def test_select_on_a_pacemaker_active_set_of_data_that_leave_functions_unused(make_pot, tmp_path):
    """pyace's MaxVol on Cu/Al frames and separate Ni frames (no atom ever sees the third element:
    pacemaker's "zero columns ... add diagonal eps") stores singular inverses. Greedy select on
    ternary candidates runs and takes structures (it failed with RankDeficientError); the
    candidates' max γ is the file's own grading."""
    import os

    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_A_active_inverse, compute_active_set, save_active_inverse_set

    from potentials import pyace_projections

    path = make_pot("CuAlNi_chebexpcos")
    frames = emt_training_set(["Cu", "Al"], n=20, seed=7) + emt_training_set(["Ni"], n=20, seed=8)
    active = compute_active_set(pyace_projections(path, frames, False))
    active = active[0] if isinstance(active, tuple) else active
    inverse = compute_A_active_inverse(active)
    asi = os.path.join(str(tmp_path), "CuAlNi.asi")
    save_active_inverse_set(asi, inverse, elements_name=list(ACEBBasisSet(path).elements_name))
    stored = load_npz(asi)
    assert all(np.linalg.matrix_rank(m) < len(m) for m in stored.values())  # the case discriminates
    pot = aceuq.Potential(path)
    aset = ActiveSet.load(asi, pot)
    cands = emt_training_set(["Cu", "Al", "Ni"], n=10, seed=11)
    sel = select_structures(pot, cands, aset, 3)
    assert len(sel.indices) == 3 and all(r > 0 for r in sel.new_rows)
    for i, a in enumerate(cands):
        assert sel.max_gamma[i] == pytest.approx(aset.gamma(a)[0].max(), rel=1e-12)


def test_whole_leaves_an_invertible_active_set_as_it_is():
    """An invertible but ill-conditioned active set (aceuq's own, condition ~1e14) is not
    completed: its matrix and inverse come back unchanged."""
    from aceuq.select import _whole

    rng = np.random.default_rng(4)
    Q1, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    Q2, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    m = (Q1 * np.logspace(0, -14, 12)) @ Q2.T
    inv = np.linalg.inv(m)
    m2, inv2 = _whole(m, inv)
    assert m2 is m and inv2 is inv


def test_select_on_a_singular_active_set_whose_span_no_candidate_completes(tmp_path):
    """A singular active set (rank 5 of 10, its pseudo-inverse stored) and candidates inside its
    span: greedy select must not fail on a singular submatrix; it takes the candidates that
    enlarge the volume within the span and stops when the rest interpolate."""
    from aceuq.select import _greedy, _Group, _whole

    rng = np.random.default_rng(1)
    p = 10
    B = rng.normal(size=(5, p))
    A = rng.normal(size=(p, 5)) @ B
    rows = 3 * rng.normal(size=(40, 5)) @ B  # in the span, some beyond the active set's volume
    owner = np.repeat(np.arange(8), 5)
    m, inv = _whole(A.copy(), np.linalg.pinv(A))
    groups = {("X", 0): _Group(m, inv, rows, owner, np.empty((0, p)))}
    gmax = np.zeros(8)
    np.maximum.at(gmax, owner, np.abs(rows @ np.linalg.pinv(A)).max(axis=1))
    chosen, brought = _greedy(groups, gmax, 8, TOL, 1000, False)
    assert chosen and all(b > 0 for b in brought)
    # afterwards every candidate row interpolates within the span
    g = groups[("X", 0)]
    assert np.abs(rows @ g.inverse).max() <= 1 + TOL + 1e-6


def test_counted_masks_must_fit_the_candidates(cu2):
    """`counted` takes one mask per candidate, one entry per atom: anything else is refused with
    an error naming what does not fit."""
    pot, aset = cu2
    cands = _candidates()[:2]
    with pytest.raises(ValueError, match="counted: 1 masks for 2 candidates"):
        select_structures(pot, cands, aset, 1, counted=[np.ones(len(cands[0]), dtype=bool)])
    with pytest.raises(ValueError, match=f"counted: candidate 1 has {len(cands[1])} atoms"):
        select_structures(pot, cands, aset, 1, counted=[np.ones(len(cands[0]), dtype=bool), np.ones(3, dtype=bool)])
    # a mask of the first atom only counts that atom: max γ is its γ
    sel = select_structures(pot, cands, aset, 1, counted=[np.arange(len(a)) == 0 for a in cands])
    np.testing.assert_allclose(sel.max_gamma, [aset.gamma(a)[0][0] for a in cands], rtol=1e-10)
    # 0/1 integers are masks too; other numbers are refused
    ints = select_structures(pot, cands, aset, 1, counted=[(np.arange(len(a)) == 0).astype(int) for a in cands])
    np.testing.assert_array_equal(ints.max_gamma, sel.max_gamma)
    with pytest.raises(ValueError, match="counted: the mask of candidate 0 holds float64 values"):
        select_structures(pot, cands, aset, 1, counted=[np.ones(len(a)) for a in cands])


def test_one_shot_note_says_copies_add_nothing_beside_each_other(cu2):
    """Two copies of one extrapolating structure: one MaxVol takes rows of one copy only (the
    other's are the same rows), so one-shot picks one; its note does not call the other
    interpolating, which the greedy rule's note would."""
    pot, aset = cu2
    s = slab(["Cu"])
    sel = select_structures(pot, [s, s.copy()], aset, 2, one_shot=True)
    assert len(sel.indices) == 1 and min(sel.max_gamma) > 1 + TOL
    assert "own rows of the one MaxVol" in sel.notes[0] and "2 candidates in all" in sel.notes[0]
    greedy = select_structures(pot, [s, s.copy()], aset, 2)
    assert greedy.indices == sel.indices and "interpolate" in greedy.notes[0]


def test_notes_say_why_fewer_structures_than_asked_are_selected(cu2):
    """Asked for more structures than there are candidates: when every candidate is taken the
    note says so, otherwise that the rest interpolate (their γ against the grown set <= 1 + tol)."""
    pot, aset = cu2
    novel = [slab(["Cu"])]
    sel = select_structures(pot, novel, aset, 3)
    assert sel.indices == [0]
    assert sel.notes == ["every candidate (1) is selected: fewer than the 3 requested"]
    # a training frame interpolates: nothing selected, and the note says why
    again = select_structures(pot, emt_training_set(["Cu"], n=20, seed=7)[:1], aset, 2)
    assert again.indices == [] and "interpolate" in again.notes[0]
