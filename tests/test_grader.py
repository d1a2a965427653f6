"""Extrapolation grade (aceuq._core.Grader) against pyace, the .npz reader, bad input, clusters."""
import json
import os
import zipfile

import numpy as np
import pytest

import aceuq
from aceuq import _core
from potentials import SPECS, emt_training_set, pyace_gamma, pyace_projections
from structures import all_structures

pyace = pytest.importorskip("pyace")


# ---------------------------------------------------------------- helpers

def pyace_asi(pot_path, folder, full, seed=7, n_frames=16):
    """An active-set inverse file built by pyace itself (MaxVol, pinv, save_active_inverse_set);
    named as pacemaker names them (.asi, .asi.nonlinear)."""
    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_A_active_inverse, compute_active_set, save_active_inverse_set

    frames = emt_training_set(list(ACEBBasisSet(pot_path).elements_name), n=n_frames, seed=seed)
    proj = pyace_projections(pot_path, frames, full)
    active = compute_active_set(proj)
    active = active[0] if isinstance(active, tuple) else active
    inverse = compute_A_active_inverse(active)
    name = os.path.splitext(os.path.basename(pot_path))[0] + (".asi.nonlinear" if full else ".asi")
    out = os.path.join(folder, name)
    save_active_inverse_set(out, inverse, elements_name=list(ACEBBasisSet(pot_path).elements_name))
    return out


def grade_structures(pot, grader, frames, mode):
    """Per structure, our per-atom gamma (graded per element in one batch)."""
    gamma = [np.full(len(a), np.nan) for a in frames]
    proj = pot.projections(frames, mode=mode)
    for el, p in proj.items():
        if len(p.values) == 0:
            continue
        g, c = grader.grade(pot._pot.element_index(el), p.values)
        assert np.all(c == 0)
        for s, i, v in zip(p.structure, p.atom, g):
            gamma[s][i] = v
    return gamma


def grading_frames(elements):
    frames = list(all_structures(elements).values())
    return frames + emt_training_set(elements, n=2, seed=99)


# ---------------------------------------------------------------- (a) against pyace

def gamma_tolerance(inverse):
    """Relative tolerance for gamma from two implementations whose projections agree to rounding.

    gamma is invariant to rescaling the basis functions, so what amplifies the rounding of the
    projections is the condition number of the active-set matrix with its columns normalised.
    Well-conditioned sets (the multi-element potentials here, ~1e7) get the 1e-8 of DESIGN.md;
    Cu_fs2's single-element fcc active sets are near-singular (~1e9 linear, ~1e11 full), and there
    pyace disagrees with itself at 1e-7 (PyACECalculator's neighbour order vs compute_B_projections')."""
    active = np.linalg.pinv(inverse)
    scaled = active / np.abs(active).max(axis=0)
    return max(1e-8, 1e-15 * np.linalg.cond(scaled))


@pytest.mark.parametrize("name,mode", [
    ("CuAl_sbessel", "linear"),
    ("CuAlNi_chebexpcos", "linear"),
    ("Cu_fs2", "linear"),
    ("Cu_fs2", "full"),
])
def test_gamma_matches_pyace(make_pot, tmp_path, name, mode):
    pot_path = make_pot(name)
    asi = pyace_asi(pot_path, str(tmp_path), full=(mode == "full"))
    pot = aceuq.Potential(pot_path)
    grader = _core.Grader(asi, pot._pot)
    assert grader.full == (mode == "full")
    assert grader.assign == "nearest"
    inverses = dict(np.load(asi))
    for mu, el in enumerate(pot.elements):
        assert grader.n_clusters(mu) == 1
        assert grader.n_projections(mu) == pot.n_projections(el, mode)
    frames = grading_frames(SPECS[name].elements)

    # the kernel alone: same projections, numpy's product
    proj = pot.projections(frames, mode=mode)
    for mu, el in enumerate(pot.elements):
        b = proj[el].values
        rtol = max(1e-10, 0.1 * gamma_tolerance(inverses[el]) - 1e-9)  # summation order only
        np.testing.assert_allclose(grader.grade(mu, b)[0], np.abs(b @ inverses[el]).max(axis=1), rtol=rtol)

    # end to end against pyace's calculator
    rtol = max(gamma_tolerance(inverses[el]) for el in pot.elements)
    if name != "Cu_fs2":
        assert rtol == 1e-8
    ours = grade_structures(pot, grader, frames, mode)
    seen_extrapolation = False
    for atoms, g in zip(frames, ours):
        ref = pyace_gamma(pot_path, asi, atoms)
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=1e-12)
        seen_extrapolation |= ref.max() > 1.5
    assert seen_extrapolation, "test frames should include extrapolative environments"


def test_keys_mapped_by_name_not_order(make_pot, tmp_path):
    """pyace's Python loader maps arrays by sorted key order; we map by name: an .asi written
    with keys in reverse order grades the same."""
    pot_path = make_pot("CuAl_sbessel")
    asi = pyace_asi(pot_path, str(tmp_path), full=False)
    data = dict(np.load(asi))
    rev = str(tmp_path / "reversed.asi")
    with open(rev, "wb") as fh:
        np.savez(fh, **{k: data[k] for k in sorted(data, reverse=True)})
    assert [n[:-4] for n in zipfile.ZipFile(rev).namelist()] == ["Cu", "Al"]
    pot = aceuq.Potential(pot_path)
    a, b = _core.Grader(asi, pot._pot), _core.Grader(rev, pot._pot)
    proj = pot.projections(grading_frames(["Cu", "Al"]))
    for el in ("Al", "Cu"):
        mu = pot._pot.element_index(el)
        np.testing.assert_array_equal(a.grade(mu, proj[el].values)[0], b.grade(mu, proj[el].values)[0])


# ---------------------------------------------------------------- (b) npz: stored and deflated

def test_stored_and_deflated_npz_give_identical_results(make_pot, tmp_path, rng):
    pot_path = make_pot("CuAlNi_chebexpcos")
    asi = pyace_asi(pot_path, str(tmp_path), full=False)
    data = dict(np.load(asi))
    packed = str(tmp_path / "compressed.asi")
    with open(packed, "wb") as fh:
        np.savez_compressed(fh, **data)
    assert {i.compress_type for i in zipfile.ZipFile(asi).infolist()} == {zipfile.ZIP_STORED}
    assert {i.compress_type for i in zipfile.ZipFile(packed).infolist()} == {zipfile.ZIP_DEFLATED}
    for path in (asi, packed):
        got = _core.read_npz(path)
        assert sorted(got) == sorted(data)
        for k in data:
            assert got[k].dtype == data[k].dtype and got[k].shape == data[k].shape
            np.testing.assert_array_equal(got[k], data[k])
    pot = aceuq.Potential(pot_path)
    a, b = _core.Grader(asi, pot._pot), _core.Grader(packed, pot._pot)
    for mu, el in enumerate(pot.elements):
        x = rng.normal(size=(37, pot.n_functions(el)))
        ga, ca = a.grade(mu, x)
        gb, cb = b.grade(mu, x)
        np.testing.assert_array_equal(ga, gb)
        np.testing.assert_array_equal(ca, cb)


def test_read_npz_dtypes_and_layouts(tmp_path):
    arrays = {
        "f8": np.arange(12.0).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
        "scalar": np.array(3.5),
        "bigendian": np.arange(5, dtype=">f8"),
        "empty": np.zeros((0, 3)),
        "f4": np.linspace(0, 1, 7, dtype=np.float32),
        "u1": np.frombuffer('{"a": "é"}'.encode(), dtype=np.uint8),
        "with/slash": np.ones(2),
    }
    for saver in (np.savez, np.savez_compressed):
        path = str(tmp_path / f"{saver.__name__}.npz")
        saver(path, **arrays)
        got = _core.read_npz(path)
        assert sorted(got) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(got[k], v, err_msg=k)
            assert got[k].dtype == v.dtype.newbyteorder("<") if v.dtype.byteorder == ">" else got[k].dtype == v.dtype


def test_npy_format_version_2(tmp_path):
    from numpy.lib import format as npformat

    path = str(tmp_path / "v2.npz")
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("a.npy", "w") as fh:
            npformat.write_array(fh, np.arange(6.0).reshape(2, 3), version=(2, 0))
    np.testing.assert_array_equal(_core.read_npz(path)["a"], np.arange(6.0).reshape(2, 3))


# ---------------------------------------------------------------- (c) bad input

@pytest.fixture(scope="module")
def cual(tmp_path_factory):
    """(potential path, aceuq.Potential, .asi path) for CuAl_sbessel; pyace builds the .asi."""
    import potentials

    folder = str(tmp_path_factory.mktemp("grader_bad"))
    pot_path = potentials.make_potential(SPECS["CuAl_sbessel"], folder)
    return pot_path, aceuq.Potential(pot_path), pyace_asi(pot_path, folder, full=False)


def expect_input_error(path, pot, *fragments):
    with pytest.raises(aceuq.InputError) as err:
        _core.Grader(str(path), pot._pot)
    msg = str(err.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_truncated_npz_is_refused(cual, tmp_path):
    _, pot, asi = cual
    raw = open(asi, "rb").read()
    packed = str(tmp_path / "c.asi")
    np.savez_compressed(open(packed, "wb"), **dict(np.load(asi)))
    for src in (raw, open(packed, "rb").read()):
        for cut in sorted({0, 10, 100, len(src) // 3, len(src) // 2, len(src) - 200, len(src) - 30, len(src) - 1}):
            bad = tmp_path / f"cut{cut}.asi"
            bad.write_bytes(src[:cut])
            expect_input_error(bad, pot)


def test_corrupt_data_fails_crc(cual, tmp_path):
    _, pot, asi = cual
    raw = bytearray(open(asi, "rb").read())
    raw[len(raw) // 4] ^= 0x55  # inside the first array's data
    bad = tmp_path / "flipped.asi"
    bad.write_bytes(bytes(raw))
    expect_input_error(bad, pot, "CRC")


def test_not_a_zip_and_missing_file(cual, tmp_path):
    _, pot, _ = cual
    bad = tmp_path / "text.asi"
    bad.write_text("Cu: [[1, 0], [0, 1]]\n" * 20)
    expect_input_error(bad, pot, "not a zip")
    expect_input_error(tmp_path / "nonexistent.asi", pot)
    empty = tmp_path / "empty.asi"
    empty.write_bytes(b"")
    expect_input_error(empty, pot)


def test_object_arrays_are_refused(cual, tmp_path):
    _, pot, asi = cual
    data = dict(np.load(asi))
    data["Cu"] = np.array([{"evil": 1}, None], dtype=object)
    bad = str(tmp_path / "pickle.asi")
    np.savez(bad, **data)
    os.replace(bad + ".npz", bad)
    expect_input_error(bad, pot, "object arrays (pickles) are refused")
    with pytest.raises(aceuq.InputError):
        _core.read_npz(bad)


def write_npz(path, arrays, compressed=False):
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return path


def test_wrong_shapes_are_refused(cual, tmp_path):
    _, pot, asi = cual
    data = dict(np.load(asi))
    n = data["Cu"].shape[0]
    bad = write_npz(tmp_path / "nonsquare.asi", {**data, "Cu": np.zeros((n, n + 1))})
    expect_input_error(bad, pot, "'Cu'", "square")
    bad = write_npz(tmp_path / "wrongsize.asi", {**data, "Cu": np.eye(n - 1)})
    expect_input_error(bad, pot, "'Cu'", str(n))
    bad = write_npz(tmp_path / "onedim.asi", {**data, "Al": np.zeros(n * n)})
    expect_input_error(bad, pot, "'Al'")


def test_missing_and_unknown_elements_are_refused(cual, tmp_path):
    _, pot, asi = cual
    data = dict(np.load(asi))
    bad = write_npz(tmp_path / "missing.asi", {"Cu": data["Cu"]})
    expect_input_error(bad, pot, "Al")
    bad = write_npz(tmp_path / "unknown.asi", {**data, "Zr": data["Cu"]})
    expect_input_error(bad, pot, "Zr")


def test_nan_in_inverse_is_refused(cual, tmp_path):
    _, pot, asi = cual
    data = dict(np.load(asi))
    data["Al"] = data["Al"].copy()
    data["Al"][3, 5] = np.nan
    bad = write_npz(tmp_path / "nan.asi", data, compressed=True)
    expect_input_error(bad, pot, "'Al'", "NaN")


# ---------------------------------------------------------------- .casi

def write_casi(path, pot, sets, mode="linear", assign="nearest", fingerprint=None, meta_extra=None):
    """sets: {element: {"inv": [k matrices], optional "centers", "mean", "scale", "components"}}."""
    arrays = {}
    for el, s in sets.items():
        for c, m in enumerate(s["inv"]):
            arrays[f"{el}/inv/{c}"] = m
        for part in ("centers", "mean", "scale", "components"):
            if part in s:
                arrays[f"{el}/{part}"] = s[part]
    meta = {
        "format": "aceuq.casi", "version": 1, "elements": sorted(sets), "mode": mode,
        "fingerprint": pot.fingerprint if fingerprint is None else fingerprint, "assign": assign,
        "clusters": {el: len(s["inv"]) for el, s in sets.items()},
        "n_projections": {el: pot.n_projections(el, mode) for el in sets},
    }
    meta.update(meta_extra or {})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_npz(str(path), arrays)


def random_clustered_sets(pot, rng, k=2, dim=3):
    sets = {}
    for el in pot.elements:
        n = pot.n_functions(el)
        s = {"inv": [rng.normal(size=(n, n)) / np.sqrt(n) + np.eye(n) for _ in range(k)]}
        if k > 1:
            # components zero on a third of the functions, as a .casi clustering on a subset of them
            components = rng.normal(size=(dim, n)) / np.sqrt(n) * (rng.uniform(size=n) > 1 / 3)
            s.update(mean=rng.normal(size=n), scale=rng.uniform(0.5, 2.0, size=n),
                     components=components, centers=rng.normal(size=(k, dim)))
        sets[el] = s
    return sets


def reference_grade(s, b, assign):
    """The definitions, in numpy: T(b) = ((b - mean) / scale) . components^T; nearest centre,
    or the minimum gamma over clusters."""
    per_cluster = np.stack([np.abs(b @ inv).max(axis=1) for inv in s["inv"]], axis=1)
    if len(s["inv"]) == 1:
        return per_cluster[:, 0], np.zeros(len(b), dtype=int)
    if assign == "min":
        c = per_cluster.argmin(axis=1)
    else:
        t = ((b - s["mean"]) / s["scale"]) @ s["components"].T
        c = ((t[:, None, :] - s["centers"][None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return per_cluster[np.arange(len(b)), c], c


def test_clustered_nearest_and_min_match_definition(cual, tmp_path, rng):
    _, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=2)
    sets["Al"] = {"inv": sets["Al"]["inv"][:1]}  # one cluster, no transform: allowed
    path = write_casi(tmp_path / "two.casi", pot, sets, assign="min")
    g = _core.Grader(path, pot._pot)
    assert g.assign == "min" and not g.full
    mu_cu, mu_al = pot._pot.element_index("Cu"), pot._pot.element_index("Al")
    assert g.n_clusters(mu_cu) == 2 and g.n_clusters(mu_al) == 1
    n = pot.n_functions("Cu")
    for count in (0, 1, 2, 3, 4, 5, 6, 64, 130, 197):  # every tile remainder; one, two and three blocks
        b = rng.normal(size=(count, n))
        if count >= 4:
            b[count // 2, n // 3] = np.nan  # a broken projection must not look safe
        for assign in ("nearest", "min"):
            g.assign = assign
            gamma, cluster = g.grade(mu_cu, b)
            ref_gamma, ref_cluster = reference_grade(sets["Cu"], b, assign)
            assert gamma.dtype == np.float64 and cluster.dtype == np.int32
            ok = np.isfinite(b).all(axis=1)  # a broken row's cluster is not defined
            np.testing.assert_array_equal(cluster[ok], ref_cluster[ok])
            np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-12)
            if count >= 4:
                assert np.isnan(gamma[count // 2]) and np.isfinite(np.delete(gamma, count // 2)).all()
            if count >= 64:
                assert set(cluster) == {0, 1}, "both clusters should be exercised"
            gamma, cluster = g.grade(mu_al, b)
            np.testing.assert_allclose(gamma, reference_grade(sets["Al"], b, assign)[0], rtol=1e-12)
            assert np.all(cluster == 0)
    with pytest.raises(ValueError):
        g.assign = "farthest"
    with pytest.raises(ValueError):
        g.grade(mu_cu, np.zeros((3, n + 1)))
    with pytest.raises(IndexError):
        g.grade(7, np.zeros((3, n)))


GENERIC_KERNEL_SCRIPT = """
import sys, numpy as np, aceuq
from aceuq import _core
pot_path, casi, data, out = sys.argv[1:]
assert _core.grader_kernel() == "generic", _core.grader_kernel()
pot = aceuq.Potential(pot_path)
g = _core.Grader(casi, pot._pot)
res = {}
for key, b in np.load(data).items():
    el, assign, count = key.split(":")
    g.assign = assign
    res["gamma:" + key], res["cluster:" + key] = g.grade(pot._pot.element_index(el), b)
np.savez(out, **res)
"""


def test_generic_kernel_matches_definition(cual, tmp_path, rng):
    """The portable two-wide kernel, which CPUs without AVX2 and FMA run (forced here with
    ACEUQ_GRADER_KERNEL=generic in a fresh process), gives the definitions' γ and clusters for every
    tile remainder, and NaN for a NaN projection."""
    import subprocess
    import sys

    pot_path, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=2)
    sets["Al"] = {"inv": sets["Al"]["inv"][:1]}
    casi = write_casi(tmp_path / "two.casi", pot, sets)
    n = pot.n_functions("Cu")
    batches = {}
    for count in (1, 2, 3, 4, 5, 6, 130, 197):
        b = rng.normal(size=(count, n))
        for assign in ("nearest", "min"):
            batches[f"Cu:{assign}:{count}"] = b
            batches[f"Al:{assign}:{count}"] = b
    broken = rng.normal(size=(7, n))
    broken[3, n // 2] = np.nan
    batches["Al:nearest:nan"] = broken
    np.savez(tmp_path / "in.npz", **batches)
    script = tmp_path / "generic.py"
    script.write_text(GENERIC_KERNEL_SCRIPT)
    env = dict(os.environ, ACEUQ_GRADER_KERNEL="generic")
    proc = subprocess.run([sys.executable, str(script), pot_path, casi, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    for key, b in batches.items():
        el, assign, _ = key.split(":")
        ref_gamma, ref_cluster = reference_grade(sets[el], b, assign)
        np.testing.assert_array_equal(out["cluster:" + key], ref_cluster)
        np.testing.assert_allclose(out["gamma:" + key], ref_gamma, rtol=1e-12)
    gamma = out["gamma:Al:nearest:nan"]
    assert np.isnan(gamma[3]) and np.all(np.isfinite(np.delete(gamma, 3)))


@pytest.mark.parametrize("k", [3, 11])  # 11: more centres than one column panel of the kernel
def test_casi_meta_assign_default(cual, tmp_path, rng, k):
    _, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=k)
    g = _core.Grader(write_casi(tmp_path / "a.casi", pot, sets, assign="nearest"), pot._pot)
    assert g.assign == "nearest"
    s = sets["Al"]
    # random rows, and one row on each centre (T(b) = centre), so that every cluster is exercised
    on_centres = s["mean"] + s["scale"] * (np.linalg.pinv(s["components"]) @ s["centers"].T).T
    b = np.vstack([rng.normal(size=(100, pot.n_functions("Al"))), on_centres])
    gamma, cluster = g.grade(pot._pot.element_index("Al"), b)
    ref_gamma, ref_cluster = reference_grade(s, b, "nearest")
    np.testing.assert_array_equal(cluster, ref_cluster)
    np.testing.assert_array_equal(cluster[100:], np.arange(k))
    np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-12)


def test_asi_and_one_cluster_casi_agree(cual, tmp_path, rng):
    _, pot, asi = cual
    data = dict(np.load(asi))
    casi = write_casi(tmp_path / "one.casi", pot, {el: {"inv": [data[el]]} for el in pot.elements})
    a, b = _core.Grader(asi, pot._pot), _core.Grader(casi, pot._pot)
    x = rng.normal(size=(20, pot.n_functions("Cu")))
    np.testing.assert_array_equal(a.grade(1, x)[0], b.grade(1, x)[0])


def test_bad_casi_is_refused(cual, tmp_path, rng, make_pot):
    pot_path, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=2)
    expect_input_error(write_casi(tmp_path / "fp.casi", pot, sets, fingerprint="0123456789abcdef"), pot,
                       "built for another potential")
    expect_input_error(write_casi(tmp_path / "np.casi", pot, sets, meta_extra={"n_projections": {"Al": 3, "Cu": 3}}),
                       pot, "projections")
    expect_input_error(write_casi(tmp_path / "k.casi", pot, sets, meta_extra={"clusters": {"Al": 3, "Cu": 2}}),
                       pot, "Al/inv/2")
    expect_input_error(write_casi(tmp_path / "el.casi", pot, {"Cu": sets["Cu"]}), pot, "Al")
    expect_input_error(write_casi(tmp_path / "ver.casi", pot, sets, meta_extra={"version": 2}), pot, "version")
    no_centers = {**sets, "Cu": {k: v for k, v in sets["Cu"].items() if k != "centers"}}
    expect_input_error(write_casi(tmp_path / "nc.casi", pot, no_centers), pot, "Cu/centers")
    bad_centers = {**sets, "Cu": {**sets["Cu"], "centers": np.zeros((2, 4))}}
    expect_input_error(write_casi(tmp_path / "bc.casi", pot, bad_centers), pot, "Cu/centers")
    zero_scale = {**sets, "Cu": {**sets["Cu"], "scale": np.zeros(pot.n_functions("Cu"))}}
    expect_input_error(write_casi(tmp_path / "zs.casi", pot, zero_scale), pot, "Cu/scale")
    nan_inv = {**sets, "Al": {**sets["Al"], "inv": [sets["Al"]["inv"][0], np.full_like(sets["Al"]["inv"][1], np.nan)]}}
    expect_input_error(write_casi(tmp_path / "nan.casi", pot, nan_inv), pot, "Al/inv/1", "NaN")
    path = write_casi(tmp_path / "json.casi", pot, sets)
    arrays = dict(np.load(path))
    arrays["meta"] = np.frombuffer(b'{"format": "aceuq.casi", "version": 1,', dtype=np.uint8)
    expect_input_error(write_npz(tmp_path / "badjson.casi", arrays), pot, "JSON")
    arrays = dict(np.load(path))
    arrays["Cu/extra"] = np.zeros(3)
    expect_input_error(write_npz(tmp_path / "extra.casi", arrays), pot, "Cu/extra")
    # a cluster number as written: inv/00 is not inv/0 (nor may inv/01 stand beside inv/1)
    arrays = dict(np.load(path))
    arrays["Cu/inv/00"] = arrays.pop("Cu/inv/0")
    expect_input_error(write_npz(tmp_path / "zero.casi", arrays), pot, "unexpected array 'Cu/inv/00'")
    arrays = dict(np.load(path))
    arrays["Cu/inv/01"] = arrays["Cu/inv/1"]
    expect_input_error(write_npz(tmp_path / "both.casi", arrays), pot, "unexpected array 'Cu/inv/01'")
    # a folder named as the active set
    (tmp_path / "folder.casi").mkdir()
    expect_input_error(str(tmp_path / "folder.casi"), pot, "cannot be read (a directory?)")
    # the same (valid) .casi with another potential: of more elements, or of fewer (the session's
    # potentials, made for the pyace comparisons above)
    _core.Grader(path, pot._pot)  # loads with its own potential
    for name in ("CuAlNi_chebexpcos", "Cu_fs2"):
        other = aceuq.Potential(make_pot(name))
        assert other.fingerprint != pot.fingerprint
        expect_input_error(path, other, "another potential")


def test_min_assignment_ties_go_to_the_first_cluster(cual, tmp_path, rng):
    """With assign 'min', a row graded equally by several clusters belongs to the first of them
    (as numpy's argmin of the definition picks): a .casi whose cluster 1 carries the very inverse
    of cluster 0 puts every row in cluster 0, with that inverse's γ."""
    _, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=3)
    for el in sets:
        inv = sets[el]["inv"]
        sets[el]["inv"] = [inv[0], inv[0].copy(), inv[2]]  # clusters 0 and 1 identical
    g = _core.Grader(write_casi(tmp_path / "tie.casi", pot, sets, assign="min"), pot._pot)
    assert g.assign == "min"
    for el in pot.elements:
        s = sets[el]
        b = rng.normal(size=(150, pot.n_functions(el)))
        gamma, cluster = g.grade(pot._pot.element_index(el), b)
        ref_gamma, ref_cluster = reference_grade(s, b, "min")
        assert set(ref_cluster) == {0, 2}, "both the tied pair and the third cluster should be chosen"
        np.testing.assert_array_equal(cluster, ref_cluster)
        assert not np.any(cluster == 1)
        np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-12)


def test_nearest_centre_with_sparse_components_and_tied_centres(cual, tmp_path, rng):
    """Nearest-centre assignment against the definition on two valid .casi files: components whose
    rows are zero on different functions (the transform reads every function some row uses), and
    two identical centres, where an atom belongs to the first of them (numpy's argmin)."""
    _, pot, _ = cual
    el = "Cu"
    n = pot.n_functions(el)
    b = rng.normal(size=(300, n))
    inv = [rng.normal(size=(n, n)) / np.sqrt(n) + np.eye(n) for _ in range(3)]
    base = dict(mean=rng.normal(size=n), scale=rng.uniform(0.5, 2.0, size=n))
    sparse = rng.normal(size=(2, n)) / np.sqrt(n)
    sparse[0, : n // 2] = 0.0  # each row zero where the other is not: every function used by one
    sparse[1, n // 2:] = 0.0
    tied = rng.normal(size=(3, 3)) * 0.3
    tied[1] = tied[0]
    cases = {"sparse": dict(base, inv=inv[:2], components=sparse, centers=rng.normal(size=(2, 2)) * 0.3),
             "tied": dict(base, inv=inv, components=rng.normal(size=(3, n)) / np.sqrt(n), centers=tied)}
    for name, s in cases.items():
        sets = {el: s, "Al": {"inv": [np.eye(pot.n_functions("Al"))]}}
        g = _core.Grader(write_casi(tmp_path / f"{name}.casi", pot, sets, assign="nearest"), pot._pot)
        gamma, cluster = g.grade(pot._pot.element_index(el), b)
        ref_gamma, ref_cluster = reference_grade(s, b, "nearest")
        assert len(set(ref_cluster)) == len(s["inv"]) - (name == "tied"), name  # every cluster but the tied copy
        np.testing.assert_array_equal(cluster, ref_cluster, err_msg=name)
        np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("assign", ["nearest", "min"])
def test_clusters_without_transform_are_refused(cual, tmp_path, rng, assign):
    """Only a one-cluster element may omit centers, mean, scale and components: an element of two
    inverses and none of the four arrays is refused, naming what is missing (also with assign
    'min', which needs no centres to grade, since the file could not be graded with 'nearest')."""
    _, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=2)
    sets["Cu"] = {"inv": sets["Cu"]["inv"]}  # two inverses, no transform
    expect_input_error(write_casi(tmp_path / "bare.casi", pot, sets, assign=assign), pot,
                       "Cu/centers", "/mean", "/scale", "/components")


def test_fortran_ordered_inverse_gives_the_same_gamma(cual, tmp_path, rng):
    """np.save writes a Fortran-ordered array column by column (fortran_order True in its header):
    an .asi whose non-symmetric inverses are stored that way holds the same matrices, so γ must
    equal that of the C-ordered file exactly; likewise a .casi's Fortran-ordered arrays."""
    _, pot, asi = cual
    data = dict(np.load(asi))
    fortran = {}
    for el, m in data.items():
        assert m.shape[0] > 1 and not np.allclose(m, m.T), "a symmetric inverse would hide a transposition"
        fortran[el] = np.asfortranarray(m)
        assert fortran[el].flags.f_contiguous and not fortran[el].flags.c_contiguous
    path = str(write_npz(tmp_path / "fortran.asi", fortran))
    with zipfile.ZipFile(path) as zf:
        assert b"'fortran_order': True" in zf.read("Cu.npy")[:200]
    a, b = _core.Grader(asi, pot._pot), _core.Grader(path, pot._pot)
    for el in pot.elements:
        mu = pot._pot.element_index(el)
        x = rng.normal(size=(40, pot.n_functions(el)))
        ga, _ = a.grade(mu, x)
        gb, _ = b.grade(mu, x)
        np.testing.assert_array_equal(gb, ga)
        np.testing.assert_allclose(ga, np.abs(x @ data[el]).max(axis=1), rtol=1e-12)
    sets = random_clustered_sets(pot, rng, k=3)
    f_sets = {el: {key: ([np.asfortranarray(m) for m in v] if key == "inv" else np.asfortranarray(v))
                   for key, v in s.items()} for el, s in sets.items()}
    c = _core.Grader(write_casi(tmp_path / "c.casi", pot, sets), pot._pot)
    f = _core.Grader(write_casi(tmp_path / "f.casi", pot, f_sets), pot._pot)
    for el in pot.elements:
        mu = pot._pot.element_index(el)
        x = rng.normal(size=(200, pot.n_functions(el)))
        gc, cc = c.grade(mu, x)
        gf, cf = f.grade(mu, x)
        ref_gamma, ref_cluster = reference_grade(sets[el], x, "nearest")
        assert len(set(ref_cluster)) > 1
        np.testing.assert_array_equal(cf, ref_cluster)
        np.testing.assert_array_equal(cf, cc)
        np.testing.assert_array_equal(gf, gc)


def test_int8_transform_arrays_are_read_signed(cual, tmp_path, rng):
    """The .npz reader converts any numeric dtype to numbers: a .casi whose integer-valued,
    partly negative mean and centres are stored as int8 (numpy's '|i1', signed) grades and assigns
    exactly like the same .casi stored as float64, and like the definition."""
    _, pot, _ = cual
    sets = random_clustered_sets(pot, rng, k=3)
    for s in sets.values():
        s["mean"] = np.round(2 * s["mean"])
        s["centers"] = np.round(3 * s["centers"])
        assert (s["mean"] < 0).any() and (s["centers"] < 0).any()
    small = {el: {**s, "mean": s["mean"].astype(np.int8), "centers": s["centers"].astype(np.int8)}
             for el, s in sets.items()}
    path = write_casi(tmp_path / "i1.casi", pot, small)
    with zipfile.ZipFile(path) as zf:
        assert b"'descr': '|i1'" in zf.read("Cu/mean.npy")[:200]
    a = _core.Grader(write_casi(tmp_path / "f8.casi", pot, sets), pot._pot)
    b = _core.Grader(path, pot._pot)
    for el in pot.elements:
        mu = pot._pot.element_index(el)
        x = sets[el]["mean"] + rng.normal(size=(200, pot.n_functions(el)))
        for assign in ("nearest", "min"):
            a.assign = b.assign = assign
            ga, ca = a.grade(mu, x)
            gb, cb = b.grade(mu, x)
            ref_gamma, ref_cluster = reference_grade(sets[el], x, assign)
            assert len(set(ref_cluster)) > 1
            np.testing.assert_array_equal(cb, ref_cluster)
            np.testing.assert_array_equal(cb, ca)
            np.testing.assert_array_equal(gb, ga)
