"""Malformed inputs of the ensemble, error-map and study files and of `aceuq ensemble`'s options:
one clear error naming the file (or option) and the key, never a traceback or a silent default."""
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("pyace")

import ase.io  # noqa: E402

from aceuq import metrics, study  # noqa: E402
from aceuq._core import InputError  # noqa: E402
from aceuq.cli.main import main  # noqa: E402
from aceuq.ensemble import Ensemble, fit_ensemble  # noqa: E402
from potentials import emt_training_set, labelled  # noqa: E402

BASIS_CONFIG = """\
potential:
  deltaSplineBins: 0.001
  embeddings: {ALL: {npot: FinnisSinclairShiftedScaled, fs_parameters: [1, 1], ndensity: 1}}
  bonds:
    ALL: {radbase: ChebExpCos, radparameters: [5.25], rcut: 5.0, dcut: 0.01, r_in: 1.0, delta_in: 0.5,
          core-repulsion: [0.0, 1.0]}
  functions:
    ALL: {nradmax_by_orders: [6, 3], lmax_by_orders: [0, 2]}
"""


@pytest.fixture(scope="module")
def frames():
    return emt_training_set(["Cu"], n=6, seed=3)


@pytest.fixture(scope="module")
def train_file(frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.extxyz"
    out = []
    for k, a in enumerate(frames):
        b = a.copy()
        b.info = {"energy": a.info["energy"], "config_type": "A" if k % 2 else "B"}
        b.arrays["forces"] = a.arrays["forces_ref"]
        out.append(b)
    ase.io.write(path, out, format="extxyz")
    return str(path)


@pytest.fixture(scope="module")
def ens_dir(frames, tmp_path_factory):
    """A small fitted, calibrated ensemble (2 members): its manifest is what the writer writes."""
    out = str(tmp_path_factory.mktemp("ens") / "cu")
    fit_ensemble(frames, 2, out, basis="small", seed=1, calibration_frames=frames[:2])
    return out


def one_error_line(err: str, verb: str) -> str:
    """The single 'aceuq VERB: error: ...' line of stderr (and no traceback)."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"aceuq {verb}: error: ")
    return lines[0]


# ---------------------------------------------------------------- 1. ensemble.json
def _bad_manifest(ens_dir, tmp_path, edit) -> str:
    folder = tmp_path / "bad_ens"
    shutil.copytree(ens_dir, folder)
    man = json.loads((folder / "ensemble.json").read_text())
    edit(man)
    (folder / "ensemble.json").write_text(json.dumps(man))
    return str(folder)


MANIFEST_CASES = {
    "calibration_energy_string": (lambda m: m["calibration"].update(energy="abc"), "'calibration' 'energy'"),
    "members_not_names": (lambda m: m.update(members=[1, 2]), "'members' entry 0"),
    "reference_energy_string": (lambda m: m.update(reference_energy="x"), "'reference_energy'"),
    "reference_energy_value": (lambda m: m["reference_energy"].update(Cu="abc"), "'reference_energy' of Cu"),
    "reference_energy_unknown_element": (lambda m: m["reference_energy"].update(cu=1.0), "'reference_energy'"),
    "calibration_without_forces": (lambda m: m["calibration"].pop("forces"), "no 'forces' factor"),
    "calibration_negative": (lambda m: m["calibration"].update(forces=-1.0), "'calibration' 'forces'"),
    "missing_member_file": (lambda m: m["members"].append("member_009.yaml"), "member 'member_009.yaml' not found"),
    "one_member": (lambda m: m.update(members=m["members"][:1]), "at least 2"),
    "members_not_a_list": (lambda m: m.update(members="member_000.yaml"), "'members' must be a list"),
    "elements_differ": (lambda m: m.update(elements=["Al"]), "'elements'"),
    "later_version": (lambda m: m.update(version=2), "version 2; this aceuq reads version 1"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_malformed_manifest_cli(case, ens_dir, train_file, tmp_path, capsys):
    edit, key = MANIFEST_CASES[case]
    folder = _bad_manifest(ens_dir, tmp_path, edit)
    rc = main(["evaluate", "--ensemble", folder, train_file, "-o", str(tmp_path / "out.extxyz"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "evaluate")
    assert rc != 0
    assert os.path.join(folder, "ensemble.json") in line and key in line
    assert not (tmp_path / "out.extxyz").exists()


def test_malformed_manifest_calculator(ens_dir, tmp_path):
    from aceuq import ACECalculator

    folder = _bad_manifest(ens_dir, tmp_path, lambda m: m["calibration"].update(energy="abc"))
    with pytest.raises(InputError, match=r"ensemble\.json.*'calibration' 'energy'"):
        ACECalculator(folder)


def test_evaluate_refuses_an_output_that_is_a_file_of_the_ensemble(ens_dir, train_file, tmp_path, capsys):
    """-o naming the manifest or a member of the --ensemble would replace it: refused, the
    ensemble left loadable."""
    folder = shutil.copytree(ens_dir, tmp_path / "ens")
    members = Ensemble.load(str(folder)).paths
    for target in (os.path.join(folder, "ensemble.json"), members[0]):
        rc = main(["evaluate", "--ensemble", str(folder), train_file, "-o", target, "--no-progress"])
        assert rc == 1 and "is the input" in one_error_line(capsys.readouterr().err, "evaluate")
    assert Ensemble.load(str(folder)).paths == members


def test_valid_manifests_still_load(ens_dir, tmp_path):
    """Optional parts: no calibration block (uncalibrated), no floor (older files), no reference energies."""
    def edit(m):
        del m["calibration"], m["reference_energy"], m["fit"]
    ens = Ensemble.load(_bad_manifest(ens_dir, tmp_path, edit))
    assert ens.calibration["forces"] == 1.0 and not ens.calibration["fitted"] and ens.reference_energy == {}
    ens = Ensemble.load(ens_dir)
    assert ens.calibration["fitted"]
    folder = tmp_path / "old"
    shutil.copytree(ens_dir, folder)
    man = json.loads((folder / "ensemble.json").read_text())
    del man["calibration"]["forces_floor"]
    (folder / "ensemble.json").write_text(json.dumps(man))
    assert Ensemble.load(str(folder)).calibration.get("forces_floor") is None


# ---------------------------------------------------------------- 2. error maps
ERROR_MAPS = {
    "top_level_list": ([1, 2], "not an aceuq error map"),
    "isotonic_empty": ({"log_score": [], "error": []}, "non-empty list"),
    "isotonic_unequal": ({"log_score": [0.0, 1.0], "error": [0.1]}, "differ in length"),
    "isotonic_strings": ({"log_score": ["a"], "error": [0.1]}, "'log_score'"),
    "isotonic_decreasing": ({"log_score": [1.0, 0.0], "error": [0.1, 0.2]}, "non-decreasing"),
    "no_method": ({"method": None}, "'method'"),
    "power_missing_b": ({"method": "power", "a": 0.1}, "power 'b'"),
    "fitted_for_not_mapping": ({"log_score": [0.0], "error": [0.1], "fitted_for": ["x"]}, "'fitted_for'"),
    "fitted_for_number": ({"log_score": [0.0], "error": [0.1], "fitted_for": {"assign": 3}}, "'fitted_for'"),
    "later_version": ({"log_score": [0.0], "error": [0.1], "version": 2}, "version 2; this aceuq reads version 1"),
}


def _write_map(path, content):
    if isinstance(content, dict):
        content = {"format": "aceuq-error-map", "version": 1, "method": "isotonic", "score": "gamma", **content}
    path.write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize("case", sorted(ERROR_MAPS))
def test_malformed_error_map(case, tmp_path):
    content, key = ERROR_MAPS[case]
    path = _write_map(tmp_path / "map.json", content)
    with pytest.raises(InputError, match="error map") as exc:
        metrics.ErrorMap.load(path)
    assert path in str(exc.value) and key in str(exc.value)


def test_error_map_roundtrip_and_missing(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.uniform(0.5, 5, 50)
    for method in ("isotonic", "power"):
        m = metrics.ErrorMap.fit(g, 0.1 * g + rng.uniform(0, 0.01, 50), method=method)
        m.save(tmp_path / f"{method}.json")
        assert np.allclose(metrics.ErrorMap.load(tmp_path / f"{method}.json")(g), m(g))
    with pytest.raises(InputError, match="no such file"):
        metrics.ErrorMap.load(tmp_path / "missing.json")


def test_malformed_error_map_cli(ens_dir, train_file, tmp_path, capsys):
    member = os.path.join(ens_dir, "member_000.yaml")
    asi = str(tmp_path / "a.asi")
    assert main(["activeset", member, train_file, "-o", asi, "--no-progress"]) == 0
    capsys.readouterr()
    for case in ("top_level_list", "isotonic_empty"):
        path = _write_map(tmp_path / f"{case}.json", ERROR_MAPS[case][0])
        rc = main(["gamma", member, asi, train_file, "-o", str(tmp_path / "g.extxyz"), "--error-map", path,
                   "--no-progress"])
        line = one_error_line(capsys.readouterr().err, "gamma")
        assert rc != 0 and path in line and ERROR_MAPS[case][1] in line


# ---------------------------------------------------------------- 3. study config
STUDY_CASES = {
    "seeds_int": ("seeds: 3", "'seeds'"),
    "seeds_negative": ("seeds: [0, -1]", "'seeds'"),
    "data_number": ("data: [5]", "'data'"),
    "unknown_basis": ("accuracy: {bases: [tiny]}", "accuracy 'bases': basis 'tiny'"),
    "missing_basis_file_in_novelty": ("novelty: [{name: n1, bases: [small, nofile.yaml]}]", "'nofile.yaml'"),
    "unknown_heterogeneity_basis": ("heterogeneity: {basis: tiny}", "heterogeneity 'basis'"),
    "members_one": ("ensemble: {members: 1}", "ensemble 'members'"),
    "unknown_ensemble_key": ("ensemble: {member: 3}", "unknown ensemble key"),
    "ensemble_not_mapping": ("ensemble: 5", "'ensemble' must be a mapping"),
    "fractions": ("test_fraction: 0.7\ncalibration_fraction: 0.4", "'calibration_fraction'"),
    "cutoff": ("cutoff: -1", "'cutoff'"),
    "regroup_not_rules": ("regroup: [5]", "regroup rule"),
    "elements": ("elements: [Xx]", "'elements'"),
}


@pytest.mark.parametrize("case", sorted(STUDY_CASES))
def test_bad_study_config(case, tmp_path):
    text, key = STUDY_CASES[case]
    cfg = tmp_path / "study.yaml"
    cfg.write_text(("" if text.startswith("data:") else "data: train.extxyz\n") + text + "\n")
    with pytest.raises(InputError, match="study config") as exc:
        study.load_config(str(cfg))
    assert str(cfg) in str(exc.value) and key in str(exc.value)


def test_bad_study_basis_fails_before_fitting(train_file, tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"data: {train_file}\nseeds: [0]\naccuracy: {{bases: [small, tiny]}}\n")
    rc = main(["study", str(cfg), "-o", str(tmp_path / "out"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err, "study")
    assert rc != 0 and str(cfg) in line and "'tiny'" in line
    assert not (tmp_path / "out").exists()  # nothing fitted


def test_study_config_files_relative_and_yaml_numbers(tmp_path):
    (tmp_path / "basis.yaml").write_text(BASIS_CONFIG)
    cfg = tmp_path / "study.yaml"
    cfg.write_text("data: train.extxyz\nseeds: [0]\nensemble: {alpha: 1e-5}\naccuracy: {bases: [small, basis.yaml]}\n"
                   "novelty: {train_groups: A, novel_groups: B}\n")
    out = study.load_config(str(cfg))
    assert out["accuracy"]["bases"] == ["small", str(tmp_path / "basis.yaml")]
    assert out["ensemble"]["alpha"] == 1e-5  # PyYAML reads 1e-5 as a string
    assert out["novelty"][0]["train_groups"] == ["A"] and out["novelty"][0]["novel_groups"] == ["B"]
    assert study.load_config(out) == out  # run_study loads a loaded config again


# ---------------------------------------------------------------- 4. cutoff of a basis config
def test_cutoff_with_basis_config_is_rejected(frames, train_file, tmp_path, capsys):
    basis = tmp_path / "basis.yaml"
    basis.write_text(BASIS_CONFIG)
    with pytest.raises(SystemExit) as exc:
        main(["ensemble", train_file, "-n", "2", "-o", str(tmp_path / "e"), "--basis", str(basis),
              "--cutoff", "4.5", "--no-progress"])
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err, "ensemble")
    assert "--cutoff" in line and str(basis) in line and "rcut" in line
    with pytest.raises(InputError, match=f"basis config '{basis}'.*rcut"):
        fit_ensemble(frames, 2, str(tmp_path / "e2"), basis=str(basis), cutoff=4.5)


def test_recorded_cutoff_is_the_members(train_file, tmp_path, capsys):
    """Without --cutoff, a basis config's rcut (5.0) is printed and recorded, not a data-derived value."""
    from aceuq.potential import Potential

    basis = tmp_path / "basis.yaml"
    basis.write_text(BASIS_CONFIG)
    out = tmp_path / "e"
    assert main(["ensemble", train_file, "-n", "2", "-o", str(out), "--basis", str(basis), "--no-progress"]) == 0
    man = json.loads((out / "ensemble.json").read_text())
    assert man["fit"]["cutoff"] == pytest.approx(5.0)
    assert Potential(str(out / man["members"][0])).cutoff == pytest.approx(5.0)
    assert "cutoff 5.0 Å" in capsys.readouterr().out
    out2 = tmp_path / "p"
    assert main(["ensemble", train_file, "-n", "2", "-o", str(out2), "--cutoff", "4.6", "--no-progress"]) == 0
    assert json.loads((out2 / "ensemble.json").read_text())["fit"]["cutoff"] == pytest.approx(4.6)


# ---------------------------------------------------------------- 5. numeric options of `aceuq ensemble`
@pytest.mark.parametrize("option", [["--holdout", "-0.1"], ["--holdout", "1"], ["-n", "1"], ["-n", "x"],
                                    ["--energy-weight", "0"], ["--alpha", "-1"], ["--subsample", "1.5"],
                                    ["--cutoff", "0"], ["--cutoff", "nan"], ["--workers", "0"], ["--seed", "-2"]])
def test_ensemble_option_ranges(option, train_file, tmp_path, capsys):
    args = ["ensemble", train_file, "-o", str(tmp_path / "e"), "--no-progress"]
    args += option if option[0] == "-n" else ["-n", "2"] + option
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    line = one_error_line(capsys.readouterr().err, "ensemble")
    assert f"argument {'-n/--members' if option[0] == '-n' else option[0]}:" in line
    assert not (tmp_path / "e").exists()


def test_fit_ensemble_option_ranges(frames, tmp_path):
    for kw, match in [({"energy_weight": 0.0}, "energy weight"), ({"subsample": 0.0}, "subsample"),
                      ({"alpha": -1.0}, "alpha"), ({"cutoff": -1.0}, "cutoff"), ({"seed": -1}, "seed")]:
        with pytest.raises(InputError, match=match):
            fit_ensemble(frames, 2, str(tmp_path / "e"), **kw)


def test_study_workers_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out"), "--workers", "0"])
    assert exc.value.code == 2
    assert "argument --workers: must be at least 1" in one_error_line(capsys.readouterr().err, "study")


# ---------------------------------------------------------------- 6. explore configs
EXPLORE_BASE = """\
potential: pot.yaml
active_set: pot.casi
structures: [start.extxyz]
temperatures: [300, 800]
steps: 100
every: 20
lower: 3.0
upper: 25.0
"""


@pytest.mark.parametrize("old, new, message", [
    ("temperatures: [300, 800]", "temperatures: [0, 800]", "temperatures must be positive"),
    ("temperatures: [300, 800]", "temperatures: [800, 0.0]", "temperatures must be positive"),
    ("upper: 25.0", "upper: 3.0", "'upper' (3.0) must be above 'lower' (3.0)"),
    ("every: 20", "every: 0", "'every' must be > 0"),
    ("every: 20", "every: -5", "'every' must be > 0"),
    ("every: 20", "every: 20\nselect_rule: fastest", "'select_rule' must be greedy or one-shot, got 'fastest'"),
])
def test_bad_explore_config(old, new, message, tmp_path):
    """explore's config checks (explore.py: temperatures positive, upper above lower, grading every
    N > 0 steps): one InputError naming the file, never a later ZeroDivisionError or a run."""
    from aceuq import explore

    for name in ("pot.yaml", "pot.casi", "start.extxyz"):
        (tmp_path / name).write_text("")
    good = tmp_path / "good.yaml"
    good.write_text(EXPLORE_BASE)
    cfg = explore.load_config(str(good))
    assert cfg["every"] == 20 and cfg["temperatures"] == [300.0, 800.0]
    path = tmp_path / "bad.yaml"
    assert old in EXPLORE_BASE
    path.write_text(EXPLORE_BASE.replace(old, new))
    with pytest.raises(InputError) as err:
        cfg = explore.load_config(str(path))
        # what a run does next with the config (a bad 'every' divided by zero here)
        explore.lammps_commands(cfg, "data", ["Cu"], [True] * 3, "out", explore.plan(cfg, 1)[0])
    assert str(path) in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------- 7. too few structures to hold out
def test_ensemble_with_fewer_than_10_structures_is_not_calibrated(tmp_path, capsys):
    """`aceuq ensemble` holds out --holdout of the structures to calibrate σ only from 10
    structures on; with 9 it fits on all of them and says σ is not calibrated."""
    frames = labelled(emt_training_set(["Cu"], n=10, seed=4))
    nine, ten = tmp_path / "nine.extxyz", tmp_path / "ten.extxyz"
    ase.io.write(nine, frames[:9], format="extxyz")
    ase.io.write(ten, frames, format="extxyz")
    out = tmp_path / "e9"
    assert main(["ensemble", str(nine), "-n", "2", "-o", str(out), "--no-progress", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "aceuq ensemble: only 9 structures: σ is not calibrated (use --calibration-data)" in err
    man = json.loads((out / "ensemble.json").read_text())
    assert man["fit"]["n_structures"] == 9 and not man["calibration"].get("fitted")
    out10 = tmp_path / "e10"
    assert main(["ensemble", str(ten), "-n", "2", "-o", str(out10), "--no-progress", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "not calibrated" not in err
    assert "σ is calibrated on 1 structures only: its factors are uncertain" in err
    man = json.loads((out10 / "ensemble.json").read_text())
    assert man["fit"]["n_structures"] == 9 and man["calibration"]["n_structures"] == 1
    # a --holdout that rounds to all of them leaves nothing to fit: one error naming it
    assert main(["ensemble", str(ten), "-n", "2", "-o", str(tmp_path / "e0"), "--holdout", "0.95",
                 "--no-progress", "--workers", "1"]) == 1
    assert "--holdout 0.95 of 10 structures holds out all of them" in one_error_line(capsys.readouterr().err,
                                                                                       "ensemble")


# ---------------------------------------------------------------- 8. configs that are not text, and bad values
def test_config_that_is_binary_or_a_folder(tmp_path, capsys):
    """A binary file or a folder given as a YAML config: one error naming it, in every verb that
    reads one (explore, study, ensemble's --basis), not a UnicodeDecodeError or IsADirectoryError."""
    from aceuq.cli.main import main

    binary = tmp_path / "Cu.casi"
    binary.write_bytes(bytes(range(256)) * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    for cfg, why in ((binary, "not a text file"), (folder, "cannot be read")):
        for argv in (["explore", str(cfg), "-o", str(tmp_path / "x")], ["study", str(cfg), "-o", str(tmp_path / "s")]):
            capsys.readouterr()
            assert main(argv) == 1, argv
            err = capsys.readouterr().err
            assert f"'{cfg}': {why}" in err and "Traceback" not in err, err


def test_explore_elements_must_be_symbols(tmp_path):
    """`elements: [1, 2]` (atom types, not symbols) is refused naming the config, not an
    AttributeError from inside the parser."""
    from aceuq import explore

    for name in ("pot.yaml", "pot.casi", "start.extxyz"):
        (tmp_path / name).write_text("")
    for value in ("[1, 2]", "5"):
        path = tmp_path / "bad.yaml"
        path.write_text(EXPLORE_BASE + f"elements: {value}\n")
        with pytest.raises(InputError, match="not element symbols") as err:
            explore.load_config(str(path))
        assert str(path) in str(err.value)


def test_calibration_data_is_checked_before_the_fit(frames, tmp_path):
    """Calibration structures with an element the members are not fitted for, or without forces,
    are refused before the fit (not after it, naming a deleted staging file)."""
    from ase.build import bulk

    al = bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 1, 1))
    al.info["energy"] = -1.0
    al.arrays["forces"] = np.zeros((len(al), 3))
    with pytest.raises(InputError, match="a calibration structure has Al, which the members are not fitted for"):
        fit_ensemble(frames, 2, str(tmp_path / "e1"), basis="small", calibration_frames=[frames[0], al])
    bare = frames[0].copy()
    bare.arrays.pop("forces_ref", None)
    bare.arrays.pop("forces", None)
    bare.calc = None
    with pytest.raises(InputError, match="structure 0: a calibration structure has no forces"):
        fit_ensemble(frames, 2, str(tmp_path / "e2"), basis="small", calibration_frames=[bare])
    no_energy = frames[0].copy()
    no_energy.info.pop("energy", None)
    no_energy.calc = None
    with pytest.raises(InputError, match="structure 0: a calibration structure has no energy"):
        fit_ensemble(frames, 2, str(tmp_path / "e3"), basis="small", calibration_frames=[no_energy])
    assert not any((tmp_path / e).exists() for e in ("e1", "e2", "e3"))
    # a generator of calibration frames is checked and still calibrates, as the list does
    listed = fit_ensemble(frames, 2, str(tmp_path / "l"), basis="small", seed=1, calibration_frames=frames[:3])
    generated = fit_ensemble(frames, 2, str(tmp_path / "g"), basis="small", seed=1,
                             calibration_frames=(a for a in frames[:3]))
    assert generated.calibration["fitted"] and generated.calibration == listed.calibration
