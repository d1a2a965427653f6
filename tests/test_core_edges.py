"""The C++ core at its edges, against pyace, ASE or finite differences.

- reader validations: a rank-1 function with nr 0, a species block with ndensityi 0, and blocks
  with different inner_cutoff_type values are refused with an InputError;
- neighbour search: a pair one ulp inside the cutoff is listed, and cells just below a whole
  number of half-cutoffs (bins as thin as allowed) find every pair ASE finds;
- neighbor_list's pbc given as one flag (a 1-element array) applies to all three directions;
- FinnisSinclair's small-density branch (|rho| below ~1e-6): forces equal pyace's and -dE/dx;
- ndensity-2 embeddings inside the ZBL hand-over and the rho_core_cut window: energies and
  forces equal pyace's, forces are -dE/dx;
- rank-6 functions whose (l4 l5)L2 coupling has l4 + l5 - L2 odd: couplings equal pyace's;
- full projections (dE/dc) of atoms inside the rho_core_cut window equal pyace's.
"""
import math

import numpy as np
import pytest
import yaml
from ase import Atoms

import aceuq
from aceuq._core import neighbor_list
from potentials import CU_RHO_CORE, CUAL_ZBL, Spec, make_potential, pyace_projections
from structures import close_pair
from test_angular import all_functions, make_basis, spec_order
from test_angular import test_couplings_match_pyace as couplings_match_pyace
from test_neighbors import compare_with_ase

pytest.importorskip("pyace")


# ----------------------------------------------------------------------------- reader validations
def rewrite(src, dst, edit):
    with open(src) as fh:
        pot = yaml.safe_load(fh)
    edit(pot)
    with open(dst, "w") as fh:
        yaml.safe_dump(pot, fh)
    return str(dst)


def block(pot, name):
    return next(b for b in pot["species"] if b["speciesblock"] == name)


def test_rank1_function_with_nr_0_is_refused(make_pot, tmp_path):
    # nr is 1-based: nr 0 would index the radial basis at mu * nradbase - 1, out of bounds for the
    # first element, so the reader must refuse it rather than read past the array
    def edit(pot):
        f = next(f for f in block(pot, "Al")["nbody"] if len(f["nr"]) == 1)
        f["nr"] = [0]
    path = rewrite(make_pot("CuAl_sbessel"), tmp_path / "nr0.yaml", edit)
    with pytest.raises(aceuq.InputError, match="nr"):
        aceuq.Potential(path)


def test_ndensity_0_is_refused(make_pot, tmp_path):
    # ndensityi 0 with no parameters and empty coefficient lists is self-consistent but would load
    # as an embedding of nothing (every atom's ACE energy silently zero)
    def edit(pot):
        b = block(pot, "Cu")
        b["ndensityi"], b["parameters"] = 0, []
        for f in b["nbody"]:
            f["c"] = []
    path = rewrite(make_pot("Cu_chebpow"), tmp_path / "nd0.yaml", edit)
    with pytest.raises(aceuq.InputError, match="ndensityi"):
        aceuq.Potential(path)


def test_blocks_with_different_inner_cutoff_types_are_refused(potential_dir, tmp_path):
    # the evaluator switches ZBL on or off for the whole potential (from the first block), so
    # blocks that disagree cannot be evaluated as written
    def edit(pot):
        block(pot, "Cu")["inner_cutoff_type"] = "distance"
    path = rewrite(make_potential(CUAL_ZBL, potential_dir), tmp_path / "mixed.yaml", edit)
    with pytest.raises(aceuq.InputError, match="inner_cutoff_type"):
        aceuq.Potential(path)


# ----------------------------------------------------------------------------- neighbour search
def test_pair_one_ulp_inside_the_cutoff_is_found():
    """'Distance strictly below the cutoff' must hold to the last bit: for a pair whose computed
    squared distance is the largest one with sqrt(r2) < cutoff, the pair is listed (a comparison
    of r2 against a rounded cutoff**2 would drop it)."""
    hits = 0
    for cutoff in np.linspace(2.0, 6.0, 41):
        x = cutoff
        while not math.sqrt(x * x) < cutoff:
            x = np.nextafter(x, 0.0)
        r2 = x * x
        if math.sqrt(np.nextafter(r2, np.inf)) < cutoff:
            continue  # r2 is not the largest such square: not a boundary case
        hits += 1
        pos = np.array([[0.0, 0.0, 0.0], [x, 0.0, 0.0]])
        res = neighbor_list(pos, np.zeros((3, 3)), [False] * 3, float(cutoff))
        assert len(res["index"]) == 2, (cutoff, x)
    assert hits > 5


@pytest.mark.parametrize("ratio", [5.99, 5.999, 7.995])
def test_cells_just_below_a_whole_number_of_half_cutoffs(ratio):
    """Bins are >= cutoff/2 thick; where the cell is just under k half-cutoffs the bin count is
    k - 1, and a search whose stencil is computed for k bins (or with a search radius short by
    even 1 %) misses pairs near the cutoff. Every pair ASE finds must be found."""
    cutoff = 5.0
    L = ratio * cutoff / 2
    k = int(ratio) + 1  # bins per direction: k - 1
    rng = np.random.default_rng(7)
    pos = rng.random((400, 3)) * L
    # a pair along x, 3 bins of width L/k apart but closer than the cutoff: at the far edge of
    # bin 0 and the near edge of bin 3
    pos[0] = [L / k - 1e-4, 0.3 * L, 0.3 * L]
    pos[1] = [3 * L / k + 1e-4, 0.3 * L, 0.3 * L]
    assert pos[1, 0] - pos[0, 0] < cutoff
    atoms = Atoms("Cu" * 400, positions=pos, cell=np.eye(3) * L, pbc=True)
    compare_with_ase(atoms, cutoff)


@pytest.mark.parametrize("flag", [True, False])
def test_one_element_pbc_array_is_broadcast(flag):
    """neighbor_list documents 'pbc : bool or 3 bools' and accepts a 1-element array, broadcast
    to all three directions: reading pbc[1], pbc[2] past the array would give junk flags."""
    rng = np.random.default_rng(3)
    pos = rng.random((20, 3)) * 4.0
    cell = np.eye(3) * 4.0
    for _ in range(20):  # what follows the 1-element array's buffer varies between allocations
        one = neighbor_list(pos, cell, np.array([flag]), 3.0)
        ref = neighbor_list(pos, cell, [flag] * 3, 3.0)
        np.testing.assert_array_equal(one["offsets"], ref["offsets"])
        np.testing.assert_array_equal(one["index"], ref["index"])


# ----------------------------------------------------------------------------- embeddings
def dimer(r):
    return Atoms("Cu2", positions=[[0, 0, 0], [r, 0.1 * r, 0]], pbc=False)


@pytest.mark.parametrize("r", np.linspace(4.9990, 4.99999, 12))
def test_forces_at_tiny_densities_are_minus_gradient_and_pyaces(make_pot, r):
    """FinnisSinclair's F(rho) blends lambda*rho into rho^m for |rho| below ~1e-6
    (g = exp(-(1e6 |rho|)^3)), and its derivative there has a -rho^m dg/drho term that ordinary
    structures (densities far above 1e-6) never reach. A Cu dimer stretched to just inside the
    cutoff has tiny densities: forces must equal pyace's and -dE/dx."""
    from pyace import PyACECalculator

    path = make_pot("Cu_fs2")  # FinnisSinclair, ndensity 2, exponents 1 and 0.5
    pot = aceuq.Potential(path)
    a = dimer(r / np.hypot(1, 0.1))
    f = pot.evaluate(a).forces
    h = 1e-9
    p, m = a.copy(), a.copy()
    p.positions[1, 0] += h
    m.positions[1, 0] -= h
    num = -(pot.evaluate(p, forces=False).energy - pot.evaluate(m, forces=False).energy) / (2 * h)
    b = a.copy()
    b.calc = PyACECalculator(path)
    ref = b.get_forces()
    np.testing.assert_allclose(f, ref, rtol=1e-8, atol=1e-12)
    assert f[1, 0] == pytest.approx(num, rel=1e-4, abs=1e-10)


# ndensity-2 embeddings with an inner cut-off window (the Cu_zbl, CU_RHO_CORE and CUAL_ZBL
# potentials all have ndensity 1)
WINDOW_SPECS = [
    Spec("Cu_zbl_fs2", ["Cu"], npot="FinnisSinclair", fs_parameters=[1, 1, 1, 0.5], ndensity=2, nonlinear=True,
         inner_cutoff_type="zbl", r_in=2.0, delta_in=0.4, core_repulsion=[1.0, 1.0]),
    Spec("Cu_rhocore_fsss2", ["Cu"], radbase="ChebPow", radparameters=[2.0], inner_cutoff_type="density",
         fs_parameters=[1, 1, 1, 0.5], ndensity=2, nonlinear=True, core_repulsion=[100.0, 3.0],
         rho_core_cut=0.006, drho_core_cut=0.003),
]


@pytest.mark.parametrize("spec", WINDOW_SPECS, ids=lambda s: s.name)
def test_ndensity2_inside_window_matches_pyace_and_gradient(potential_dir, spec):
    """Inside the ZBL hand-over or the rho_core_cut window every density's dF/drho is scaled by
    the window function: with two densities, each must be scaled (not just the first)."""
    from pyace import PyACECalculator

    path = make_potential(spec, potential_dir)
    pot = aceuq.Potential(path)
    atoms = close_pair(["Cu"])  # pair at 1.75 A: inside both windows
    res = pot.evaluate(atoms)
    a = atoms.copy()
    a.calc = PyACECalculator(path)
    assert res.energy == pytest.approx(a.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(res.forces, a.get_forces(), rtol=0, atol=1e-8)
    h = 1e-6
    for c in range(3):
        p, m = atoms.copy(), atoms.copy()
        p.positions[0, c] += h
        m.positions[0, c] -= h
        num = -(pot.evaluate(p, forces=False).energy - pot.evaluate(m, forces=False).energy) / (2 * h)
        assert res.forces[0, c] == pytest.approx(num, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- couplings, projections
def test_rank6_functions_with_odd_l4_l5_L2_match_pyace():
    """The (l4 l5)L2 coupling of a rank-6 function carries a sign (-1)^(l4+l5-L2) under a swap
    of its order, which only shows when l4 + l5 - L2 is odd. pacemaker makes such functions once
    rank 6 has nradmax >= 2 and lmax >= 2 (29 of 489 here); test_angular's bases have none."""
    basis = make_basis(["Cu"], [4, 2, 2, 2, 2, 2], [0, 2, 2, 2, 2, 2])
    odd = [f for f in all_functions(basis, 0) if f.rank == 6
           and (lambda m, n, l, L: (l[4] + l[5] - L[2]) % 2)(*spec_order(f))]
    assert odd
    couplings_match_pyace(basis)


def test_full_projections_inside_rho_core_window_match_pyace(potential_dir):
    """Full projections of atoms inside the rho_core_cut window are pyace's F'(rho)*B, not scaled
    by the window (README, projections in full mode), as pacemaker's active sets are built."""
    path = make_potential(CU_RHO_CORE, potential_dir)
    atoms = close_pair(["Cu"])
    ours = aceuq.Potential(path).evaluate(atoms, forces=False, projections="full").projections
    ref = pyace_projections(path, [atoms], full=True)[0]
    assert ours.shape == ref.shape
    # atoms 0 and 1 are inside the window (test_evaluator's test_core_density_window_matches_pyace_and_gradient)
    np.testing.assert_allclose(ours[:2], ref[:2], rtol=0, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
