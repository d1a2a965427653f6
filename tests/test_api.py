"""The Python API used as scripts and notebooks use it: threads, calculators reused, changed
coefficients, selections of structures that carry a calculator."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import aceuq
from aceuq import ACECalculator
from aceuq.activeset import ActiveSet, build_active_set
from potentials import emt_training_set
from structures import cluster, rattled_bulk

pytest.importorskip("pyace")


def test_threads_share_a_potential_and_an_active_set(make_pot, tmp_path):
    """One Potential (and one ActiveSet on it) used from several threads at once, as a thread
    pool does: the same numbers as one after the other (each thread evaluates with its own
    scratch space; a shared one crashed or mixed up results)."""
    pot = aceuq.Potential(make_pot("CuAl_sbessel"))
    aset = ActiveSet.load(build_active_set(pot, emt_training_set(["Cu", "Al"], n=12, seed=3)).save(
        str(tmp_path / "a.asi")), pot)
    frames = [rattled_bulk(["Cu", "Al"], seed=s).repeat((2, 1, 1)) for s in range(24)]
    serial = [(pot.evaluate(a), aset.gamma(a)[0]) for a in frames]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            both = list(pool.map(lambda a: (pot.evaluate(a), aset.gamma(a)[0]), frames))
            for (r, g), (r0, g0) in zip(both, serial):
                assert r.energy == r0.energy
                np.testing.assert_array_equal(r.forces, r0.forces)
                np.testing.assert_array_equal(g, g0)


def test_full_mode_active_set_after_set_coefficients(make_pot, tmp_path):
    """Full projections (dE/dc) depend on the coefficients: a full-mode active set refuses to grade
    the projections of a potential whose coefficients differ from those it was built for (it gave
    γ of 5e4 on its own training atoms), whichever Potential object computes them (its own, a
    calculator's, select_structures'); the same coefficients again are accepted, and a linear set
    grades on (the basis is unchanged)."""
    from aceuq.select import select_structures

    path = make_pot("Cu_fs2")
    pot, other = aceuq.Potential(path), aceuq.Potential(path)
    train = emt_training_set(["Cu"], n=16, seed=3)
    saved = build_active_set(pot, train, mode="full", clusters=1).save(str(tmp_path / "f.casi"))
    full = ActiveSet.load(saved, pot)
    linear = ActiveSet.load(build_active_set(pot, train).save(str(tmp_path / "l.asi")), pot)
    assert full.mode == "full" and max(g.max() for g, _ in full.gamma(train)) < 1.01
    before = linear.gamma(train)
    c0 = other.coefficients("Cu")
    c = c0.copy()
    c[:, 1] *= 3.0
    atoms = train[0].copy()
    atoms.calc = ACECalculator(other, active_set=full)  # accepted: the same coefficients, so far
    other.set_coefficients("Cu", c)  # the calculator's and the selection's potential, not the set's
    with pytest.raises(ValueError, match="was built for other coefficients"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="was built for other coefficients"):
        select_structures(other, train, full, 1)
    other.set_coefficients("Cu", c0)  # the same coefficients again
    atoms.calc = ACECalculator(other, active_set=full)
    atoms.get_potential_energy()
    assert atoms.calc.results["gamma"].max() < 1.01
    pot.set_coefficients("Cu", c)  # the set's own potential
    with pytest.raises(ValueError, match="was built for other coefficients"):
        full.gamma(train[0])
    for (g, k), (g0, k0) in zip(linear.gamma(train), before):
        np.testing.assert_array_equal(g, g0)
    with pytest.raises(ValueError, match="not all finite"):
        pot.set_coefficients("Cu", np.full_like(c, np.nan))


def test_direct_calculate_keeps_no_results_of_another_structure(make_pot):
    """calculate() called directly (as ASE's calculate_properties does) on a bulk cell, then on a
    cluster: no stress of the bulk cell is left behind for the cluster."""
    calc = ACECalculator(make_pot("CuAl_sbessel"))
    bulk, free = rattled_bulk(["Cu", "Al"], seed=1), cluster(["Cu", "Al"])
    calc.calculate(bulk, ["energy", "stress"])
    assert "stress" in calc.results
    calc.calculate(free, ["energy"])
    assert "stress" not in calc.results
    assert calc.results["energy"] == pytest.approx(aceuq.Potential(calc.potential.path).evaluate(free).energy,
                                                   rel=1e-12)


def test_selected_frames_of_candidates_carrying_a_calculator(make_pot, tmp_path):
    """Candidates in memory with an aceuq calculator attached (energies, forces and gamma in its
    results): the selected copies keep what ASE stores (energy, forces), not gamma."""
    from aceuq.select import select_structures, selected_frames

    pot = aceuq.Potential(make_pot("CuAl_sbessel"))
    aset = ActiveSet.load(build_active_set(pot, emt_training_set(["Cu", "Al"], n=12, seed=3)).save(
        str(tmp_path / "a.asi")), pot)
    cands = [rattled_bulk(["Cu", "Al"], seed=50 + s) for s in range(4)]
    for a in cands:
        a.calc = ACECalculator(pot, active_set=aset)
        a.get_potential_energy()
        assert "gamma" in a.calc.results
    sel = select_structures(pot, cands, aset, 2)
    frames = selected_frames(cands, sel)
    assert len(frames) == len(sel.indices) >= 1
    for f, i in zip(frames, sel.indices):
        assert f.get_potential_energy() == cands[i].get_potential_energy()
        np.testing.assert_array_equal(f.get_forces(), cands[i].get_forces())
    # one calculator shared by all candidates holds the last one's results: no copy takes them
    shared = ACECalculator(pot)
    for a in cands:
        a.calc = shared
        a.get_potential_energy()
    frames = selected_frames(cands, select_structures(pot, cands, aset, 2))
    for f in frames:
        i = f.info["candidate_index"]
        assert f.calc is None if i != len(cands) - 1 else f.get_potential_energy() == pot.evaluate(cands[i]).energy


def test_one_structure_or_none(make_pot, tmp_path):
    """projections and build_active_set take one Atoms as evaluate and gamma do; selecting from no
    candidates is one clear error, and so is a file name given as structures."""
    from aceuq.select import select_structures

    pot = aceuq.Potential(make_pot("CuAl_sbessel"))
    atoms = rattled_bulk(["Cu", "Al"], seed=1).repeat((3, 2, 2))
    one, listed = pot.projections(atoms), pot.projections([atoms])
    for el in listed:
        np.testing.assert_array_equal(one[el].values, listed[el].values)
    built = build_active_set(pot, atoms)
    assert set(built.elements) == {"Cu", "Al"}
    with pytest.raises(ValueError, match="no structures to select from"):
        select_structures(pot, [], None, 1)
    # the active set's potential may be given as its file
    saved = built.save(str(tmp_path / "one.casi"))
    aset = ActiveSet.load(saved, make_pot("CuAl_sbessel"))
    np.testing.assert_array_equal(aset.gamma(atoms)[0], ActiveSet.load(saved, pot).gamma(atoms)[0])
    # a file name where structures belong says to read the file; so does a list holding one
    path = str(tmp_path / "x.extxyz")
    for call in (lambda: pot.evaluate(path), lambda: pot.projections(path), lambda: aset.gamma(path),
                 lambda: build_active_set(pot, path), lambda: select_structures(pot, path, aset, 1)):
        with pytest.raises(TypeError, match=r"ase.Atoms or a list of them, not the file name '.*x.extxyz': read it "
                                            r"first"):
            call()
    with pytest.raises(TypeError, match=r"Potential.evaluate: item 1 is a str, not an ase.Atoms"):
        pot.evaluate([atoms, path])


def test_infinite_scores_rank_above_huge_finite_ones():
    """An overflowed γ (inf) is detected above any finite one (1e17, which max + 1 would tie, and
    the largest double); nan and -inf rank below everything."""
    from aceuq.metrics import novelty_detection

    assert novelty_detection([1e17], [np.inf]).roc_auc == 1.0
    assert novelty_detection([np.inf], [1e17]).roc_auc == 0.0
    assert novelty_detection([1.0, np.finfo(float).max], [np.inf]).roc_auc == 1.0
    assert novelty_detection([np.nan, -np.inf], [0.0]).roc_auc == 1.0


def test_precomputed_projections_of_the_other_mode_are_refused(make_pot, tmp_path):
    """build_active_set(mode="full", projections=<linear ones>) would build a set of the wrong
    projections (one density and a non-linear embedding: as wide as full ones, so nothing else
    notices): refused, also when only the width tells (two densities)."""
    from aceuq.potential import ElementProjections

    text = open(make_pot("Cu_chebexpcos")).read()
    assert text.count("parameters: [1, 1]") == 1
    sqrt = tmp_path / "Cu_sqrt.yaml"  # F(ρ) = sqrt(ρ), one density
    sqrt.write_text(text.replace("parameters: [1, 1]", "parameters: [1, 0.5]"))
    one = aceuq.Potential(str(sqrt))
    assert one.n_projections("Cu", "linear") == one.n_projections("Cu", "full")
    train = emt_training_set(["Cu"], n=16, seed=3)
    with pytest.raises(ValueError, match="linear projections .* built on full projections"):
        build_active_set(one, train, mode="full", projections=one.projections(train))
    pot = aceuq.Potential(make_pot("Cu_fs2"))
    linear = pot.projections(train)
    with pytest.raises(ValueError, match="linear projections .* built on full projections"):
        build_active_set(pot, train, mode="full", projections=linear)
    bare = {el: ElementProjections(p.values, p.structure, p.atom) for el, p in linear.items()}
    with pytest.raises(ValueError, match="given projections .* built on full projections"):
        build_active_set(pot, train, mode="full", projections=bare)
    assert build_active_set(pot, train, projections=bare).mode == "linear"


def test_maxvol_arguments_are_checked_as_the_cli_checks_them(make_pot, tmp_path):
    """tol NaN or max_iters 0 made select_structures return an empty selection silently, and a
    rank_rtol or memory_limit the build cannot use failed deep inside it: each is a ValueError
    naming the argument; memory_limit takes '2GB' as --memory-limit does."""
    from aceuq.select import select_structures

    pot = aceuq.Potential(make_pot("CuAl_sbessel"))
    frames = [rattled_bulk(["Cu", "Al"], seed=s).repeat((3, 3, 2)) for s in range(3)]
    built = build_active_set(pot, frames[0], memory_limit="2GB")
    aset = ActiveSet.load(built.save(str(tmp_path / "a.asi")), pot)
    assert len(select_structures(pot, frames[1:], aset, 1).indices) == 1
    for kwargs in ({"tol": float("nan")}, {"tol": -1.0}, {"max_iters": 0}, {"max_iters": 2.5}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            select_structures(pot, frames[1:], aset, 1, **kwargs)
    for kwargs, name in (({"tol": float("nan")}, "tol"), ({"max_iters": -1}, "max_iters"),
                         ({"rank_rtol": 5}, "rank_rtol"), ({"rank_rtol": float("nan")}, "rank_rtol"),
                         ({"memory_limit": "abc"}, "memory limit"), ({"memory_limit": -5}, "memory limit")):
        with pytest.raises(ValueError, match=name):
            build_active_set(pot, frames[0], **kwargs)
