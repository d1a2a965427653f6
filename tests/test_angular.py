"""Angular basis (spherical harmonics, generalized Clebsch-Gordan couplings) against pyace.

The couplings of every B function of several bases must equal what pyace's ACEBBasisFunction holds
(same terms, coefficients to ~1e-14); and B projections built from our Ylm and couplings (with
pyace's radial functions) must equal pyace's projections.
"""
import math

import numpy as np
import pytest

from aceuq import _core

pyace = pytest.importorskip("pyace")
from pyace import create_multispecies_basis_config  # noqa: E402
from pyace.basis import ACEBBasisSet  # noqa: E402

BASES = {
    "Cu_rank6": (["Cu"], [15, 6, 4, 3, 2, 2], [0, 4, 3, 2, 1, 1]),
    "Cu_rank3_l8": (["Cu"], [8, 8, 8], [0, 8, 6]),
    "AlNi_rank6": (["Al", "Ni"], [15, 4, 3, 2, 1, 1], [0, 3, 2, 2, 1, 1]),
    "AlNi_rank5": (["Al", "Ni"], [10, 5, 4, 3, 2], [0, 4, 3, 2, 1]),
}


def make_basis(elements, nradmax, lmax):
    cfg = {
        "deltaSplineBins": 0.001,
        "elements": elements,
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1, 1, 0.5],
                               "ndensity": 2}},
        "bonds": {"ALL": {"radbase": "ChebExpCos", "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01,
                          "NameOfCutoffFunction": "cos"}},
        "functions": {"ALL": {"nradmax_by_orders": nradmax, "lmax_by_orders": lmax}},
    }
    return ACEBBasisSet(create_multispecies_basis_config(cfg))


@pytest.fixture(scope="module", params=list(BASES))
def basis(request):
    return make_basis(*BASES[request.param])


def all_functions(bbasis, mu0):
    return list(bbasis.basis_rank1[mu0]) + list(bbasis.basis[mu0])


def spec_order(func):
    """(mus, ns, ls, LS) in the order of the potential file: undo pyace's internal permutation."""
    mus, ns, ls = list(func.mus), list(func.ns), list(func.ls)
    so = list(func.sort_order)
    if so:  # pyace's column r is the file's column so[r]
        m2, n2, l2 = [0] * func.rank, [0] * func.rank, [0] * func.rank
        for r in range(func.rank):
            m2[so[r]], n2[so[r]], l2[so[r]] = mus[r], ns[r], ls[r]
        mus, ns, ls = m2, n2, l2
    return mus, ns, ls, list(func.LS)


def canonical(mus, ns, ls, ms, cg, tol=1e-15):
    """Order-free form of a B function: {sorted (mu, n, l, m) tuples: summed coefficient}."""
    out = {}
    for row, c in zip(np.asarray(ms).reshape(len(cg), -1), cg):
        key = tuple(sorted(zip(mus, ns, ls, (int(m) for m in row))))
        out[key] = out.get(key, 0.0) + c
    return {k: v for k, v in out.items() if abs(v) >= tol}


def assert_same_terms(mine, ref, what):
    assert mine.keys() == ref.keys(), what
    dev = max(abs(mine[k] - ref[k]) for k in ref)
    assert dev < 1e-13, f"{what}: max deviation {dev}"


def test_couplings_match_pyace(basis):
    n_funcs = n_exact = 0
    max_dev = 0.0
    for mu0 in range(basis.nelements):
        for f in all_functions(basis, mu0):
            assert f.is_half_ms_basis
            mus, ns, ls, LS = spec_order(f)
            ref_ms = np.array(f.ms_combs, dtype=int).reshape(-1, f.rank)
            ref_cg = np.array(f.gen_cgs)
            ms, cg, so = _core.b_function_couplings(mus, ns, ls, LS, reference_order=True)
            what = f"mu0={mu0} mus={mus} ns={ns} ls={ls} LS={LS}"
            n_funcs += 1
            # pyace merges permutation-equivalent terms when that shortens the list; whether it
            # does can hinge on an accidentally-vanishing CG coefficient that pyace computes as
            # ~1e-17 instead of 0. Then only the row order differs: compare term sets always,
            # rows exactly whenever both took the same decision.
            if list(so) == list(f.sort_order) and ms.shape == ref_ms.shape:
                np.testing.assert_array_equal(ms, ref_ms, err_msg=what)
                max_dev = max(max_dev, float(np.abs(cg - ref_cg).max()))
                n_exact += 1
            ref_terms = canonical(list(f.mus), list(f.ns), list(f.ls), ref_ms, ref_cg)
            mine = canonical(mus, ns, ls, *_core.b_function_couplings(mus, ns, ls, LS))
            assert_same_terms(mine, ref_terms, what)
    assert max_dev < 1e-14
    assert n_exact >= 0.9 * n_funcs, (n_exact, n_funcs)


def test_file_entries_map_to_couplings(tmp_path):
    """nbody {type, nr, nl, lint} of a saved potential -> (mus, ns, ls, LS) as given to the C++ core."""
    yaml = pytest.importorskip("yaml")
    bbasis = make_basis(["Al", "Ni"], [8, 4, 3, 2], [0, 3, 2, 1])
    path = tmp_path / "pot.yaml"
    bbasis.save(str(path))
    doc = yaml.safe_load(path.read_text())
    emap = dict(bbasis.elements_to_index_map)  # element -> index: sorted element names
    assert emap == {e: i for i, e in enumerate(sorted(emap))}

    ref = {}
    for mu0 in range(bbasis.nelements):
        for f in all_functions(bbasis, mu0):
            mus, ns, ls, LS = spec_order(f)
            ref[(mu0, tuple(mus), tuple(ns), tuple(ls), tuple(LS))] = canonical(
                list(f.mus), list(f.ns), list(f.ls), f.ms_combs, f.gen_cgs)
    seen = 0
    for block in doc["species"]:
        for entry in block.get("nbody", []):
            els = entry["type"].split()
            mu0, mus = emap[els[0]], [emap[e] for e in els[1:]]
            ns, ls, LS = entry["nr"], entry["nl"], entry.get("lint", [])
            key = (mu0, tuple(mus), tuple(ns), tuple(ls), tuple(LS))
            assert key in ref
            assert_same_terms(canonical(mus, ns, ls, *_core.b_function_couplings(mus, ns, ls, LS)),
                              ref[key], str(key))
            seen += 1
    assert seen == len(ref)


def test_projections_match_pyace():
    """B projections from our Ylm + couplings and pyace's radial functions equal pyace's."""
    from ase import Atoms
    from pyace.activelearning import compute_B_projections

    bbasis = make_basis(["Al", "Ni"], [6, 4, 3, 2, 2], [0, 3, 2, 2, 1])
    rf = bbasis.radial_functions
    lmax, emap = rf.lmax, dict(bbasis.elements_to_index_map)
    rng = np.random.default_rng(1)
    atoms = Atoms(["Al", "Ni", "Al", "Ni", "Ni", "Al", "Al", "Ni", "Al"],
                  positions=rng.uniform(0, 4.5, size=(9, 3)), cell=[30, 30, 30], pbc=False)
    ref = compute_B_projections(bbasis, [atoms])
    count = [0] * bbasis.nelements
    couplings = {}
    for i, ai in enumerate(atoms):
        mu_i = emap[ai.symbol]
        A1 = np.zeros((bbasis.nelements, rf.nradbase))
        A = np.zeros((bbasis.nelements, rf.nradial, lmax + 1, 2 * lmax + 1), complex)
        for j, aj in enumerate(atoms):
            d = aj.position - ai.position
            r = np.linalg.norm(d)
            if j == i or r >= 5.0:
                continue
            mu_j = emap[aj.symbol]
            rf.evaluate(r, rf.nradbase, rf.nradial, mu_i, mu_j)
            gr = np.array(rf.gr)[: rf.nradbase]
            fr = np.array(rf.fr).reshape(rf.nradial, lmax + 1)
            y, _ = _core.spherical_harmonics(lmax, (d / r)[None])
            A1[mu_j] += gr  # rank 1 uses Y00 = 1
            for l in range(lmax + 1):
                for m in range(l + 1):
                    A[mu_j, :, l, lmax + m] += fr[:, l] * y[0, l * (l + 1) // 2 + m]
        for l in range(lmax + 1):
            for m in range(1, l + 1):
                A[:, :, l, lmax - m] = (-1) ** m * np.conj(A[:, :, l, lmax + m])
        out = [A1[f.mus[0], f.ns[0] - 1] for f in bbasis.basis_rank1[mu_i]]
        for f in bbasis.basis[mu_i]:
            mus, ns, ls, LS = spec_order(f)
            key = (tuple(mus), tuple(ns), tuple(ls), tuple(LS))
            if key not in couplings:
                couplings[key] = _core.b_function_couplings(mus, ns, ls, LS)
            ms, cg = couplings[key]
            prod = np.ones(len(cg), complex) * cg
            for t in range(f.rank):
                prod *= A[mus[t], ns[t] - 1, ls[t], ms[:, t] + lmax]
            out.append(prod.real.sum())
        expected = ref[mu_i][count[mu_i]]
        count[mu_i] += 1
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(expected).max()))


# ---------------------------------------------------------------- spherical harmonics

def random_unit_vectors(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    v = np.vstack([v, [[0, 0, 1], [0, 0, -1], [1, 0, 0], [0, -1, 0]]])  # include the poles
    return v / np.linalg.norm(v, axis=1)[:, None]


def full_ylm(y, lmax):
    """[N, (lmax+1)^2] with all m, index l*l + l + m, from the m >= 0 half."""
    out = np.zeros((y.shape[0], (lmax + 1) ** 2), complex)
    for l in range(lmax + 1):
        for m in range(l + 1):
            v = y[:, l * (l + 1) // 2 + m]
            out[:, l * l + l + m] = v
            out[:, l * l + l - m] = (-1) ** m * np.conj(v)
    return out


def test_ylm_matches_scipy_times_sqrt4pi():
    sp = pytest.importorskip("scipy.special")
    lmax = 10
    v = random_unit_vectors(300)
    y, _ = _core.spherical_harmonics(lmax, v)
    theta, phi = np.arccos(np.clip(v[:, 2], -1, 1)), np.arctan2(v[:, 1], v[:, 0])
    for l in range(lmax + 1):
        for m in range(l + 1):
            if hasattr(sp, "sph_harm_y"):
                ref = sp.sph_harm_y(l, m, theta, phi)
            else:
                ref = sp.sph_harm(m, l, phi, theta)
            np.testing.assert_allclose(y[:, l * (l + 1) // 2 + m], math.sqrt(4 * math.pi) * ref, atol=1e-12)
    np.testing.assert_allclose(y[:, 0], 1.0)  # Y00 = 1


def test_ylm_orthonormal_on_sphere():
    """(1/4pi) int Y_lm conj(Y_l'm') = delta, by a quadrature exact for these degrees."""
    lmax = 8
    z, wz = np.polynomial.legendre.leggauss(lmax + 2)
    nphi = 2 * lmax + 3
    phi = 2 * np.pi * np.arange(nphi) / nphi
    Z, PHI = np.meshgrid(z, phi, indexing="ij")
    S = np.sqrt(1 - Z ** 2)
    v = np.stack([S * np.cos(PHI), S * np.sin(PHI), Z], axis=-1).reshape(-1, 3)
    w = (wz[:, None] * np.full(nphi, 2 * np.pi / nphi)[None, :]).reshape(-1) / (4 * np.pi)
    y, _ = _core.spherical_harmonics(lmax, v)
    Y = full_ylm(y, lmax)
    gram = (Y.conj().T * w) @ Y
    np.testing.assert_allclose(gram, np.eye(Y.shape[1]), atol=1e-12)


def test_ylm_rotation_invariance():
    """Addition theorem: sum_m Y_lm(a) conj(Y_lm(b)) = (2l+1) P_l(a.b), invariant under rotation."""
    lmax = 8
    a, b = random_unit_vectors(50, 1), random_unit_vectors(50, 2)
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    ya, yb = (full_ylm(_core.spherical_harmonics(lmax, u)[0], lmax) for u in (a, b))
    yra, yrb = (full_ylm(_core.spherical_harmonics(lmax, u @ rot.T)[0], lmax) for u in (a, b))
    cos = np.sum(a * b, axis=1)
    for l in range(lmax + 1):
        sl = slice(l * l, (l + 1) ** 2)
        s = np.sum(ya[:, sl] * yb[:, sl].conj(), axis=1)
        sr = np.sum(yra[:, sl] * yrb[:, sl].conj(), axis=1)
        pl = np.polynomial.legendre.legval(cos, [0] * l + [1])
        np.testing.assert_allclose(s, (2 * l + 1) * pl, atol=1e-11)
        np.testing.assert_allclose(sr, s, atol=1e-11)


def test_dylm_is_scaled_tangential_gradient():
    """dylm = |r| d Y(r/|r|) / dr at |r| = 1: finite differences, and tangent to the sphere."""
    lmax, h = 8, 1e-6
    v = random_unit_vectors(100, 4)
    y, dy = _core.spherical_harmonics(lmax, v)
    assert dy.shape == y.shape + (3,)
    np.testing.assert_allclose(np.einsum("nka,na->nk", dy, v), 0, atol=1e-12)
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        yp, _ = _core.spherical_harmonics(lmax, (v + e) / np.linalg.norm(v + e, axis=1)[:, None])
        ym, _ = _core.spherical_harmonics(lmax, (v - e) / np.linalg.norm(v - e, axis=1)[:, None])
        np.testing.assert_allclose(dy[:, :, a], (yp - ym) / (2 * h), atol=1e-7)


def test_b_functions_rotation_invariant(basis):
    """B built from our Ylm and couplings is invariant under rotating the neighbourhood."""
    rng = np.random.default_rng(5)
    lmax = 8
    nb = 7
    vec = random_unit_vectors(nb, 6)[:nb]
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    weights = rng.normal(size=(basis.nelements, 20, lmax + 1, nb))  # stands in for R_nl(r_j)

    def amps(v):
        y = full_ylm(_core.spherical_harmonics(lmax, v)[0], lmax)
        return lambda mu, n, l, m: np.dot(weights[mu, n - 1, l], y[:, l * l + l + m])

    A, Ar = amps(vec), amps(vec @ rot.T)
    for f in list(basis.basis[0])[::7]:
        mus, ns, ls, LS = spec_order(f)
        if max(ls) > lmax:
            continue
        ms, cg = _core.b_function_couplings(mus, ns, ls, LS)
        b = br = 0.0
        for row, c in zip(ms, cg):
            b += (c * np.prod([A(mus[t], ns[t], ls[t], row[t]) for t in range(f.rank)])).real
            br += (c * np.prod([Ar(mus[t], ns[t], ls[t], row[t]) for t in range(f.rank)])).real
        assert abs(b - br) < 1e-10 * max(1.0, abs(b)), (mus, ns, ls, LS)


def test_rank1_and_rank2_forms():
    ms, cg = _core.b_function_couplings([0], [3], [0], [])
    assert ms.tolist() == [[0]] and cg.tolist() == [1.0]
    # rank 2: sum_m (-1)^m / sqrt(2l+1) A_m A_-m, half basis: m = 0 once, m > 0 doubled
    ms, cg = _core.b_function_couplings([0, 0], [1, 2], [2, 2], [])
    # (m_0 runs fastest in the enumeration, so (2,-2) comes first; ns differ, so nothing merges)
    assert ms.tolist() == [[2, -2], [1, -1], [0, 0]]
    np.testing.assert_allclose(cg, np.array([2, -2, 1]) / math.sqrt(5), atol=1e-15)


@pytest.mark.parametrize("mus,ns,ls,LS", [
    ([0] * 7, [1] * 7, [1] * 7, [1] * 5),   # rank 7 unsupported
    ([0], [1], [1], []),                    # rank 1 needs l = 0
    ([0, 0], [1, 1], [1, 2], []),           # rank 2 needs equal l
    ([0, 0, 0], [1, 1, 1], [1, 1, 2], [1]),  # rank 3: last LS must equal last l
    ([0] * 4, [1] * 4, [1] * 4, [0, 2]),     # rank 4: LS must be equal
    ([0] * 3, [1] * 3, [1, 1, 1], [1]),      # odd sum of ls
    ([0] * 3, [1] * 3, [2, 2], [2]),         # lengths differ
    ([0] * 3, [0, 1, 1], [1, 1, 2], [2]),    # ns are 1-based
])
def test_invalid_specs_raise(mus, ns, ls, LS):
    with pytest.raises(ValueError):
        _core.b_function_couplings(mus, ns, ls, LS)


def test_spherical_harmonics_refuse_an_lmax_beyond_int_indices():
    """lmax 70000 overflowed the int (l, m) index (undefined behaviour); potential files stop at 50."""
    with pytest.raises(ValueError, match=r"lmax must be within 0..10000, got 70000"):
        _core.spherical_harmonics(70000, np.array([[0.0, 0.0, 1.0]]))
