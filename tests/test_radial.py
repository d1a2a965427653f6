"""Radial functions (g_k, R_nl, core repulsion) against pyace, bond by bond.

pyace's ACERadialFunctions.evaluate looks values up in cubic Hermite tables; aceuq must give the
same numbers to rounding, for every radial basis and inner cutoff type, including a bond whose
sizes are smaller than the potential's (padding).
"""
import numpy as np
import pytest
import yaml

pyace = pytest.importorskip("pyace")
from aceuq import _core  # noqa: E402

Z = {"Al": 13, "Ni": 28}
RADBASES = ["ChebExpCos", "ChebPow", "ChebLinear", "SBessel"]
INNER = ["density", "distance", "zbl"]
KEYS = ["gr", "dgr", "fr", "dfr", "cr", "dcr"]


def build_potential(tmp_path, radbase, inner, elements, seed=0, **bond_overrides):
    """A pyace basis with random radial coefficients; returns (basis, potential-file dict).
    bond_overrides replace entries of the bond (e.g. delta_in, core-repulsion)."""
    bond = {"radbase": radbase, "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01,
            "NameOfCutoffFunction": "cos", "r_in": 1.0, "delta_in": 0.5,
            "inner_cutoff_type": inner, "core-repulsion": [5.0, 2.0], **bond_overrides}
    bonds = {"ALL": bond}
    if len(elements) > 1:
        # a different cutoff, taper, lambda and inner cutoff for the mixed bond
        bonds[("Al", "Ni")] = dict(bond, rcut=4.5, dcut=0.3, radparameters=[3.0], r_in=1.2, delta_in=0.4)
    config = {
        "deltaSplineBins": 0.001, "elements": elements,
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1, 1, 0.5],
                               "ndensity": 2}},
        "bonds": bonds,
        # the mixed bond gets fewer radial functions than the pure ones: exercises padding
        "functions": {"UNARY": {"nradmax_by_orders": [8, 3, 2], "lmax_by_orders": [0, 2, 1]},
                      "BINARY": {"nradmax_by_orders": [5, 2, 1], "lmax_by_orders": [0, 1, 1]}},
    }
    basis = pyace.ACEBBasisSet(pyace.create_multispecies_basis_config(config))
    path = tmp_path / "initial.yaml"
    basis.save(str(path))
    pot = yaml.safe_load(path.read_text())
    rng = np.random.default_rng(seed)
    coefficients = {}  # A-B and B-A must carry the same radial coefficients
    for block in pot["species"]:
        if "radcoefficients" in block:
            pair = tuple(sorted(block["speciesblock"].split()))
            if pair not in coefficients:
                shape = np.shape(block["radcoefficients"])
                coefficients[pair] = rng.normal(size=shape).tolist()
            block["radcoefficients"] = coefficients[pair]
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(pot))
    return pyace.ACEBBasisSet(str(path)), pot


def bonds_of(basis, pot):
    """(mu_i, mu_j, bond dict for aceuq) for every ordered element pair."""
    blocks = {tuple(b["speciesblock"].split()): b for b in pot["species"]}
    names = basis.elements_name
    for i, ei in enumerate(names):
        for j, ej in enumerate(names):
            block = dict(blocks[(ei,) if ei == ej else (ei, ej)])
            block["z_i"], block["z_j"] = Z[ei], Z[ej]
            yield i, j, block


def pyace_values(basis, r, mu_i, mu_j):
    rf = basis.radial_functions
    out = {k: [] for k in KEYS}
    for x in r:
        rf.evaluate(float(x), rf.nradbase, rf.nradial, mu_i, mu_j)
        for k in KEYS:
            out[k].append(np.array(getattr(rf, k)))
    return {k: np.array(v) for k, v in out.items()}


def aceuq_values(basis, block, r, exact=False):
    rf = basis.radial_functions
    return _core.radial_values(block, rf.deltaSplineBins, rf.nradbase, rf.nradial, rf.lmax,
                               np.asarray(r, dtype=float), exact)


def away_from_jump(r, block):
    """Drop distances near r_in - delta_in for inner_cutoff_type density.

    pyace zeroes g_k for r <= r_in - delta_in with every inner cutoff type, but only "distance"
    and "zbl" multiply by a smooth step; with "density" the exact function jumps there and the
    spline bridges the jump in one grid interval (steep, with huge curvature)."""
    if block["inner_cutoff_type"] != "density":
        return r
    jump = block["r_in"] - block["delta_in"]
    return r[np.abs(r - jump) > 2e-3]


def scaled_dev(a, b):
    """max |a - b| relative to the array's magnitude (at least 1)."""
    return np.abs(a - b).max() / max(1.0, np.abs(b).max())


@pytest.mark.parametrize("elements", [["Al"], ["Al", "Ni"]], ids=["unary", "binary"])
@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("radbase", RADBASES)
def test_matches_pyace(tmp_path, radbase, inner, elements):
    basis, pot = build_potential(tmp_path, radbase, inner, elements)
    for i, j, block in bonds_of(basis, pot):
        rc = block["rcutij"]
        # a dense sweep plus the spline nodes themselves, where rounding of r*scale decides the interval
        nodes = rc * np.arange(1, int(rc / 0.001) + 1) / int(rc / 0.001)
        r = np.concatenate([np.linspace(0.5, rc + 0.5, 3001), nodes[nodes > 0.5]])
        ref = pyace_values(basis, r, i, j)
        got = aceuq_values(basis, block, r)
        for k in KEYS:
            assert got[k].shape == ref[k].shape, k
            dev = scaled_dev(got[k], ref[k])
            assert dev < 1e-12, f"{radbase}/{inner} bond {i}-{j}: {k} deviates by {dev:.2e}"


@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("radbase", RADBASES)
def test_spline_close_to_exact_functions(tmp_path, radbase, inner):
    basis, pot = build_potential(tmp_path, radbase, inner, ["Al", "Ni"])
    for _, _, block in bonds_of(basis, pot):
        rc = block["rcutij"]
        r = away_from_jump(np.linspace(0.5, rc - 1e-3, 2001), block)
        spline = aceuq_values(basis, block, r)
        exact = aceuq_values(basis, block, r, exact=True)
        for k in KEYS:
            dev = scaled_dev(spline[k], exact[k])
            assert dev < 1e-6, f"{radbase}/{inner}: spline {k} is {dev:.2e} off the exact function"


@pytest.mark.parametrize("inner", INNER)
@pytest.mark.parametrize("radbase", RADBASES)
def test_derivatives_match_finite_differences(tmp_path, radbase, inner):
    basis, pot = build_potential(tmp_path, radbase, inner, ["Al", "Ni"])
    h = 1e-7
    for _, _, block in bonds_of(basis, pot):
        rc = block["rcutij"]
        r = away_from_jump(np.linspace(0.5, rc - 0.01, 997), block)
        plus = aceuq_values(basis, block, r + h)
        minus = aceuq_values(basis, block, r - h)
        mid = aceuq_values(basis, block, r)
        for f, df in [("gr", "dgr"), ("fr", "dfr"), ("cr", "dcr")]:
            fd = (plus[f] - minus[f]) / (2 * h)
            dev = scaled_dev(mid[df], fd)
            assert dev < 1e-5, f"{radbase}/{inner}: {df} vs finite differences {dev:.2e}"


def test_padding_of_smaller_bond(tmp_path):
    basis, pot = build_potential(tmp_path, "ChebExpCos", "distance", ["Al", "Ni"])
    rf = basis.radial_functions
    for _, _, block in bonds_of(basis, pot):
        if block["nradmaxi"] == rf.nradial:
            continue
        got = aceuq_values(basis, block, np.linspace(1.5, 4.0, 50))
        # R_nl the bond does not have are zero ...
        assert np.all(got["fr"][:, block["nradmaxi"]:, :] == 0)
        assert np.all(got["fr"][:, :, block["lmaxi"] + 1:] == 0)
        # ... but all g_k are computed, as pyace does, also beyond the bond's nradbase
        assert np.any(got["gr"][:, block["nradbaseij"]:] != 0)
        return
    pytest.fail("no bond with smaller sizes in the test potential")


def test_beyond_cutoff_and_too_close(tmp_path):
    basis, pot = build_potential(tmp_path, "SBessel", "density", ["Al"])
    _, _, block = next(bonds_of(basis, pot))
    rc = block["rcutij"]
    for exact in (False, True):
        got = aceuq_values(basis, block, [rc, rc + 1e-9, rc + 3.0], exact)
        for k in KEYS:
            assert np.all(got[k] == 0), k
    with pytest.raises(ValueError, match="distance"):
        aceuq_values(basis, block, [1e-4])


@pytest.mark.parametrize("key,value", [("radbase", "ChebFoo"), ("NameOfCutoffFunctionij", "tanh"),
                                       ("inner_cutoff_type", "soft")])
def test_unknown_names_are_refused(tmp_path, key, value):
    basis, pot = build_potential(tmp_path, "ChebPow", "distance", ["Al"])
    _, _, block = next(bonds_of(basis, pot))
    block[key] = value
    with pytest.raises(ValueError, match=value):
        aceuq_values(basis, block, [1.0])


@pytest.mark.parametrize("radbase", ["ChebExpCos", "SBessel"])
def test_zbl_with_zero_delta_in_matches_pyace(tmp_path, radbase):
    """With inner_cutoff_type zbl the reference replaces the inner radius of g_k by the boolean
    (delta_in == 0): with delta_in = 0, g_k (and R_nl) vanish for r <= 1 Å and not otherwise.
    Compared with pyace over close distances (0.3-1.8 Å) on both sides of 1 Å."""
    basis, pot = build_potential(tmp_path, radbase, "zbl", ["Al"], r_in=1.4, delta_in=0.0)
    r = np.concatenate([np.linspace(0.3, 1.8, 301), [0.999, 1.0, 1.001]])
    inside = r <= 1.0
    for i, j, block in bonds_of(basis, pot):
        assert block["delta_in"] == 0 and block["inner_cutoff_type"] == "zbl"
        ref = pyace_values(basis, r, i, j)
        got = aceuq_values(basis, block, r)
        # the reference's rule is exercised: zero at and below 1 Å, not above
        assert np.all(ref["gr"][inside] == 0) and np.abs(ref["gr"][~inside]).max() > 1e-3
        for k in KEYS:
            dev = scaled_dev(got[k], ref[k])
            assert dev < 1e-12, f"{radbase}/zbl delta_in=0 bond {i}-{j}: {k} deviates by {dev:.2e}"


@pytest.mark.parametrize("inner", ["density", "distance"])
def test_negative_core_repulsion_parameters_are_taken_as_absolute(tmp_path, inner):
    """pyace applies abs() to both core-repulsion parameters: [-5, -2] must give the repulsion
    of [5, 2] (positive, decaying), compared with pyace inside and beyond the core region."""
    basis, pot = build_potential(tmp_path, "ChebPow", inner, ["Al", "Ni"], **{"core-repulsion": [-5.0, -2.0]})
    (tmp_path / "pos").mkdir()
    pos_basis, pos_pot = build_potential(tmp_path / "pos", "ChebPow", inner, ["Al", "Ni"],
                                         **{"core-repulsion": [5.0, 2.0]})
    r = np.linspace(0.4, 4.0, 721)
    for (i, j, block), (_, _, pos_block) in zip(bonds_of(basis, pot), bonds_of(pos_basis, pos_pot)):
        assert block["core-repulsion"] == [-5.0, -2.0]
        ref = pyace_values(basis, r, i, j)
        got = aceuq_values(basis, block, r)
        assert ref["cr"][0] > 0.1, "the core repulsion must be exercised"
        for k in ("cr", "dcr"):
            dev = scaled_dev(got[k], ref[k])
            assert dev < 1e-12, f"{inner} bond {i}-{j}: {k} deviates by {dev:.2e}"
        pos = aceuq_values(pos_basis, pos_block, r)
        np.testing.assert_array_equal(got["cr"], pos["cr"])
