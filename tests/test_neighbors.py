"""Tests of the C++ cell-list neighbour search (aceuq._core.neighbor_list) against ASE."""
import itertools

import numpy as np
import pytest

ase = pytest.importorskip("ase")
from ase import Atoms  # noqa: E402
from ase.build import bulk, fcc111  # noqa: E402
from ase.neighborlist import neighbor_list as ase_neighbor_list  # noqa: E402

from aceuq._core import neighbor_list  # noqa: E402


# ----------------------------------------------------------------------------- helpers
def ours(atoms, cutoff, cell=None, pbc=None):
    cell = atoms.cell.array if cell is None else cell
    pbc = atoms.pbc if pbc is None else pbc
    return neighbor_list(atoms.positions, cell, pbc, cutoff)


def per_atom_sorted(n, i, j, D):
    """Per atom, the neighbour entries (j, D) in a canonical order."""
    out = []
    for a in range(n):
        sel = i == a
        jj, DD = j[sel], D[sel]
        key = np.round(DD, 5)
        order = np.lexsort((key[:, 2], key[:, 1], key[:, 0], jj))
        out.append((jj[order], DD[order]))
    return out


def check_structure(res, n, cutoff):
    off, idx, dvec, dist = res["offsets"], res["index"], res["dvec"], res["dist"]
    m = len(idx)
    assert off.shape == (n + 1,) and off[0] == 0 and off[-1] == m
    assert np.all(np.diff(off) >= 0)
    assert dvec.shape == (m, 3) and dist.shape == (m,)
    np.testing.assert_allclose(dist, np.linalg.norm(dvec, axis=1), rtol=1e-14, atol=1e-14)
    assert np.all(dist < cutoff)
    i = np.repeat(np.arange(n), np.diff(off))
    # never the atom itself at zero shift
    assert not np.any((i == idx) & (dist < 1e-12))
    return i


def check_lattice_consistent(atoms, res, i, cell=None, pbc=None):
    """dvec - (r_j - r_i) must be an integer lattice translation along periodic directions."""
    cell = atoms.cell.array if cell is None else np.asarray(cell, float)
    pbc = atoms.pbc if pbc is None else np.asarray(pbc, bool)
    pos = atoms.positions
    T = res["dvec"] - (pos[res["index"]] - pos[i])
    if not pbc.any():
        np.testing.assert_allclose(T, 0.0, atol=1e-12)
        return
    per = np.flatnonzero(pbc)
    A = cell[per]  # periodic lattice vectors
    S, *_ = np.linalg.lstsq(A.T, T.T, rcond=None)
    S = S.T
    scale = max(1.0, np.abs(pos).max())
    np.testing.assert_allclose(S, np.round(S), atol=1e-9 * scale)
    np.testing.assert_allclose(np.round(S) @ A, T, atol=1e-9 * scale)


def compare_with_ase(atoms, cutoff):
    n = len(atoms)
    res = ours(atoms, cutoff)
    i = check_structure(res, n, cutoff)
    check_lattice_consistent(atoms, res, i)
    ai, aj, aD, ad = ase_neighbor_list("ijDd", atoms, cutoff)
    assert len(ai) == len(res["index"]), "different number of pairs than ASE"
    mine = per_atom_sorted(n, i, res["index"], res["dvec"])
    ref = per_atom_sorted(n, ai, aj, aD)
    for a in range(n):
        np.testing.assert_array_equal(mine[a][0], ref[a][0], err_msg=f"atom {a}")
        np.testing.assert_allclose(mine[a][1], ref[a][1], atol=1e-9, err_msg=f"atom {a}")
    return res, i


def brute_force(pos, cell, pbc, cutoff):
    """Reference by explicit enumeration of lattice images (small systems only)."""
    pos = np.asarray(pos, float)
    cell = np.asarray(cell, float)
    pbc = np.asarray(pbc, bool)
    per = np.flatnonzero(pbc)
    ranges = [[0]] * 3
    if len(per):
        A = cell[per]
        # lattice extent: span of the positions plus cutoff, in units of the periodic heights
        G = np.linalg.pinv(A)  # columns: reciprocal vectors within span(A)
        heights = 1.0 / np.linalg.norm(G, axis=0)
        span = pos.max(0) - pos.min(0)
        for k, d in enumerate(per):
            nmax = int(np.ceil((cutoff + np.linalg.norm(span)) / heights[k])) + 1
            ranges[d] = range(-nmax, nmax + 1)
    out = []
    for s in itertools.product(*ranges):
        T = np.asarray(s, float) @ cell if len(per) else np.zeros(3)
        D = pos[None, :, :] + T - pos[:, None, :]
        d = np.linalg.norm(D, axis=2)
        ii, jj = np.nonzero(d < cutoff)
        for a, b in zip(ii, jj):
            if a == b and not any(s):
                continue
            out.append((a, b, D[a, b]))
    i = np.array([o[0] for o in out], int)
    j = np.array([o[1] for o in out], int)
    D = np.array([o[2] for o in out], float).reshape(-1, 3)
    return i, j, D


def compare_with_brute(pos, cell, pbc, cutoff):
    pos = np.asarray(pos, float)
    n = len(pos)
    res = neighbor_list(pos, np.asarray(cell, float), np.asarray(pbc, bool), cutoff)
    i = check_structure(res, n, cutoff)
    bi, bj, bD = brute_force(pos, cell, pbc, cutoff)
    assert len(bi) == len(res["index"])
    mine = per_atom_sorted(n, i, res["index"], res["dvec"])
    ref = per_atom_sorted(n, bi, bj, bD)
    for a in range(n):
        np.testing.assert_array_equal(mine[a][0], ref[a][0], err_msg=f"atom {a}")
        np.testing.assert_allclose(mine[a][1], ref[a][1], atol=1e-9, err_msg=f"atom {a}")
    return res


# ----------------------------------------------------------------------------- vs ASE
@pytest.mark.parametrize("cutoff", [3.0, 5.0, 6.2])
def test_bulk_cu_supercell(cutoff):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 4, 4))
    res, i = compare_with_ase(atoms, cutoff)
    counts = np.diff(res["offsets"])
    assert np.all(counts == counts[0])  # perfect crystal: same coordination everywhere
    if cutoff == 3.0:
        assert counts[0] == 12


def test_bulk_cu_rattled():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.1, seed=3)
    compare_with_ase(atoms, 5.5)


def test_tiny_periodic_cell_many_images():
    atoms = bulk("Cu", "fcc", a=3.6)  # 1-atom primitive cell, heights ~2.08 A
    res, i = compare_with_ase(atoms, 7.0)
    assert len(res["index"]) > 100  # hundreds of images of the atom itself
    assert np.all(res["index"] == 0)


def test_cells_no_matter_can_fill_are_refused_before_listing_neighbours():
    """A periodic cell 1e-5 A thick (a unit mistake, a corrupted file) or atoms packed far denser
    than matter would list millions of images per atom, gigabytes, before any distance is
    checked: refused at once. Partly periodic cells are held to the thickness too. The bounds
    leave real matter alone: the densest solid at a 12 A cutoff, thin periodic directions of
    0.15 A."""
    for pbc in (True, [False, False, True]):
        with pytest.raises(ValueError, match="cell is 0.000010 A thick along lattice vector 3"):
            neighbor_list(np.zeros((1, 3)), np.diag([2.5, 2.5, 1e-5]), pbc, 5.0)
    crowded = bulk("Cu", "fcc", a=3.61, cubic=True)
    crowded.set_cell(crowded.cell * 0.05, scale_atoms=True)
    with pytest.raises(ValueError, match="far denser than matter"):
        neighbor_list(crowded.positions, crowded.cell.array, True, 7.0)
    diamond = bulk("C", "diamond", a=3.567)
    assert len(neighbor_list(diamond.positions, diamond.cell.array, True, 12.0)["index"]) > 2000
    assert len(neighbor_list(np.zeros((1, 3)), np.diag([5.0, 5.0, 0.15]), [True, True, True], 1.0)["index"]) > 0


def test_tiny_cell_two_atoms_cutoff_larger_than_cell():
    atoms = Atoms("CuAu", positions=[[0.1, 0.2, 0.3], [1.2, 0.9, 1.1]],
                  cell=[[2.0, 0.1, 0.0], [0.3, 1.8, 0.0], [0.2, -0.4, 2.2]], pbc=True)
    compare_with_ase(atoms, 6.3)


def test_triclinic_rattled():
    rng = np.random.default_rng(7)
    cell = np.array([[7.0, 0.0, 0.0], [2.5, 6.3, 0.0], [-1.7, 2.1, 6.8]])
    frac = rng.random((40, 3))
    atoms = Atoms("Cu40", scaled_positions=frac, cell=cell, pbc=True)
    atoms.rattle(0.2, seed=1)
    compare_with_ase(atoms, 5.0)
    compare_with_ase(atoms, 9.0)  # cutoff larger than cell heights


def test_strongly_skewed_cell():
    rng = np.random.default_rng(11)
    cell = np.array([[5.0, 0.0, 0.0], [4.6, 1.5, 0.0], [4.3, 1.2, 1.4]])
    atoms = Atoms("H6", scaled_positions=rng.random((6, 3)), cell=cell, pbc=True)
    compare_with_ase(atoms, 4.0)


def test_slab_with_vacuum_mixed_pbc():
    atoms = fcc111("Cu", size=(3, 3, 4), a=3.6, vacuum=8.0)
    atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=2)
    res, i = compare_with_ase(atoms, 6.0)
    # no pair spans the vacuum through the open direction
    assert np.abs(res["dvec"][:, 2]).max() < 6.0


def test_slab_atoms_outside_cell_in_open_direction():
    atoms = fcc111("Cu", size=(2, 2, 3), a=3.6, vacuum=2.0)
    atoms.pbc = [True, True, False]
    atoms.positions[:, 2] += 25.0  # far above the cell in the non-periodic direction
    compare_with_ase(atoms, 5.0)


def test_wire_one_periodic_direction():
    rng = np.random.default_rng(5)
    atoms = Atoms("C12", positions=rng.random((12, 3)) * [4.0, 6.0, 6.0],
                  cell=[[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], pbc=[True, False, False])
    compare_with_ase(atoms, 5.5)


def test_open_cluster_zero_cell():
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar60", positions=rng.normal(scale=5.0, size=(60, 3)))
    assert not atoms.cell.array.any() and not atoms.pbc.any()
    res, i = compare_with_ase(atoms, 4.0)
    pos = atoms.positions
    np.testing.assert_array_equal(res["dvec"], pos[res["index"]] - pos[i])


def test_open_cluster_cell_ignored():
    # an arbitrary (even singular) cell must not matter when nothing is periodic
    rng = np.random.default_rng(4)
    pos = rng.random((30, 3)) * 10
    a = neighbor_list(pos, np.zeros((3, 3)), [False] * 3, 3.0)
    b = neighbor_list(pos, np.ones((3, 3)), [False] * 3, 3.0)
    for k in ("offsets", "index", "dvec", "dist"):
        np.testing.assert_array_equal(a[k], b[k])
    compare_with_brute(pos, np.zeros((3, 3)), [False] * 3, 3.0)


def test_atoms_outside_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=9)
    rng = np.random.default_rng(9)
    shifts = rng.integers(-3, 4, size=(len(atoms), 3))
    atoms.positions += shifts @ atoms.cell.array
    atoms.positions[:5] += [[0.0, -40.0, 17.0]]  # some far away, non-lattice offsets
    compare_with_ase(atoms, 5.0)


def test_triclinic_atoms_outside_cell():
    rng = np.random.default_rng(21)
    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.5, 0.0], [1.0, -1.5, 6.2]])
    atoms = Atoms("Cu25", scaled_positions=rng.random((25, 3)) * 5 - 2, cell=cell, pbc=True)
    compare_with_ase(atoms, 6.5)


# ----------------------------------------------------------------------------- vs brute force
def test_brute_force_mixed_pbc_tiny_cell():
    rng = np.random.default_rng(13)
    cell = np.array([[1.9, 0.2, 0.0], [0.0, 0.0, 0.0], [0.3, 0.1, 2.3]])
    pos = rng.random((4, 3)) * 3
    compare_with_brute(pos, cell, [True, False, True], 4.5)


def test_brute_force_open_direction_with_arbitrary_vector():
    rng = np.random.default_rng(17)
    # open direction's vector is parallel to a periodic one: must be ignored
    cell = np.array([[3.0, 0.0, 0.0], [0.5, 2.8, 0.0], [6.0, 0.0, 0.0]])
    pos = rng.random((6, 3)) * 4
    compare_with_brute(pos, cell, [True, True, False], 3.7)


def test_derivative_consistency_wrt_positions():
    # energy E = sum f(dvec) from our list; moving one atom must change dvec exactly linearly
    rng = np.random.default_rng(2)
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 4.5, 0.0], [0.5, 0.5, 5.5]])
    pos = rng.random((8, 3)) * 12 - 3  # partly outside the cell
    r0 = neighbor_list(pos, cell, [True, True, True], 4.0)
    pos2 = pos.copy()
    pos2[3] += 1e-7
    r1 = neighbor_list(pos2, cell, [True, True, True], 4.0)
    assert np.array_equal(r0["offsets"], r1["offsets"]) and np.array_equal(r0["index"], r1["index"])
    i = np.repeat(np.arange(len(pos)), np.diff(r0["offsets"]))
    expected = (r0["index"] == 3).astype(float) - (i == 3).astype(float)
    np.testing.assert_allclose((r1["dvec"] - r0["dvec"]) / 1e-7, expected[:, None] * np.ones(3),
                               atol=1e-6)


@pytest.mark.parametrize("seed", range(25))
def test_brute_force_random(seed):
    rng = np.random.default_rng(1000 + seed)
    pbc = rng.random(3) < 0.6
    cell = rng.normal(size=(3, 3)) * rng.uniform(0.5, 2.0) + np.eye(3) * rng.uniform(1.5, 5.0)
    for d in range(3):
        if not pbc[d] and rng.random() < 0.5:
            cell[d] = 0.0
    if pbc.any() and np.linalg.svd(cell[pbc], compute_uv=False).min() < 0.3:
        pytest.skip("nearly singular random cell")
    pos = rng.normal(size=(int(rng.integers(1, 8)), 3)) * rng.uniform(0.5, 6.0)
    compare_with_brute(pos, cell, pbc, rng.uniform(0.5, 5.0))


# ----------------------------------------------------------------------------- misc
def test_empty_and_single_atom():
    res = neighbor_list(np.zeros((0, 3)), np.eye(3) * 5, [True] * 3, 3.0)
    assert res["offsets"].tolist() == [0] and len(res["index"]) == 0
    assert res["dvec"].shape == (0, 3)
    res = neighbor_list(np.zeros((1, 3)), np.zeros((3, 3)), [False] * 3, 3.0)
    assert res["offsets"].tolist() == [0, 0]
    res = neighbor_list(np.zeros((1, 3)), np.eye(3) * 2.0, True, 2.5)  # pbc as one bool
    assert len(res["index"]) == 6 and np.all(res["index"] == 0)


def test_cutoff_is_strict():
    pos = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert len(neighbor_list(pos, np.zeros((3, 3)), [False] * 3, 2.0)["index"]) == 0
    assert len(neighbor_list(pos, np.zeros((3, 3)), [False] * 3, 2.0000001)["index"]) == 2


def test_deterministic():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.1, seed=5)
    a = ours(atoms, 5.0)
    b = ours(atoms, 5.0)
    for k in ("offsets", "index", "dvec", "dist"):
        np.testing.assert_array_equal(a[k], b[k])


def test_dtypes():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    res = ours(atoms, 3.0)
    assert res["offsets"].dtype == np.int64
    assert res["index"].dtype == np.int32
    assert res["dvec"].dtype == np.float64 and res["dist"].dtype == np.float64


def test_large_system_runs():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((10, 10, 10))  # 4000 atoms
    res = ours(atoms, 7.0)
    counts = np.diff(res["offsets"])
    assert len(atoms) == 4000 and np.all(counts == counts[0])
    # coordination within 7 A in fcc Cu (a=3.6): shells 12+6+24+12+24+8+48 = 134 below 7 A
    assert counts[0] == 134



@pytest.mark.parametrize("pbc", [[True, True, True], [True, False, True]])
def test_cell_lengths_equal_diagonal_cell(pbc):
    """The documented short form of an orthorhombic cell, its three lengths [a, b, c], is the
    cell np.diag([a, b, c]): with a != b != c and atoms partly outside the box the neighbour
    lists are identical, and both equal the brute-force enumeration of images."""
    lengths = np.array([3.1, 4.3, 5.7])
    rng = np.random.default_rng(17)
    pos = rng.uniform(-0.5, 1.2, size=(7, 3)) * lengths
    full = compare_with_brute(pos, np.diag(lengths), pbc, 4.4)
    short = neighbor_list(pos, lengths, np.asarray(pbc, bool), 4.4)
    for k in ("offsets", "index", "dvec", "dist"):
        np.testing.assert_array_equal(short[k], full[k], err_msg=k)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_position_raises(bad):
    pos = np.zeros((3, 3))
    pos[1] = [1.0, 2.0, 3.0]
    pos[2, 1] = bad
    with pytest.raises(ValueError, match="non-finite position"):
        neighbor_list(pos, np.eye(3) * 5, [True] * 3, 3.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf])
def test_bad_cutoff_raises(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(np.zeros((2, 3)), np.eye(3) * 5, [True] * 3, cutoff)


@pytest.mark.parametrize("cell,pbc", [
    (np.zeros((3, 3)), [True, True, True]),
    (np.diag([5.0, 5.0, 0.0]), [True, True, True]),
    (np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]]), [True, True, True]),
    (np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 3.0]]), [True, True, False]),
    (np.diag([0.0, 5.0, 5.0]), [True, False, False]),
    (np.array([[np.nan, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]), [True, True, True]),
])
def test_singular_periodic_cell_raises(cell, pbc):
    with pytest.raises(ValueError, match="cell"):
        neighbor_list(np.zeros((2, 3)), cell, pbc, 3.0)


def test_absurd_number_of_images_raises():
    with pytest.raises(ValueError, match="periodic images"):
        neighbor_list(np.zeros((1, 3)), np.eye(3) * 1e-3, [True] * 3, 10.0)


def test_singular_cell_ok_in_open_directions():
    # a zero vector is fine where the direction is not periodic
    res = neighbor_list(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.diag([0.0, 5.0, 5.0]),
                        [False, True, True], 1.5)
    assert len(res["index"]) == 2


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        neighbor_list(np.zeros((4, 2)), np.eye(3), [True] * 3, 3.0)
    with pytest.raises(ValueError):
        neighbor_list(np.zeros((4, 3)), np.eye(2), [True] * 3, 3.0)
    with pytest.raises(ValueError):
        neighbor_list(np.zeros((4, 3)), np.eye(3), [True, True], 3.0)


def test_extreme_cutoffs_of_an_open_system():
    """The size estimate of an open system divides by its extent: a cutoff of 1e300 (inf/inf)
    or 1e-200 around one atom (0/0) made it NaN, cast to a size (undefined; 'vector::reserve' here).
    Both are searched as any other."""
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    res = neighbor_list(pos, np.zeros((3, 3)), np.zeros(3, bool), 1e300)
    assert list(res["index"]) == [1, 0] and list(res["offsets"]) == [0, 1, 2]
    res = neighbor_list(pos[:1], np.zeros((3, 3)), np.zeros(3, bool), 1e-200)
    assert len(res["index"]) == 0
