"""Active sets (aceuq.activeset, aceuq.select, CLI verbs activeset/gamma/select) against pyace."""
import json
import os

import numpy as np
import pytest

import aceuq
from aceuq.activeset import (WHITEN_RTOL, ActiveSet, build_active_set, cluster_transform, cluster_with_minimum_size,
                             feature_columns, load_npz, standardized_pca)
from aceuq.cli.main import main as cli
from aceuq.select import select_structures
from maxvol_reference import reference_select
from potentials import SPECS, emt_training_set, pyace_gamma
from structures import cluster, rattled_bulk, selection_candidates, slab

pyace = pytest.importorskip("pyace")
TOL = 1e-3


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    import potentials

    folder = str(tmp_path_factory.mktemp("aset_cu"))
    path = potentials.make_potential(SPECS["Cu_sbessel"], folder)
    pot = aceuq.Potential(path)
    train = emt_training_set(["Cu"], n=20, seed=7)
    return path, pot, train, folder


def held_out():
    return [rattled_bulk(["Cu"], seed=11), slab(["Cu"], periodic_z=True), cluster(["Cu"])] + emt_training_set(["Cu"], n=3, seed=99)


def test_global_training_atoms_interpolate_and_pyace_agrees(cu, tmp_path):
    path, pot, train, _ = cu
    built = build_active_set(pot, train)
    m = built.elements["Cu"].matrices[0]
    assert m.rank == pot.n_functions("Cu") and not built.clustered
    out = built.save(str(tmp_path / "ours.asi"))
    assert sorted(load_npz(out)) == ["Cu"]
    aset = ActiveSet.load(out, pot)
    assert max(g.max() for g, _ in aset.gamma(train)) <= 1 + TOL + 1e-9
    for atoms in held_out()[:3]:
        ours, _ = aset.gamma(atoms)
        np.testing.assert_allclose(ours, pyace_gamma(path, out, atoms), rtol=1e-8, atol=1e-12)


def test_gamma_of_many_structures_is_graded_in_batches(cu, tmp_path, monkeypatch):
    """A trajectory is graded a batch at a time (bounded memory): every structure gets pyace's γ
    whatever the batch size, and a bad structure in a later batch is named by its own number."""
    import aceuq.activeset as activeset

    path, pot, train, _ = cu
    out = build_active_set(pot, train).save(str(tmp_path / "g.asi"))
    aset = ActiveSet.load(out, pot)
    frames = held_out()
    reference = [pyace_gamma(path, out, a) for a in frames]
    width = pot.n_projections("Cu")
    for batch_atoms in (1, 40, 10 ** 9):  # a batch per structure, a few structures, all at once
        monkeypatch.setattr(activeset, "GAMMA_BATCH_VALUES", batch_atoms * width)
        graded = aset.gamma(frames)
        assert len(graded) == len(frames)
        for (g, c), ref, a in zip(graded, reference, frames):
            assert len(g) == len(c) == len(a)
            np.testing.assert_allclose(g, ref, rtol=1e-8, atol=1e-12)
    bad = frames[-1].copy()
    bad.positions[1] = bad.positions[0]
    monkeypatch.setattr(activeset, "GAMMA_BATCH_VALUES", 40 * width)
    with pytest.raises(aceuq.InputError, match=f"structure {len(frames)}: "):
        aset.gamma(frames + [bad])


@pytest.mark.parametrize("spec,elements", [("Cu_sbessel", ["Cu"]), ("CuAl_sbessel", ["Cu", "Al"])])
def test_pyace_asi_loads_in_ours_and_max_gamma_agrees(spec, elements, tmp_path):
    """pace's active set and ours, from the same projections: pyace's .asi loads here with pyace's
    gamma, and on held-out atoms the max gammas of the two agree within the MaxVol tolerance (ours
    starts where pacemaker's MaxVol starts and makes the same greedy swaps)."""
    import potentials
    from pyace import ACEBBasisSet
    from pyace.activelearning import (compute_A_active_inverse, compute_active_set, compute_B_projections,
                                      save_active_inverse_set)

    path = potentials.make_potential(SPECS[spec], str(tmp_path))
    pot = aceuq.Potential(path)
    train = emt_training_set(elements, n=24, seed=7)
    basis = ACEBBasisSet(path)
    proj = compute_B_projections(basis, train)
    proj = proj[0] if isinstance(proj, tuple) else proj
    active = compute_active_set(proj, tol=1 + TOL)
    active = active[0] if isinstance(active, tuple) else active
    theirs = str(tmp_path / "pyace.asi")  # keyed by pyace's species index, in the basis's element order
    save_active_inverse_set(theirs, compute_A_active_inverse(active), elements_name=basis.elements_name)
    ref = ActiveSet.load(theirs, pot)
    held = [rattled_bulk(elements, seed=11), slab(elements, periodic_z=True), cluster(elements)]
    held += emt_training_set(elements, n=3, seed=99)
    for atoms in held[:2]:
        np.testing.assert_allclose(ref.gamma(atoms)[0], pyace_gamma(path, theirs, atoms), rtol=1e-8, atol=1e-12)
    built = build_active_set(pot, train, tol=TOL)
    assert all(built.elements[el].matrices[0].rank == pot.n_functions(el) for el in elements)
    ours = ActiveSet.load(built.save(str(tmp_path / "ours.asi")), pot)
    extrapolating = 0
    for atoms in held:
        a, b = ours.gamma(atoms)[0].max(), ref.gamma(atoms)[0].max()
        assert abs(a - b) <= TOL * b, (a, b)
        extrapolating += b > 1 + TOL
    assert extrapolating >= 2  # the comparison covers extrapolation, where two optima would differ


def test_real_data_keep_their_resolved_directions(data_dir, tmp_path):
    """mlearn-Si (DFT MD, vacancies, surfaces): the column-scaled projections have resolved
    directions between 1e-12 and 1e-8 of the largest, which pacemaker's MaxVol keeps and which
    decide the grade of many new atoms. The active set keeps all of them: same rows as pyace's
    MaxVol, and the same gamma on the test set."""
    import ase.io
    import potentials
    from pyace import ACEBBasisSet
    from pyace.activelearning import compute_active_set, compute_B_projections

    frames = ase.io.read(os.path.join(data_dir, "mlearn-Si", "train.extxyz"), ":")
    train = [a for a in frames if a.info["config_type"] != "Elastic"][::4]
    test = ase.io.read(os.path.join(data_dir, "mlearn-Si", "test.extxyz"), ":")[::2]
    path = potentials.make_potential_from_frames(potentials.SI_SMALL, str(tmp_path), train, "mixed")
    pot = aceuq.Potential(path)
    proj = compute_B_projections(ACEBBasisSet(path), train)
    proj = (proj[0] if isinstance(proj, tuple) else proj)[0]
    R = np.linalg.qr(proj, mode="r")
    s = np.linalg.svd(R / np.linalg.norm(R, axis=0), compute_uv=False)
    assert s[-1] / s[0] < 1e-8          # the data hold such directions: the check below can fail
    built = build_active_set(pot, train, tol=TOL)
    m = built.elements["Si"].matrices[0]
    assert m.rank == pot.n_functions("Si") and not m.notes
    active = compute_active_set({0: proj}, tol=1 + TOL)
    active = (active[0] if isinstance(active, tuple) else active)[0]
    # the same active set: equal volumes (atoms of one environment are interchangeable)
    assert np.linalg.slogdet(proj[m.rows])[1] == pytest.approx(np.linalg.slogdet(active)[1], abs=1e-6)
    ours = ActiveSet.load(built.save(str(tmp_path / "si.asi")), pot)
    g_ours = np.concatenate([g for g, _ in ours.gamma(test)])
    g_pace = np.abs(pot.projections(test)["Si"].values @ np.linalg.inv(active)).max(axis=1)
    np.testing.assert_allclose(g_ours, g_pace, rtol=1e-6)
    # tol 0, below the rounding of these coefficients (condition number ~1e8): the swaps cycle at
    # 1 + 1e-10, and the refinement stops when a kept set comes back, not at its limit
    import inspect

    from aceuq.maxvol import select_active_set

    limit = inspect.signature(select_active_set).parameters["max_refinements"].default
    m0 = build_active_set(pot, train, tol=0).elements["Si"].matrices[0]
    assert m0.refinements < limit and 0 <= m0.max_gamma - 1 < 1e-8
    assert "below the rounding of these rows' coefficients" in m0.notes[0]


def test_ase_calculator_grades_atoms_as_pyace(tmp_path):
    """ACECalculator(..., active_set=) gives per-atom gamma and cluster from the same evaluation as
    energy and forces: equal to pyace's PyACECalculator.set_active_set for a two-element .asi,
    to ActiveSet.gamma for a .casi (pyace has none), and the energy and forces are unchanged."""
    import potentials

    from aceuq import ACECalculator

    path = potentials.make_potential(SPECS["CuAl_sbessel"], str(tmp_path))
    pot = aceuq.Potential(path)
    train = emt_training_set(["Cu", "Al"], n=24, seed=7)
    asi = build_active_set(pot, train).save(str(tmp_path / "g.asi"))
    casi = build_active_set(pot, train, clusters=2).save(str(tmp_path / "c.casi"))
    for atoms in (rattled_bulk(["Cu", "Al"], seed=11), slab(["Cu", "Al"], periodic_z=True)):
        plain = atoms.copy()
        plain.calc = ACECalculator(path)
        a = atoms.copy()
        a.calc = ACECalculator(path, active_set=asi)
        np.testing.assert_allclose(a.get_forces(), plain.get_forces(), rtol=0, atol=1e-13)
        assert a.get_potential_energy() == pytest.approx(plain.get_potential_energy(), rel=1e-14)
        np.testing.assert_allclose(a.calc.results["gamma"], pyace_gamma(path, asi, atoms), rtol=1e-8, atol=1e-12)
        assert a.calc.results["gamma"].max() > 1  # the comparison covers extrapolation
        c = atoms.copy()
        c.calc = ACECalculator(path, active_set=ActiveSet.load(casi, pot, assign="min"))
        c.get_potential_energy()
        gamma, cluster = ActiveSet.load(casi, pot, assign="min").gamma(atoms)
        np.testing.assert_array_equal(c.calc.results["gamma"], gamma)
        np.testing.assert_array_equal(c.calc.results["cluster"], cluster)
        assert len(set(cluster)) > 1
    with pytest.raises(ValueError, match="give active_set too"):
        ACECalculator(path, assign="min")
    with pytest.raises(ValueError, match="another potential"):
        ACECalculator(potentials.make_potential(SPECS["Cu_sbessel"], str(tmp_path)),
                      active_set=ActiveSet.load(asi, pot))


def test_clustered_k1_equals_global_and_own_cluster_interpolates(cu, tmp_path):
    _, pot, train, _ = cu
    glob = build_active_set(pot, train)
    one = build_active_set(pot, train, clusters=1)
    np.testing.assert_array_equal(glob.elements["Cu"].inverses[0], one.elements["Cu"].inverses[0])
    np.testing.assert_array_equal(glob.elements["Cu"].active_rows[0], one.elements["Cu"].active_rows[0])
    two = build_active_set(pot, train, clusters=3)
    s = two.elements["Cu"]
    assert 1 <= s.k <= 3 and min(s.cluster_sizes) >= pot.n_functions("Cu")
    path = two.save(str(tmp_path / "three.casi"))
    data = load_npz(path)
    meta = json.loads(bytes(data["meta"]).decode())
    assert meta["format"] == "aceuq.casi" and meta["clusters"] == {"Cu": s.k}
    assert meta["fingerprint"] == pot.fingerprint and meta["mode"] == "linear"
    aset = ActiveSet.load(path, pot)
    assert aset.n_clusters("Cu") == s.k
    gammas = aset.gamma(train)
    assert max(g.max() for g, _ in gammas) <= 1 + TOL + 1e-9
    if s.k > 1:
        assert len(np.unique(np.concatenate([c for _, c in gammas]))) == s.k
        aset.assign = "min"
        assert max(g.max() for g, _ in aset.gamma(train)) <= 1 + TOL + 1e-9
    auto = build_active_set(pot, train, clusters="auto")
    assert auto.elements["Cu"].notes and auto.elements["Cu"].k >= 1


def test_clusters_use_the_two_and_three_body_functions(cu):
    # the clustering transform reads only B functions of rank <= 2; the active sets use all
    _, pot, train, _ = cu
    ranks = pot.function_ranks("Cu")
    assert (ranks <= 2).sum() >= 2 and (ranks > 2).any()
    cols = feature_columns(pot, "Cu")
    np.testing.assert_array_equal(cols, np.nonzero(ranks <= 2)[0])
    built = build_active_set(pot, train, clusters=2)
    s = built.elements["Cu"]
    assert s.k == 2
    assert np.all(s.components[:, ranks > 2] == 0) and np.any(s.components[:, ranks <= 2] != 0)
    # the stored transform gives the whitened features: unit variance over the training atoms
    feats = s.transform(pot.projections(train)["Cu"].values)
    np.testing.assert_allclose(feats.var(axis=0), 1.0, rtol=1e-6)
    assert all(inv.shape == (len(ranks), len(ranks)) for inv in s.inverses)
    # the restricted PCA is the PCA of the selected columns, embedded
    x = np.random.default_rng(0).normal(size=(200, 6)) * [1, 2, 3, 4, 5, 6]
    mean, scale, comps = standardized_pca(x, 2, np.array([1, 3, 4]))
    m2, s2, c2 = standardized_pca(x[:, [1, 3, 4]], 2)
    np.testing.assert_allclose(comps[:, [1, 3, 4]], c2)
    assert np.all(comps[:, [0, 2, 5]] == 0)
    np.testing.assert_allclose(mean[[1, 3, 4]], m2)
    np.testing.assert_allclose(scale[[1, 3, 4]], s2)


def test_whitened_features_find_groups_a_correlated_nuisance_hides():
    # two groups differ along one column; five strongly correlated columns carry a uniform
    # nuisance. Standardized PCA gives the nuisance 5x the variance and k-means splits it;
    # whitened, every direction weighs the same and the bimodal one is split.
    rng = np.random.default_rng(3)
    n = 4000
    group = rng.integers(0, 2, n)
    nuisance = rng.uniform(-1, 1, n)
    x = np.column_stack([nuisance + 0.01 * rng.normal(size=n) for _ in range(5)]
                        + [np.where(group == 1, 1.0, -1.0) + 0.1 * rng.normal(size=n)])
    cols = np.arange(6)

    def split(mean, scale, comps):
        labels, _, _ = cluster_with_minimum_size(((x - mean) / scale) @ comps.T, 2, 10)
        return max(np.mean(labels == group), np.mean(labels != group))

    mean, scale, comps = cluster_transform(x, 6, cols)
    feats = ((x - mean) / scale) @ comps.T
    np.testing.assert_allclose(feats.var(axis=0), 1.0, rtol=1e-9)
    assert split(mean, scale, comps) == 1.0
    assert split(*standardized_pca(x, 6, cols)) < 0.6
    # a direction along which the data does not vary is dropped, not blown up
    flat = np.column_stack([x, 2 * x[:, 5] + 1e-9 * rng.normal(size=n)])
    _, _, comps_flat = cluster_transform(flat, 7, np.arange(7))
    _, _, _, var = standardized_pca(flat, 7, np.arange(7), variances=True)
    assert len(comps_flat) == np.sum(var > WHITEN_RTOL * var[0]) == 6


def test_too_small_clusters_are_merged_with_a_message(cu):
    _, pot, train, _ = cu
    n_proj = pot.n_functions("Cu")
    built = build_active_set(pot, train[:3], clusters=4)       # 96 atoms: at most 1 cluster of >= n_proj
    s = built.elements["Cu"]
    assert s.k == 1 and any("requested" in n or "merged" in n for n in s.notes), s.notes
    with pytest.raises(aceuq.InputError, match="training atoms"):
        build_active_set(pot, train[:1])                       # 32 atoms < n_proj
    assert n_proj > 32


def test_bad_input(cu, tmp_path, make_pot):
    path, pot, train, _ = cu
    nan = train[0].copy()
    nan.positions[3, 1] = np.nan
    with pytest.raises(aceuq.InputError, match="non-finite"):
        build_active_set(pot, train + [nan])
    other = aceuq.Potential(make_pot("Cu_chebpow"))
    casi = build_active_set(pot, train, clusters=2).save(str(tmp_path / "cu.casi"))
    with pytest.raises(aceuq.InputError, match="another potential"):
        ActiveSet.load(casi, other)
    with pytest.raises(aceuq.InputError, match="missing.asi"):
        ActiveSet.load(str(tmp_path / "missing.asi"), pot)
    two = build_active_set(pot, train, clusters=2)
    if two.clustered:
        with pytest.raises(aceuq.InputError, match=r"\.casi"):
            two.save(str(tmp_path / "x.asi"))


def test_select_prefers_novel_structures(cu, tmp_path):
    _, pot, train, _ = cu
    aset = ActiveSet.load(build_active_set(pot, train).save(str(tmp_path / "s.asi")), pot)
    candidates = emt_training_set(["Cu"], n=2, seed=7)[:1] + [slab(["Cu"]), cluster(["Cu"])]
    sel = select_structures(pot, candidates, aset, 2)
    assert len(sel.indices) <= 2 and 0 not in sel.indices   # the training frame brings nothing new
    assert set(sel.indices) <= {1, 2} and sel.indices


def test_degenerate_elastic_si(make_pot, data_dir, tmp_path):
    """Strained perfect crystals (mlearn-Si Elastic): singular projections; gamma stays finite and sane."""
    import ase.io
    import potentials

    frames = ase.io.read(os.path.join(data_dir, "mlearn-Si", "train.extxyz"), ":")
    elastic = [a for a in frames if a.info["config_type"] == "Elastic"]
    surface = [a for a in frames if a.info["config_type"] == "Surface"][:2]
    train, rest = elastic[::2], elastic[1::2]
    path = potentials.make_potential_from_frames(potentials.SI_SMALL, str(tmp_path), train, "elastic")
    pot = aceuq.Potential(path)
    built = build_active_set(pot, train)
    m = built.elements["Si"].matrices[0]
    assert m.rank < pot.n_functions("Si") and m.condition < 1e13 and np.all(np.isfinite(m.inverse))
    aset = ActiveSet.load(built.save(str(tmp_path / "si.asi")), pot)
    g_train = np.concatenate([g for g, _ in aset.gamma(train)])
    assert g_train.max() <= 1 + TOL + 1e-6
    g_rest = np.array([g.max() for g, _ in aset.gamma(rest)])
    g_surf = np.array([g.max() for g, _ in aset.gamma(surface)])
    assert np.all(np.isfinite(g_rest)) and np.all(np.isfinite(g_surf))
    assert np.median(g_rest) < 10                 # strained crystals like the training ones
    assert g_surf.min() > 100 * np.median(g_rest)  # surfaces are novel


def test_cli_activeset_gamma_select(cu, tmp_path, capsys):
    import ase.io

    path, pot, train, _ = cu
    data = str(tmp_path / "train.extxyz")
    ase.io.write(data, [a.copy() for a in train])
    cand = str(tmp_path / "cand.extxyz")
    ase.io.write(cand, [slab(["Cu"]), cluster(["Cu"]), train[0].copy()])
    asi = str(tmp_path / "cli.asi")
    assert cli(["activeset", path, data, "-o", asi, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Cu: 640 atoms" in out and "effective k 1" in out and "condition" in out
    casi = str(tmp_path / "cli.casi")
    assert cli(["activeset", path, data, "-o", casi, "--clusters", "2", "--assign", "min", "--memory-limit",
                "1MB", "--no-progress"]) == 0
    res = str(tmp_path / "g.extxyz")
    assert cli(["gamma", path, casi, cand, "-o", res, "--no-progress"]) == 0
    graded = ase.io.read(res, ":")
    assert len(graded) == 3 and "gamma" in graded[0].arrays and "cluster" in graded[0].arrays
    assert graded[0].info["max_gamma"] > 1 and graded[2].info["max_gamma"] <= 1 + TOL + 1e-9
    # the summary counts the atoms above 1 + MaxVol's tolerance (training atoms may reach it)
    summary = capsys.readouterr().out.splitlines()[-1]
    above = sum(int((f.arrays["gamma"] > 1 + TOL).sum()) for f in graded)
    assert f"{above} atoms above {1 + TOL:g}" in summary
    capsys.readouterr()
    assert cli(["gamma", path, casi, data, "-o", str(tmp_path / "t.extxyz"), "--no-progress"]) == 0
    assert ", 0 atoms above 1.001" in capsys.readouterr().out
    aset = ActiveSet.load(casi, pot)
    for frame, original in zip(graded, ase.io.read(cand, ":")):  # what the library grades (8 digits in the file)
        gamma, cluster_of = aset.gamma(original)
        np.testing.assert_allclose(frame.arrays["gamma"], gamma, rtol=1e-7)
        np.testing.assert_array_equal(frame.arrays["cluster"], cluster_of)
        assert frame.info["max_gamma"] == pytest.approx(gamma.max(), rel=1e-7)
    assert aset.mode == "linear"
    full = str(tmp_path / "full.casi")
    assert cli(["activeset", path, data, "-o", full, "--clusters", "2", "--full", "--no-progress"]) == 0
    assert ActiveSet.load(full, pot).mode == "full"
    sel = str(tmp_path / "sel.extxyz")
    assert cli(["select", path, cand, "--active-set", asi, "-n", "1", "-o", sel, "--no-progress"]) == 0
    assert len(ase.io.read(sel, ":")) == 1
    first = ase.io.read(sel, ":")[0].info["candidate_index"]
    assert cli(["select", path, cand, "--active-set", asi, "-n", "1", "-o", sel, "--no-progress", "--one-shot"]) == 0
    assert [a.info["candidate_index"] for a in ase.io.read(sel, ":")] == [first]  # the same first pick
    bad = str(tmp_path / "bad.extxyz")
    with open(bad, "w") as fh:
        fh.write("not xyz\n")
    assert cli(["gamma", path, asi, bad, "-o", res, "--no-progress"]) == 1
    assert "bad.extxyz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["activeset", path, data, "-o", str(tmp_path / "k.asi"), "--clusters", "0"])


def _stderr_on_a_terminal(argv):
    """Run `python -m aceuq ARGV` with stderr on a pseudo-terminal (bars are drawn only on
    terminals); returns (exit status, what it printed there)."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    # a terminal of 0 columns (a new pty's size) would truncate every bar to nothing
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-m", "aceuq"] + argv, stderr=slave, stdout=subprocess.DEVNULL,
                            env=env)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(), seen.decode(errors="replace")


def test_gamma_shows_reading_and_writing_on_a_terminal(cu, tmp_path):
    """On a terminal, `aceuq gamma` shows bars for reading the structures and writing the
    result, not only for grading; --no-progress shows none. The file written frame by frame
    holds every frame."""
    import ase.io

    path, _, train, _ = cu
    data = str(tmp_path / "frames.extxyz")
    ase.io.write(data, [a.copy() for a in train])
    asi = str(tmp_path / "t.asi")
    assert cli(["activeset", path, data, "-o", asi, "--no-progress"]) == 0
    out = str(tmp_path / "graded.extxyz")
    rc, shown = _stderr_on_a_terminal(["gamma", path, asi, data, "-o", out])
    assert rc == 0, shown
    assert "reading frames.extxyz" in shown and "writing graded.extxyz" in shown, shown
    assert len(ase.io.read(out, ":")) == len(train)
    rc, shown = _stderr_on_a_terminal(["gamma", path, asi, data, "-o", out, "--no-progress"])
    assert rc == 0 and "reading" not in shown and "writing" not in shown, shown


def test_memory_limit_spills_projections_and_gives_a_valid_active_set(cu, monkeypatch):
    """Under a memory limit smaller than the projection matrix, projections go to memory-mapped
    files and MaxVol streams them; the active set meets the same criterion as the in-memory one
    (every training atom at gamma <= 1 + tol), though its rows may differ."""
    path, pot, train, folder = cu
    seen = {}
    original = aceuq.Potential.projections

    def spy(self, structures, memmap_dir=None, **kwargs):
        out = original(self, structures, memmap_dir=memmap_dir, **kwargs)
        seen["memmap"] = all(isinstance(p.values, np.memmap) for p in out.values() if len(p.values))
        return out

    monkeypatch.setattr(aceuq.Potential, "projections", spy)
    n_bytes = 8 * sum(len(a) for a in train) * pot.n_projections("Cu")
    limited = build_active_set(pot, train, memory_limit=n_bytes)  # spills beyond half the limit
    assert seen["memmap"]
    free = build_active_set(pot, train)
    assert not seen["memmap"]
    lim_path, free_path = limited.save(os.path.join(folder, "lim.asi")), free.save(os.path.join(folder, "free.asi"))
    probe = [rattled_bulk(["Cu"], seed=s) for s in range(3)]
    g1 = np.concatenate([ActiveSet.load(lim_path, pot).gamma(a)[0] for a in probe])
    g2 = np.concatenate([ActiveSet.load(free_path, pot).gamma(a)[0] for a in probe])
    assert np.all(np.concatenate([ActiveSet.load(lim_path, pot).gamma(a)[0] for a in train]) <= 1 + TOL)
    # streaming MaxVol may pick other, equally good rows: compare the largest grades
    assert 0.5 < g1.max() / g2.max() < 2.0


def test_own_kmeans_and_silhouette_agree_with_scikit_learn():
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    from aceuq.activeset import kmeans, silhouette

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 4))
    x = np.concatenate([c + rng.normal(0, 0.5, (200, 4)) for c in centres])
    _, labels = kmeans(x, 3)
    ref = KMeans(3, n_init=4, random_state=0).fit(x)
    # same partition up to label names
    pairs = set(zip(np.asarray(labels).tolist(), ref.labels_.tolist()))
    assert len(pairs) == 3
    assert silhouette(x, np.asarray(labels)) == pytest.approx(silhouette_score(x, ref.labels_), rel=1e-10)


def test_auto_k_takes_the_fewest_clusters_near_the_best_silhouette():
    """The auto-k rule: silhouette scores (equal to scikit-learn's on the same k-means labels) of
    k = 2..8; the smallest k within SILHOUETTE_NEAR of the best wins, and no clustering (k = 1)
    where even the best is below SILHOUETTE_MIN. Blobs at x = 0, 8 and 24: k = 3 scores within
    0.02 of k = 2, so k = 2; featureless Gaussian noise: k = 1."""
    from sklearn.metrics import silhouette_score

    from aceuq.activeset import SILHOUETTE_MIN, SILHOUETTE_NEAR, choose_k, kmeans

    rng = np.random.default_rng(1)
    x = np.concatenate([np.array([c, 0.0, 0.0]) + rng.normal(size=(300, 3)) for c in (0, 8, 24)])
    k, scores = choose_k(x, 100)
    assert sorted(scores) == list(range(2, 9))
    for kk, sc in scores.items():
        _, labels = kmeans(x, kk, n_init=1)
        assert sc == pytest.approx(silhouette_score(x, labels), abs=1e-12), kk
    assert scores[2] > scores[3] >= scores[2] - SILHOUETTE_NEAR  # the case the rule decides
    assert k == 2
    noise = np.random.default_rng(2).normal(size=(2000, 8))
    k, scores = choose_k(noise, 100)
    assert max(scores.values()) < SILHOUETTE_MIN and k == 1


def test_select_follows_the_documented_d_optimal_rule_brute_force(cu, tmp_path):
    """select.py's rule, recomputed in plain numpy: each round, MaxVol (greedy swaps from the
    current active set) runs on the active set stacked over the rows taken before but left out of
    it, then over all rows of the candidates not yet taken; the candidate owning most rows swapped
    in is picked (ties: the larger max gamma vs the initial set); the active set is then updated
    with that candidate's rows (MaxVol on the active set stacked over the rows left out and them),
    and what MaxVol leaves out is kept; stop after n picks or when no row enters."""
    _, pot, train, _ = cu
    built = build_active_set(pot, train)
    aset = ActiveSet.load(built.save(str(tmp_path / "bf.asi")), pot)
    cands = selection_candidates()
    n = len(cands)
    sel = select_structures(pot, cands, aset, n)

    inv0 = load_npz(aset.path)["Cu"]
    A = np.linalg.inv(inv0)
    proj = pot.projections(cands)["Cu"]
    rows, owner = np.asarray(proj.values), np.asarray(proj.structure)
    g0 = np.abs(rows @ inv0).max(axis=1)
    max_gamma = np.array([g0[owner == s].max() for s in range(n)])
    np.testing.assert_allclose(sel.max_gamma, max_gamma, rtol=1e-8)
    chosen, brought, _, (A,) = reference_select([A], rows, owner, np.zeros(len(rows), dtype=int), max_gamma, n,
                                                TOL)
    # the case must discriminate: the first pick (most rows) is not the candidate of largest gamma
    assert chosen[0] != int(np.argmax(max_gamma))
    assert len(chosen) >= 3
    assert sel.indices == chosen
    assert sel.new_rows == brought
    # after its pick, every atom of the last chosen candidate interpolates in the updated active set
    g = np.abs(rows[owner == chosen[-1]] @ np.linalg.inv(A)).max()
    assert g <= 1 + TOL + 1e-9


def test_select_skips_a_near_duplicate_once_its_twin_is_taken(cu, tmp_path):
    """The active set is updated after each pick: a candidate that is its twin rattled by 1e-4 Å
    adds (almost) nothing once the twin is in, so of [slab, slab', cluster] only two are taken,
    with a note; against the initial set alone both twins look equally novel."""
    _, pot, train, _ = cu
    aset = ActiveSet.load(build_active_set(pot, train).save(str(tmp_path / "dup.asi")), pot)
    s = slab(["Cu"])
    twin = s.copy()
    twin.rattle(1e-4, seed=1)
    sel = select_structures(pot, [s, twin, cluster(["Cu"])], aset, 3)
    assert sel.max_gamma[0] > 10 and sel.max_gamma[1] > 10          # both twins extrapolate
    assert sel.max_gamma[1] == pytest.approx(sel.max_gamma[0], rel=1e-2)
    assert len(sel.indices) == 2 and 2 in sel.indices
    assert len({0, 1} & set(sel.indices)) == 1
    assert sel.notes and "2 of 3" in sel.notes[0]


def test_select_never_takes_an_exact_copy_of_a_structure_taken(cu, tmp_path):
    """Candidates twice over (each structure and its exact copy), as many picks as candidates: at
    most one of each pair is taken. The rows of a picked structure that later picks swap out of
    the active set stay in the pool; forgetting them, a copy looked new again (with this training
    set three pairs were taken twice)."""
    _, pot, _, _ = cu
    train = emt_training_set(["Cu"], n=20, seed=3)
    aset = ActiveSet.load(build_active_set(pot, train).save(str(tmp_path / "copies.asi")), pot)
    distinct = selection_candidates() + emt_training_set(["Cu"], n=8, seed=103)
    m = len(distinct)
    sel = select_structures(pot, distinct + [a.copy() for a in distinct], aset, 2 * m)
    assert len(sel.indices) >= 5
    assert not [i for i in range(m) if i in sel.indices and i + m in sel.indices], sel.indices


def test_too_small_cluster_is_merged_into_the_nearest_remaining_centre():
    """Blobs of 200, 200 and 20 points, min_size 50: k-means with k = 3 finds the three blobs,
    the blob of 20 is dropped and its points go to the nearest remaining centre, k-means reruns
    from the two centres left (so they are the means of their clusters), and every cluster holds
    >= min_size points; each point's label is its nearest centre."""
    rng = np.random.default_rng(4)
    a, b, small = np.array([0.0, 0.0, 0.0]), np.array([12.0, 0.0, 0.0]), np.array([30.0, 5.0, 0.0])
    x = np.concatenate([a + rng.normal(size=(200, 3)), b + rng.normal(size=(200, 3)),
                        small + rng.normal(size=(20, 3))])
    truth = np.repeat([0, 1, 2], [200, 200, 20])
    labels, centers, notes = cluster_with_minimum_size(x, 3, 50)
    assert len(centers) == 2 and np.bincount(labels).min() >= 50
    assert len(notes) == 1 and "(sizes 20)" in notes[0] and "k 3 -> 2" in notes[0], notes
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(labels, d2.argmin(axis=1))
    # blob a alone in one cluster; blob b and the small blob (nearer to b than to a) in the other
    la, lb = labels[truth == 0], labels[truth == 1]
    assert np.all(la == la[0]) and np.all(lb == lb[0]) and la[0] != lb[0]
    assert np.all(labels[truth == 2] == lb[0])
    for c in range(2):
        np.testing.assert_allclose(centers[c], x[labels == c].mean(axis=0), atol=1e-8)
    # nothing to merge: k stays
    labels3, centers3, notes3 = cluster_with_minimum_size(x, 3, 20)
    assert len(centers3) == 3 and not notes3
    assert sorted(np.bincount(labels3).tolist()) == [20, 200, 200]
    # two small blobs: both merged, told in one note
    x4 = np.concatenate([x, np.array([-30.0, 5.0, 0.0]) + rng.normal(size=(15, 3))])
    labels4, centers4, notes4 = cluster_with_minimum_size(x4, 4, 50)
    assert len(centers4) == 2 and np.bincount(labels4).min() >= 50
    assert len(notes4) == 1 and "2 cluster(s)" in notes4[0] and "k 4 -> 2" in notes4[0], notes4


def test_kmeans_lloyd_iterations_match_scikit_learn_from_the_same_start():
    """Overlapping blobs and a poor start: Lloyd's iterations must move the centres, to where
    scikit-learn's Lloyd KMeans from the same initial centres (n_init=1) ends."""
    from sklearn.cluster import KMeans

    from aceuq.activeset import kmeans

    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.5]])
    x = np.concatenate([c + rng.normal(0, 1.0, (300, 3)) for c in centres])
    init = x[[0, 1, 2]]  # three points of the first blob
    for tol in (1e-4, 1e-10):
        C, labels = kmeans(x, 3, init=init, tol=tol)
        ref = KMeans(3, init=init, n_init=1, tol=tol, algorithm="lloyd").fit(x)
        assert np.abs(C - init).max() > 0.3          # the start is far from the answer
        np.testing.assert_allclose(C, ref.cluster_centers_, atol=1e-6)
        np.testing.assert_array_equal(labels, ref.labels_)
        inertia = ((x - C[labels]) ** 2).sum()
        assert inertia == pytest.approx(ref.inertia_, rel=1e-8)


@pytest.fixture(scope="module")
def cu_fs2(tmp_path_factory):
    import potentials

    folder = str(tmp_path_factory.mktemp("aset_fs2"))
    path = potentials.make_potential(SPECS["Cu_fsss2"], folder)
    return path, aceuq.Potential(path), emt_training_set(["Cu"], n=20, seed=7), folder


def test_full_mode_active_set_for_two_densities_matches_pyace(cu_fs2):
    """Full mode (projections dE/dc over both densities, density-major): a global active set
    built here grades its training atoms <= 1 + tol, and pyace, loading the same .asi.nonlinear
    for the non-linear potential, gives the same gamma on other structures."""
    path, pot, train, folder = cu_fs2
    nfun = pot.n_functions("Cu")
    assert pot.n_projections("Cu", "full") == 2 * nfun
    built = build_active_set(pot, train, mode="full")
    assert built.elements["Cu"].matrices[0].rank > nfun   # the second density adds directions
    asi = built.save(os.path.join(folder, "Cu_fsss2.asi.nonlinear"))
    aset = ActiveSet.load(asi, pot)
    assert aset.mode == "full"
    assert max(g.max() for g, _ in aset.gamma(train)) <= 1 + TOL + 1e-9
    inv = load_npz(asi)["Cu"]
    active = np.linalg.pinv(inv)
    rtol = max(1e-8, 1e-15 * np.linalg.cond(active / np.abs(active).max(axis=0)))
    seen = 0
    for atoms in [rattled_bulk(["Cu"], seed=11), slab(["Cu"], periodic_z=True), cluster(["Cu"])]:
        ref = pyace_gamma(path, asi, atoms)
        np.testing.assert_allclose(aset.gamma(atoms)[0], ref, rtol=rtol, atol=1e-12)
        seen += ref.max() > 1.5
    assert seen >= 1


def test_full_mode_clusters_use_the_low_rank_columns_of_every_density_block(cu_fs2):
    """feature_columns in full mode: the rank <= 2 functions' columns of each density block
    (projections are density-major: block d holds columns d*nfun .. (d+1)*nfun - 1)."""
    _, pot, train, _ = cu_fs2
    ranks = pot.function_ranks("Cu")
    nfun = len(ranks)
    low = np.nonzero(ranks <= 2)[0]
    assert 2 <= len(low) < nfun
    expected = np.concatenate([low, low + nfun])
    np.testing.assert_array_equal(feature_columns(pot, "Cu", "full"), expected)
    np.testing.assert_array_equal(feature_columns(pot, "Cu", "linear"), low)
    built = build_active_set(pot, train, mode="full", clusters=2)
    s = built.elements["Cu"]
    assert s.k == 2
    off = np.ones(2 * nfun, dtype=bool)
    off[expected] = False
    assert np.all(s.components[:, off] == 0) and np.any(s.components[:, nfun + low] != 0)
    proj = pot.projections(train, mode="full")["Cu"].values
    feats = s.transform(proj)
    np.testing.assert_allclose(feats.var(axis=0), 1.0, rtol=1e-6)


def test_full_mode_of_one_density_is_refused_as_asi_and_kept_as_casi(make_pot, tmp_path, capsys):
    """With one density, full projections are as wide as linear ones, and readers tell an .asi's
    mode from its widths: a full-mode .asi would be graded as linear. It is refused (by the CLI
    before any work), and the same set written as .casi is read back in full mode."""
    import ase.io

    path = make_pot("Cu_chebexpcos")
    pot = aceuq.Potential(path)
    assert pot.ndensity("Cu") == 1
    train = emt_training_set(["Cu"], n=12, seed=3)
    built = build_active_set(pot, train, mode="full")
    with pytest.raises(aceuq.InputError, match="casi"):
        built.save(tmp_path / "full.asi")
    assert not (tmp_path / "full.asi").exists()
    casi = built.save(tmp_path / "full.casi")
    aset = ActiveSet.load(casi, pot)
    assert aset.mode == "full"
    assert max(g.max() for g, _ in aset.gamma(train)) <= 1 + TOL + 1e-9
    data = str(tmp_path / "train.extxyz")
    ase.io.write(data, [a.copy() for a in train])
    capsys.readouterr()
    assert cli(["activeset", path, data, "-o", str(tmp_path / "cli.asi"), "--full", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "casi" in err and "cli.asi" in err and not (tmp_path / "cli.asi").exists()
    # refused before the structures are even read
    assert cli(["activeset", path, str(tmp_path / "missing.extxyz"), "-o", str(tmp_path / "m.asi"), "--full"]) == 1
    err = capsys.readouterr().err
    assert "casi" in err and "missing.extxyz" not in err
    # so are clusters (also before the work: no summary printed)
    assert cli(["activeset", path, data, "-o", str(tmp_path / "k2.asi"), "--clusters", "2", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "--clusters 2 asks for clustered active sets, which are written as .casi" in err and out == ""


def test_gamma_of_structures_without_atoms(cu, tmp_path, capsys):
    """Structures of no atoms are graded (nothing to grade) and written, and the summary says
    0 atoms, rather than failing on the maximum of no grades after the output was written."""
    import ase.io
    from ase import Atoms

    path, pot, train, _ = cu
    asi = build_active_set(pot, train).save(tmp_path / "g.asi")
    data = str(tmp_path / "empty.extxyz")
    ase.io.write(data, [Atoms(cell=[5, 5, 5], pbc=True)] * 2)
    out = tmp_path / "graded.extxyz"
    capsys.readouterr()
    assert cli(["gamma", path, asi, data, "-o", str(out), "--no-progress"]) == 0
    assert "2 structures, 0 atoms" in capsys.readouterr().out
    assert [len(a) for a in ase.io.read(out, ":")] == [0, 0]


def test_perfect_crystals_cluster_by_crystal_not_by_rounding_noise(cu):
    """Projections that are constant up to rounding (functions vanishing by symmetry, every atom of
    a perfect crystal alike) are no clustering features: two perfect crystals make two clusters of
    one crystal each, and both crystals, translated or repeated, interpolate; one crystal has
    nothing to cluster."""
    from ase.build import bulk

    path, pot, _, _ = cu

    def crystal(a, rep=3, shift=0.0):
        x = bulk("Cu", "fcc", a=a, cubic=True).repeat((rep,) * 3)
        x.positions += shift
        x.wrap()
        return x

    built = build_active_set(pot, [crystal(3.61), crystal(3.70)], clusters=2)
    s = built.elements["Cu"]
    assert s.k == 2 and sorted(s.cluster_sizes) == [108, 108]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        aset = ActiveSet.load(built.save(os.path.join(tmp, "two.casi")), pot)
        for a in (3.61, 3.70):
            for rep, shift in ((3, 0.0), (4, 0.0), (3, 0.37)):
                g, c = aset.gamma(crystal(a, rep, shift))
                assert g.max() <= 1 + TOL and len(set(c.tolist())) == 1, (a, rep, shift, g.max())
    one = build_active_set(pot, [crystal(3.61)], clusters=2).elements["Cu"]
    assert one.k == 1 and "do not vary" in " ".join(one.notes)


def test_a_full_mode_set_is_refused_for_the_same_basis_with_other_coefficients(make_pot, tmp_path):
    """Full projections, dE/dc = F'(rho) B, change with the coefficients of a non-linear embedding:
    a full-mode .casi is refused for the same basis with other coefficients (its training atoms
    got γ up to 3e9 there), a linear one, which grades the B functions alone, is not; the ASE
    calculator refuses a loaded full-mode set for such a potential too."""
    from pyace import ACEBBasisSet

    from aceuq.calculator import ACECalculator

    path = make_pot("Cu_fs2")
    other = str(tmp_path / "Cu_fs2_other.yaml")
    bb = ACEBBasisSet(path)
    bb.basis_coeffs = list(1.3 * np.array(bb.basis_coeffs))
    bb.save(other)
    pot, pot2 = aceuq.Potential(path), aceuq.Potential(other)
    assert pot.fingerprint == pot2.fingerprint  # the same basis
    frames = emt_training_set(["Cu"], n=6, seed=2)
    full = build_active_set(pot, frames, clusters=1, mode="full").save(str(tmp_path / "full.casi"))
    linear = build_active_set(pot, frames, clusters=1, mode="linear").save(str(tmp_path / "linear.casi"))
    with pytest.raises(aceuq.InputError, match="built for another potential \\(full mode: basis and coefficients"):
        ActiveSet.load(full, pot2)
    ActiveSet.load(linear, pot2)
    assert ActiveSet.load(full, pot).gamma(frames[0])[0].max() <= 1 + 1e-3 + 1e-9
    with pytest.raises(ValueError, match="loaded for another potential"):
        ACECalculator(pot2, active_set=ActiveSet.load(full, pot))


def test_sigterm_while_building_removes_the_spilled_projections(make_pot, tmp_path, monkeypatch):
    """Under a memory limit the projections go to temporary files; SIGTERM (`timeout`, a batch
    system's limit) during the build ends it as an exception does, and they are removed."""
    import signal
    import tempfile

    import aceuq.activeset as activeset_module

    def terminated(*args, **kwargs):
        assert any(tmp_path.glob("aceuq-projections-*/*.npy"))  # spilled
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(activeset_module, "_build_all", terminated)
    pot = aceuq.Potential(make_pot("Cu_sbessel"))
    with pytest.raises(SystemExit):
        build_active_set(pot, emt_training_set(["Cu"], n=6, seed=2), memory_limit=1000)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_auto_k_with_no_k_to_try_says_so(make_pot):
    """Fewer than twice as many atoms as projections: no k above 1 can have its own active set,
    and the note says that none was tried (it showed an empty list of scores)."""
    pot = aceuq.Potential(make_pot("Cu_sbessel"))
    n_proj = pot.n_functions("Cu")
    frames = emt_training_set(["Cu"], n=(n_proj + 31) // 32, seed=2)
    assert n_proj <= 32 * len(frames) < 2 * n_proj
    built = build_active_set(pot, frames, clusters="auto")
    assert any(note.startswith("auto k: silhouette no k above 1 to try -> k=1") for note in built.elements["Cu"].notes)
