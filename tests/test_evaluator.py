"""The C++ evaluator against pyace (the reference) and against physical laws."""
import os

import numpy as np
import pytest

import aceuq
from potentials import CU_RHO_CORE, CUAL_LINT, CUAL_ZBL, CUALNI_RANK2, SPECS, make_potential, pyace_projections
from structures import all_structures, close_pair, slab, rattled_bulk

pyace = pytest.importorskip("pyace")

ALL = list(SPECS)


def pyace_results(path, atoms):
    from pyace import PyACECalculator

    a = atoms.copy()
    a.calc = PyACECalculator(path)
    out = {"energy": a.get_potential_energy(), "forces": a.get_forces(),
           "energies": a.calc.results.get("energies")}
    if a.pbc.all():
        out["stress"] = a.get_stress()
    return out


@pytest.mark.parametrize("name", ALL)
def test_energy_forces_stress_match_pyace(make_pot, name):
    path = make_pot(name)
    pot = aceuq.Potential(path)
    for label, atoms in all_structures(SPECS[name].elements).items():
        ref = pyace_results(path, atoms)
        res = pot.evaluate(atoms)
        assert abs(res.energy - ref["energy"]) <= 1e-10 * max(1.0, abs(ref["energy"])), label
        if ref["energies"] is not None:
            np.testing.assert_allclose(res.energies, ref["energies"], rtol=1e-10, atol=1e-10, err_msg=label)
        np.testing.assert_allclose(res.forces, ref["forces"], rtol=0, atol=1e-9, err_msg=label)
        if "stress" in ref:
            np.testing.assert_allclose(res.stress, ref["stress"], rtol=0, atol=1e-9, err_msg=label)


@pytest.mark.parametrize("name", ["Cu_chebexpcos", "CuAl_sbessel"])
def test_mixed_pbc_equals_periodic_cell_with_vacuum(make_pot, name):
    """pyace takes only fully periodic or open cells: a slab with pbc=(1,1,0) must equal the
    same slab with periodic z and enough vacuum, stress (the virial over the cell's volume) too."""
    pot = aceuq.Potential(make_pot(name))
    elements = SPECS[name].elements
    mixed = pot.evaluate(slab(elements, periodic_z=False))
    periodic = pot.evaluate(slab(elements, periodic_z=True))
    ref = pyace_results(make_pot(name), slab(elements, periodic_z=True))
    assert mixed.energy == pytest.approx(ref["energy"], rel=1e-10)
    np.testing.assert_allclose(mixed.forces, periodic.forces, atol=1e-12)
    np.testing.assert_allclose(mixed.forces, ref["forces"], atol=1e-9)
    assert np.abs(ref["stress"]).max() > 1e-3
    np.testing.assert_allclose(mixed.stress, periodic.stress, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mixed.stress, ref["stress"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("mode", ["linear", "full"])
def test_projections_match_pyace(make_pot, name, mode):
    path = make_pot(name)
    pot = aceuq.Potential(path)
    frames = list(all_structures(SPECS[name].elements).values())
    ref = pyace_projections(path, frames, full=(mode == "full"))
    ours = pot.projections(frames, mode=mode)
    for mu, el in enumerate(pot.elements):
        expected = ref.get(mu, np.zeros((0, pot.n_projections(el, mode))))
        got = ours[el].values
        assert got.shape == expected.shape, el
        assert np.abs(expected).max(initial=0) > 0, "reference projections are all zero"
        scale = max(1.0, np.abs(expected).max(initial=0))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * scale, err_msg=el)


def test_function_order_is_pacemakers_where_functions_differ_only_in_lint(potential_dir):
    """The projection columns (the functions' order) are pyace's, also among functions that
    differ only in their intermediate couplings: pacemaker's active sets index the same columns."""
    from pyace import ACEBBasisSet

    path = make_potential(CUAL_LINT, potential_dir)
    bb, pot = ACEBBasisSet(path), aceuq.Potential(path)
    frames = [a for a in all_structures(CUAL_LINT.elements).values() if len(a) > 1]
    ref = pyace_projections(path, frames, full=False)
    ours = pot.projections(frames)
    for el, mu in bb.elements_to_index_map.items():
        expected = [(1, tuple(f.ns), tuple(f.ls), ()) for f in bb.basis_rank1[mu]]
        expected += [(f.rank, tuple(f.ns), tuple(f.ls), tuple(f.LS)) for f in bb.basis[mu]]
        got = [(r, tuple(n), tuple(l), tuple(L)) for r, _, n, l, L in pot._pot.functions(pot.elements.index(el))]
        ties = sum(a[:3] == b[:3] for a, b in zip(expected, expected[1:]))
        assert ties > 0, "the basis has no functions that differ only in lint"
        assert got == expected, el
        scale = max(1.0, np.abs(ref[mu]).max())
        np.testing.assert_allclose(ours[el].values, ref[mu], rtol=0, atol=1e-9 * scale, err_msg=el)


def test_function_order_of_a_file_whose_blocks_are_not_in_order(make_pot, tmp_path):
    """A file whose blocks list their functions in another order (here: the first block reversed)
    is sorted by aceuq as pyace sorts it on loading, into the same projection columns (on a basis
    without functions that differ only in lint, where the two sorts agree; README)."""
    from pyace import ACEBBasisSet

    src = make_pot("CuAl_sbessel")
    lines = open(src).read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == "nbody:") + 1
    end = start
    while end < len(lines) and lines[end].strip().startswith("- {"):
        end += 1
    assert end - start > 10
    path = tmp_path / "reversed.yaml"
    path.write_text("\n".join(lines[:start] + lines[start:end][::-1] + lines[end:]))
    bb, pot = ACEBBasisSet(str(path)), aceuq.Potential(str(path))
    frames = [a for a in all_structures(["Cu", "Al"]).values() if len(a) > 1]
    ref = pyace_projections(str(path), frames, full=False)
    ours = pot.projections(frames)
    for el, mu in bb.elements_to_index_map.items():
        expected = [(1, tuple(f.ns), tuple(f.ls), ()) for f in bb.basis_rank1[mu]]
        expected += [(f.rank, tuple(f.ns), tuple(f.ls), tuple(f.LS)) for f in bb.basis[mu]]
        got = [(r, tuple(n), tuple(l), tuple(L)) for r, _, n, l, L in pot._pot.functions(pot.elements.index(el))]
        assert got == expected, el
        scale = max(1.0, np.abs(ref[mu]).max())
        np.testing.assert_allclose(ours[el].values, ref[mu], rtol=0, atol=1e-9 * scale, err_msg=el)
    assert aceuq.Potential(src).evaluate(frames[0]).energy == pytest.approx(pot.evaluate(frames[0]).energy,
                                                                            rel=1e-12)


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_projections_of_masked_atoms_are_pyaces_rows(make_pot, mode):
    """`atoms` masks compute only the wanted atoms (their neighbours still count): the rows are
    pyace's for those atoms of the whole structures, labelled with their structure and atom."""
    path = make_pot("CuAl_widths")
    pot = aceuq.Potential(path)
    assert pot.n_projections("Cu", mode) != pot.n_projections("Al", mode)
    frames = list(all_structures(["Cu", "Al"]).values())
    rng = np.random.default_rng(4)
    masks = [rng.random(len(a)) < 0.3 for a in frames]
    masks[0][:] = False                               # a structure with no atom wanted
    ref = pyace_projections(path, frames, full=(mode == "full"))
    types = [pot.types_of(a) for a in frames]
    ours = pot.projections(frames, mode=mode, atoms=masks)
    for mu, el in enumerate(pot.elements):
        # pyace's rows of this element, structure by structure, atoms in order
        where = [(s, i) for s, t in enumerate(types) for i in np.flatnonzero(t == mu)]
        keep = np.array([masks[s][i] for s, i in where])
        assert 0 < keep.sum() < len(keep), el
        np.testing.assert_array_equal(ours[el].structure, [s for (s, _), k in zip(where, keep) if k])
        np.testing.assert_array_equal(ours[el].atom, [i for (_, i), k in zip(where, keep) if k])
        expected = ref[mu][keep]
        np.testing.assert_allclose(ours[el].values, expected, rtol=0,
                                   atol=1e-9 * max(1.0, np.abs(expected).max()), err_msg=el)
    with pytest.raises(ValueError, match="atoms: 1 masks for 2 structures"):
        pot.projections(frames[:2], atoms=masks[:1])
    with pytest.raises(ValueError, match="atoms: structure 0 has"):
        pot.projections(frames[:1], atoms=[np.ones(len(frames[0]) + 1, dtype=bool)])
    with pytest.raises(ValueError, match="atoms: the mask of structure 0 holds int64 values"):
        pot.projections(frames[:1], atoms=[np.full(len(frames[0]), 2)])   # not 0/1


def test_linear_projections_agree_with_compute_B_projections(make_pot):
    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_B_projections

    path = make_pot("CuAl_sbessel")
    frames = list(all_structures(["Cu", "Al"]).values())
    ref = compute_B_projections(ACEBBasisSet(path), frames)
    ref = ref[0] if isinstance(ref, tuple) else ref
    ours = aceuq.Potential(path).projections(frames)
    for mu, el in enumerate(["Al", "Cu"]):
        np.testing.assert_allclose(ours[el].values, ref[mu], rtol=0, atol=1e-9 * np.abs(ref[mu]).max())


@pytest.mark.parametrize("name", ["Cu_fs2", "CuAl_sbessel"])
def test_full_projections_are_energy_derivatives(make_pot, name):
    """Full projections are dE_i/dc: check by finite differences in the coefficients."""
    pot = aceuq.Potential(make_pot(name))
    atoms = rattled_bulk(SPECS[name].elements, seed=3)
    full = pot.evaluate(atoms, forces=False, projections="full").projections
    types = pot.types_of(atoms)
    for mu, el in enumerate(pot.elements):
        c0 = pot.coefficients(el)
        nf, nd = c0.shape
        atoms_of_el = np.nonzero(types == mu)[0]
        for f, p in [(0, 0), (nf // 2, nd - 1), (nf - 1, 0)]:
            h = 1e-6 * max(1.0, abs(c0[f, p]))
            e = []
            for sign in (1, -1):
                c = c0.copy()
                c[f, p] += sign * h
                pot.set_coefficients(el, c)
                e.append(pot.evaluate(atoms, forces=False).energies[atoms_of_el])
            pot.set_coefficients(el, c0)
            num = (e[0] - e[1]) / (2 * h)
            np.testing.assert_allclose(full[atoms_of_el, p * nf + f], num, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["Cu_fs2", "CuAl_sbessel", "Cu_chebpow"])
def test_forces_are_minus_gradient(make_pot, name):
    pot = aceuq.Potential(make_pot(name))
    atoms = rattled_bulk(SPECS[name].elements, seed=7)
    f = pot.evaluate(atoms).forces
    h = 1e-5
    for i in (0, 5, 17):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            num = -(pot.evaluate(plus, forces=False).energy - pot.evaluate(minus, forces=False).energy) / (2 * h)
            assert f[i, c] == pytest.approx(num, abs=1e-6), (i, c)


def test_core_density_window_matches_pyace_and_gradient(potential_dir):
    """Atoms whose core density lies inside the embedding's window (rho_core_cut - drho_core_cut,
    rho_core_cut) have their ACE energy switched off smoothly: the two atoms of close_pair are
    inside CU_RHO_CORE's window. Energies and forces equal pyace's; forces are -dE/dr."""
    path = make_potential(CU_RHO_CORE, potential_dir)
    pot = aceuq.Potential(path)
    atoms = close_pair(["Cu"])
    res = pot.evaluate(atoms)
    # the window is reached: without it (pacemaker's default cut) the pair's atoms differ, the rest not
    with open(path) as fh:
        text = fh.read()
    assert text.count("rho_core_cut: 0.006") == 1
    wide = os.path.join(potential_dir, "Cu_rhocore_wide.yaml")
    with open(wide, "w") as fh:
        fh.write(text.replace("rho_core_cut: 0.006", "rho_core_cut: 100000"))
    free = aceuq.Potential(wide).evaluate(atoms)
    moved = np.abs(res.energies - free.energies) > 1e-6
    assert moved[:2].all() and not moved[2:].any()
    ref = pyace_results(path, atoms)
    assert abs(res.energy - ref["energy"]) <= 1e-10 * max(1.0, abs(ref["energy"]))
    np.testing.assert_allclose(res.energies, ref["energies"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.forces, ref["forces"], rtol=0, atol=1e-9)
    h = 1e-6
    for i in (0, 1):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, c] += h
            minus.positions[i, c] -= h
            num = -(pot.evaluate(plus, forces=False).energy - pot.evaluate(minus, forces=False).energy) / (2 * h)
            # steep core repulsion at 1.75 Å: the splined radial functions leave ~1e-6 relative
            assert res.forces[i, c] == pytest.approx(num, rel=1e-5, abs=1e-6), (i, c)


@pytest.mark.parametrize("name", ["Cu_fsss2", "CuAl_sbessel"])
def test_stress_is_strain_derivative(make_pot, name):
    pot = aceuq.Potential(make_pot(name))
    atoms = rattled_bulk(SPECS[name].elements, seed=8)
    stress = pot.evaluate(atoms).stress
    vol = atoms.get_volume()
    h = 1e-6
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    for k, (a, b) in enumerate(voigt):
        e = np.zeros((3, 3))
        e[a, b] = e[b, a] = h / (1 if a == b else 2)
        energies = []
        for sign in (1, -1):
            s = atoms.copy()
            s.set_cell(atoms.cell.array @ (np.eye(3) + sign * e), scale_atoms=True)
            energies.append(pot.evaluate(s, forces=False).energy)
        num = (energies[0] - energies[1]) / (2 * h) / vol
        assert stress[k] == pytest.approx(num, abs=1e-6), k


def test_calculator_matches_potential(make_pot):
    from ase.build import bulk

    path = make_pot("Cu_chebexpcos")
    atoms = bulk("Cu", "fcc", a=3.6).repeat(3)
    atoms.rattle(0.05, seed=1)
    atoms.calc = aceuq.ACECalculator(path)
    res = aceuq.Potential(path).evaluate(atoms)
    assert atoms.get_potential_energy() == res.energy
    np.testing.assert_array_equal(atoms.get_forces(), res.forces)
    np.testing.assert_array_equal(atoms.get_stress(), res.stress)
    np.testing.assert_array_equal(atoms.get_potential_energies(), res.energies)


def test_older_file_layout_flat_radcoefficients(make_pot, tmp_path):
    """Older pacemaker files store radcoefficients as one flat list (k slowest, then n, then l),
    and a scalar `c` for one density; pyace still reads them, and so must we."""
    import yaml
    from pyace import PyACECalculator

    path = make_pot("CuAl_sbessel")
    doc = yaml.safe_load(open(path))
    for block in doc["species"]:
        if "radcoefficients" in block:
            c = np.array(block["radcoefficients"])  # [n][l][k]
            block["radcoefficients"] = [float(x) for x in c.transpose(2, 0, 1).ravel()]
        for f in block.get("nbody", []):
            if len(f["c"]) == 1:
                f["c"] = float(f["c"][0])
    old = tmp_path / "old_layout.yaml"
    old.write_text(yaml.safe_dump(doc))
    atoms = rattled_bulk(["Cu", "Al"], seed=5)
    new_res = aceuq.Potential(path).evaluate(atoms)
    old_res = aceuq.Potential(str(old)).evaluate(atoms)
    assert old_res.energy == new_res.energy
    np.testing.assert_array_equal(old_res.forces, new_res.forces)
    ref = atoms.copy()
    ref.calc = PyACECalculator(str(old))
    assert ref.get_potential_energy() == pytest.approx(old_res.energy, rel=1e-10)


def test_function_order_equals_pyace_on_a_large_basis(tmp_path):
    """Projection order is the reference's canonical order, also for ranks up to 6 where
    functions differ only in their intermediate couplings."""
    from pyace import ACEBBasisSet, create_multispecies_basis_config

    cfg = {"deltaSplineBins": 0.001, "elements": ["Al", "Ni"],
           "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1], "ndensity": 1}},
           "bonds": {"ALL": {"radbase": "SBessel", "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01}},
           "functions": {"number_of_functions_per_element": 600,
                         "ALL": {"nradmax_by_orders": [8, 4, 3, 2, 1, 1], "lmax_by_orders": [0, 3, 3, 2, 1, 1]}}}
    bb = ACEBBasisSet(create_multispecies_basis_config(cfg))
    path = str(tmp_path / "large.yaml")
    bb.save(path)
    bb = ACEBBasisSet(path)
    pot = aceuq.Potential(path)
    for mu, el in enumerate(pot.elements):
        ref = [(f.rank, list(f.mus), list(f.ns), list(f.ls)) for f in list(bb.basis_rank1[mu]) + list(bb.basis[mu])]
        ours = pot._pot.functions(mu)
        assert len(ours) == len(ref)
        # pyace permutes the factors of merged functions into sorted order; compare as multisets
        for (rank, mus, ns, ls, _), (rrank, rmus, rns, rls) in zip(ours, ref):
            assert rank == rrank
            assert sorted(zip(mus, ns, ls)) == sorted(zip(rmus, rns, rls))
    # and the values, which also pins the order of functions with equal (mus, ns, ls)
    from pyace.activelearning import compute_B_projections

    frames = [rattled_bulk(["Al", "Ni"], seed=s) for s in range(2)]
    ref = compute_B_projections(bb, frames)
    ref = ref[0] if isinstance(ref, tuple) else ref
    ours = pot.projections(frames)
    for mu, el in enumerate(pot.elements):
        np.testing.assert_allclose(ours[el].values, ref[mu], rtol=0, atol=1e-9 * np.abs(ref[mu]).max())


@pytest.mark.parametrize("name", ["Cu_fs2", "CuAl_sbessel"])
def test_ensemble_members_equal_separate_evaluations(make_pot, name):
    """Members evaluated together (shared neighbours, A and B) equal each member on its own."""
    pot = aceuq.Potential(make_pot(name))
    atoms = rattled_bulk(SPECS[name].elements, seed=11)
    rng = np.random.default_rng(0)
    base = {el: pot.coefficients(el) for el in pot.elements}
    members = [{el: c * (1 + 0.1 * rng.normal(size=c.shape)) for el, c in base.items()} for _ in range(3)]
    together = pot.evaluate_ensemble(atoms, members)
    for k, member in enumerate(members):
        for el, c in member.items():
            pot.set_coefficients(el, c)
        alone = pot.evaluate(atoms)
        assert together["energy"][k] == pytest.approx(alone.energy, rel=1e-13)
        np.testing.assert_allclose(together["energies"][k], alone.energies, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(together["forces"][k], alone.forces, rtol=1e-12, atol=1e-12)
    for el, c in base.items():
        pot.set_coefficients(el, c)
    with pytest.raises(aceuq.InputError, match="coefficients of shape"):
        pot.evaluate_ensemble(atoms, [{el: c[:-1] for el, c in base.items()}])


def pyace_core_density(path, atoms, i):
    """Core density of atom i, the sum over its neighbours j of the core repulsion cr(r_ij), from
    pyace's radial functions (one-element potential)."""
    from ase.neighborlist import neighbor_list
    from pyace import ACEBBasisSet

    rf = ACEBBasisSet(path).radial_functions
    ii, d = neighbor_list("id", atoms, float(ACEBBasisSet(path).cutoffmax))
    total = 0.0
    for r in d[ii == i]:
        rf.evaluate(float(r), rf.nradbase, rf.nradial, 0, 0)
        total += rf.cr
    return total


def test_core_density_cut_defaults_to_pacemakers(make_pot, tmp_path):
    """A file without rho_core_cut / drho_core_cut uses pacemaker's defaults, 100000 and 250, as
    pyace does. Made sensitive: a strong core repulsion, scaled so that the core density of atom 0
    of a close pair sits in the middle of the default window (99750, 100000), atom 1 near it and
    every other atom far below (yet above any small cut), so that another value of either default
    moves the energy."""
    text = open(make_pot("Cu_chebpow")).read()
    assert text.count("rho_core_cut: 100000\n") == 1 and text.count("drho_core_cut: 250\n") == 1
    assert text.count("core-repulsion: [100, 3]") == 1
    atoms = close_pair(["Cu"], distance=1.5)
    probe = tmp_path / "probe.yaml"
    probe.write_text(text.replace("core-repulsion: [100, 3]", "core-repulsion: [10000, 1]"))
    prefactor = 10000 * 99875 / pyace_core_density(str(probe), atoms, 0)  # cr is linear in it
    strong = text.replace("core-repulsion: [100, 3]", f"core-repulsion: [{prefactor!r}, 1]")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(strong)
    assert pyace_core_density(str(explicit), atoms, 0) == pytest.approx(99875, abs=5)
    assert pyace_core_density(str(explicit), atoms, 5) > 1000
    absent = tmp_path / "absent.yaml"
    absent.write_text(strong.replace("    rho_core_cut: 100000\n", "").replace("    drho_core_cut: 250\n", ""))
    assert "rho_core_cut" not in absent.read_text()
    res = aceuq.Potential(str(absent)).evaluate(atoms)
    want = aceuq.Potential(str(explicit)).evaluate(atoms)
    assert res.energy == want.energy
    np.testing.assert_array_equal(res.energies, want.energies)
    np.testing.assert_array_equal(res.forces, want.forces)
    ref = pyace_results(str(absent), atoms)
    assert res.energy == pytest.approx(ref["energy"], rel=1e-9)
    np.testing.assert_allclose(res.energies, ref["energies"], rtol=1e-9, atol=1e-6)
    # the test sees the defaults: other cuts or widths change the energies
    for cut, width in ((100100, 250), (100000, 100), (10000, 250), (1000, 250)):
        other = tmp_path / f"other_{cut}_{width}.yaml"
        other.write_text(strong.replace(" rho_core_cut: 100000\n", f" rho_core_cut: {cut}\n")
                         .replace(" drho_core_cut: 250\n", f" drho_core_cut: {width}\n"))
        moved = aceuq.Potential(str(other)).evaluate(atoms)
        assert np.abs(moved.energies[0] - want.energies[0]) > 1e-3, (cut, width)


RADIAL_KEYS = ("nradmaxi", "lmaxi", "rcutij", "dcutij", "NameOfCutoffFunctionij", "nradbaseij", "radbase",
               "radparameters", "radcoefficients")
CORE_KEYS = ("core-repulsion", "r_in", "delta_in", "inner_cutoff_type")


def without_keys(text, block, keys):
    """The potential file text with the given keys deleted from the species block `block`."""
    parts = text.split("  - speciesblock: ")
    hit = [k for k, p in enumerate(parts) if p.startswith(block + "\n")]
    assert len(hit) == 1, block
    lines = parts[hit[0]].splitlines(True)
    kept = [ln for ln in lines if ln.strip().split(":")[0] not in keys]
    assert len(lines) - len(kept) == len(keys), "every key should be present once"
    parts[hit[0]] = "".join(kept)
    return "  - speciesblock: ".join(parts)


@pytest.mark.parametrize("keys", ["radial", "core", "both"])
@pytest.mark.parametrize("block", ["Al Cu", "Cu Al"])
def test_pair_block_may_leave_its_bond_to_its_mirror(make_pot, tmp_path, block, keys):
    """A pair block that omits its radial basis, its core repulsion and inner cutoff, or both,
    takes them from its mirror block ('Al Cu' from 'Cu Al' and conversely): energies and forces
    equal the complete file's exactly, and pyace's wherever pyace reads the edited file (it
    refuses a block without core-repulsion whose mirror has one). The core repulsion is made
    non-zero and a Cu-Al pair put at 1.5 Å, inside the inner cutoff, so the pair bond counts."""
    text = open(make_pot("CuAl_sbessel")).read()
    assert text.count("core-repulsion: [0, 1]") == 4
    full = tmp_path / "full.yaml"
    full.write_text(text.replace("core-repulsion: [0, 1]", "core-repulsion: [5, 2]"))
    removed = {"radial": RADIAL_KEYS, "core": CORE_KEYS, "both": RADIAL_KEYS + CORE_KEYS}[keys]
    edited = tmp_path / "edited.yaml"
    edited.write_text(without_keys(full.read_text(), block, removed))
    atoms = close_pair(["Cu", "Al"], distance=1.5)
    atoms.symbols[0], atoms.symbols[1] = "Cu", "Al"
    want = aceuq.Potential(str(full)).evaluate(atoms)
    # the pair's core repulsion is seen
    assert abs(aceuq.Potential(make_pot("CuAl_sbessel")).evaluate(atoms).energy - want.energy) > 1e-2
    res = aceuq.Potential(str(edited)).evaluate(atoms)
    assert res.energy == want.energy
    np.testing.assert_array_equal(res.energies, want.energies)
    np.testing.assert_array_equal(res.forces, want.forces)
    if keys != "core":
        ref = pyace_results(str(edited), atoms)
        assert res.energy == pytest.approx(ref["energy"], rel=1e-10)
        np.testing.assert_allclose(res.forces, ref["forces"], rtol=0, atol=1e-9)


def without_block(text, block):
    parts = text.split("  - speciesblock: ")
    kept = [p for p in parts if not p.startswith(block + "\n")]
    assert len(kept) == len(parts) - 1, block
    return "  - speciesblock: ".join(kept)


@pytest.mark.parametrize("name", ["CuAl_sbessel", "CuAl_cheblinear", "CuAl_zbl"])
@pytest.mark.parametrize("block", ["Al Cu", "Cu Al"])
def test_pair_block_left_out_adds_nothing_to_its_element(make_pot, potential_dir, tmp_path, name, block):
    """A file without one pair block (its first element then has no functions with the second as
    a neighbour; the bond's radial basis is in the mirror block), as pyace reads it: the pair adds
    nothing to the first element's atoms, core repulsion and inner cut-off included (distance,
    density and ZBL inner cut-offs, pairs inside them), while the second element's atoms keep
    theirs. Energies, per-atom energies, forces and stress equal pyace's."""
    text = open(make_potential(CUAL_ZBL, potential_dir) if name == "CuAl_zbl" else make_pot(name)).read()
    if "core-repulsion: [0, 1]" in text:
        text = text.replace("core-repulsion: [0, 1]", "core-repulsion: [50, 5]")
    edited = tmp_path / "edited.yaml"
    edited.write_text(without_block(text, block))
    pot = aceuq.Potential(str(edited))
    full = aceuq.Potential(make_potential(CUAL_ZBL, potential_dir) if name == "CuAl_zbl" else make_pot(name))
    first = block.split()[0]
    assert 0 < pot.n_functions(first) < full.n_functions(first)
    structures = [close_pair(["Cu", "Al"], distance=d) for d in (1.2, 1.5, 1.8, 2.1)]
    for atoms in structures:  # the close pair (atoms 0 and 1) of the two elements
        atoms.symbols[0], atoms.symbols[1] = "Cu", "Al"
    for atoms in structures + [rattled_bulk(["Cu", "Al"], seed=3)]:
        res = pot.evaluate(atoms)
        ref = pyace_results(str(edited), atoms)
        assert res.energy == pytest.approx(ref["energy"], rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(res.energies, ref["energies"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(res.forces, ref["forces"], rtol=0, atol=1e-9)
        if atoms.pbc.all():
            np.testing.assert_allclose(res.stress, ref["stress"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("rank2", [False, True])
def test_pair_block_left_out_that_functions_need_is_refused(make_pot, potential_dir, tmp_path, rank2):
    """Without 'Al Cu', the functions of 'Al Cu Ni' with Cu neighbours of Al have no radial basis
    (pyace fails with map::at): one clear error naming the blocks, also where the Cu neighbour is
    a function's first neighbour only (rank <= 2)."""
    edited = tmp_path / "edited.yaml"
    path = make_potential(CUALNI_RANK2, potential_dir) if rank2 else make_pot("CuAlNi_chebexpcos")
    edited.write_text(without_block(open(path).read(), "Al Cu"))
    with pytest.raises(aceuq.InputError, match="block 'Al Cu Ni' has functions of Al atoms with Cu neighbours, "
                                               "but there is no block 'Al Cu'"):
        aceuq.Potential(str(edited))
