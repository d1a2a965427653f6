import json
import os
import re

import numpy as np
import pytest
import yaml

pytest.importorskip("pyace")

import ase.io  # noqa: E402
from ase.build import bulk, fcc111  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from aceuq import study  # noqa: E402
from aceuq._core import InputError  # noqa: E402


def _label(atoms, group):
    atoms.calc = EMT()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    atoms.info["config_type"] = group
    return atoms


def emt_groups(n_per_group=8, seed=0):
    """Small EMT Cu dataset: bulk, surface, vacancy, liquid-like (heavily rattled) groups."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_per_group):
        a = bulk("Cu", "fcc", a=3.61 * (1 + rng.normal(0, 0.01)), cubic=True).repeat((2, 2, 2))
        a.rattle(0.04, seed=int(rng.integers(1 << 30)))
        frames.append(_label(a, "bulk"))
        s = fcc111("Cu", size=(2, 2, 4), vacuum=5.0, a=3.61)
        del s.info["adsorbate_info"]  # ase.build's dict, which extxyz cannot hold (ASE warns when writing it)
        s.rattle(0.04, seed=int(rng.integers(1 << 30)))
        frames.append(_label(s, "surface"))
        v = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        del v[int(rng.integers(len(v)))]
        v.rattle(0.04, seed=int(rng.integers(1 << 30)))
        frames.append(_label(v, "vacancy"))
        liq = bulk("Cu", "fcc", a=3.70, cubic=True).repeat((2, 2, 2))
        liq.rattle(0.25, seed=int(rng.integers(1 << 30)))
        frames.append(_label(liq, "liquid"))
    return frames


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "cu.extxyz"
    ase.io.write(path, emt_groups(), format="extxyz")
    return str(path)


def test_stratified_split_covers_every_group():
    labels = np.array(["a"] * 10 + ["b"] * 4 + ["c"] * 2, dtype=object)
    s = study.stratified_split(labels, 0.25, 0.2, seed=1)
    all_idx = np.concatenate(list(s.values()))
    assert sorted(all_idx) == list(range(16))
    assert set(labels[s["test"]]) == {"a", "b"}  # a 2-frame group stays in training
    assert np.sum(labels[s["test"]] == "a") == 2 and np.sum(labels[s["calibration"]] == "a") == 2
    again = study.stratified_split(labels, 0.25, 0.2, seed=1)
    assert all(np.array_equal(s[k], again[k]) for k in s)


def test_regroup_by_coordination():
    dense = bulk("Cu", "fcc", a=3.61, cubic=True)
    sparse = bulk("Cu", "fcc", a=4.5, cubic=True)
    for a in (dense, sparse):
        a.info["config_type"] = "x"
    cfg = study.load_config({"data": ["unused"], "regroup": [
        {"group": "x", "by": "coordination", "cutoff": 3.0, "threshold": 6, "above": "dense", "below": "sparse"}]})
    assert list(study.group_labels([dense, sparse], cfg)) == ["dense", "sparse"]


def test_bad_configs(tmp_path):
    with pytest.raises(InputError, match="needs 'data'"):
        study.load_config({})
    with pytest.raises(InputError, match="unknown key"):
        study.load_config({"data": "x", "bogus": 1})
    p = tmp_path / "c.yaml"
    p.write_text("data: [a.extxyz]\n  bad: : indent\n")
    with pytest.raises(InputError, match="not valid YAML"):
        study.load_config(str(p))


def test_bad_gamma_configs():
    with pytest.raises(InputError, match="gamma clusters"):
        study.load_config({"data": "x", "gamma": {"clusters": [1]}})
    with pytest.raises(InputError, match="gamma assign"):
        study.load_config({"data": "x", "gamma": {"assign": "max"}})
    with pytest.raises(InputError, match="novelty case"):
        study.load_config({"data": "x", "novelty": [{"train": ["a"]}]})
    cfg = study.load_config({"data": "x", "gamma": False})
    assert study.gamma_method_names(cfg["gamma"]) == []
    cfg = study.load_config({"data": "x", "gamma": {"clusters": [2, "auto"], "assign": "min"}})
    assert study.gamma_method_names(cfg["gamma"]) == ["gamma_global", "gamma_local_k2_min", "gamma_local_kauto_min"]


GAMMA_METHODS = ("gamma_global", "gamma_local_nearest", "gamma_local_min")


def test_study_end_to_end(emt_data, tmp_path, capsys):
    from aceuq.cli.main import main

    cfg = tmp_path / "study.yaml"
    cfg.write_text(
        f"name: EMT Cu\ndata: [{emt_data}]\nseeds: [0, 1, 2]\n"
        "ensemble: {members: 4, bootstrap: true}\n"
        "accuracy: {bases: [small, medium]}\n"
        "heterogeneity: {homogeneous_group: bulk}\n"
        "novelty:\n"
        "  - {train_groups: [bulk], novel_groups: [surface, vacancy, liquid]}\n"
        "  - {name: hetero-liquid, train_groups: rest, novel_groups: [liquid], bases: [small, medium]}\n"
    )
    (tmp_path / "afile").write_text("")
    assert main(["study", str(cfg), "-o", str(tmp_path / "afile")]) == 1  # before any work
    assert "afile': exists and is not a folder" in capsys.readouterr().err
    out = tmp_path / "out"
    # progress on, stderr not a terminal (captured): no bars in logs and pipes
    assert main(["study", str(cfg), "-o", str(out), "--keep-models"]) == 0
    assert "fit/s" not in capsys.readouterr().err
    m = json.load(open(out / "metrics.json"))
    for exp in ("accuracy/small", "accuracy/medium", "homogeneous", "heterogeneous", "novelty",
                "novelty/surface", "novelty/liquid", "hetero-liquid/small", "hetero-liquid/medium"):
        for method in ("ensemble",) + GAMMA_METHODS:
            assert set(study.METRIC_KEYS) <= set(m[exp][method]), (exp, method)
            assert m[exp][method]["n_splits"] == 3
    acc = m["accuracy/small"]["ensemble"]
    assert acc["spearman"] > 0.2 and acc["roc_auc"] is None
    # calibrated ensemble σ: held-out RMS error/σ near 1; the factor says how overconfident the raw σ was
    assert 0.5 < m["heterogeneous"]["ensemble"]["z_rms"] < 2.0
    assert m["heterogeneous"]["ensemble"]["calibration_factor"] > 0
    for method in GAMMA_METHODS:
        g = m["heterogeneous"][method]
        # every γ method got an error map (fitted on the calibration frames), hence a σ and an area
        assert g["miscalibration_area"] is not None and g["map_spearman"] is not None
        assert np.isfinite(g["spearman"])
    assert m["novelty"]["gamma_local_nearest"]["k_effective"] >= 1
    # the paired false-alarm counts behind claim 2's verdict, summed over the splits
    for key in ("count_alarms_gamma_only", "count_alarms_ensemble_only"):
        count = m["homogeneous"]["gamma_global"][key]
        assert count is not None and count == int(count) >= 0
    assert m["novelty"]["gamma_global"].get("k_effective") is None
    # a bulk-only ensemble must flag liquid-like and surface structures, and so must γ
    assert m["novelty/liquid"]["ensemble"]["roc_auc"] > 0.9
    assert m["novelty"]["ensemble"]["roc_auc"] > 0.7
    for method in GAMMA_METHODS:
        assert m["novelty/liquid"][method]["roc_auc"] > 0.9, method
        assert m["novelty/surface"][method]["roc_auc"] > 0.9, method
    # heterogeneous training (bulk, surface, vacancy): liquid-like frames still detected by local γ
    for basis in ("small", "medium"):
        assert m[f"hetero-liquid/{basis}"]["gamma_local_nearest"]["roc_auc"] > 0.9
    report = (out / "report.md").read_text()
    assert "## (a) Accuracy sweep" in report and "novelty/surface" in report
    assert "## The paper's claims on this data" in report and "   - ensemble σ: **" in report
    assert "gamma_local_nearest" in report and "ROC-AUC over basis sizes, 'hetero-liquid'" in report
    assert "Plots show the first split (seed 0)." in report  # beside tables of means over 3 splits
    for png in ("parity_small.png", "reliability.png", "calibration.png", "roc.png", "roc_hetero-liquid.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
        assert f"({png})" in report
    # the fitted γ→error maps and the models they belong to, usable by `aceuq gamma --error-map`
    model = out / "models" / "small-all-seed0"
    emap = out / "error_maps" / "small-all-seed0" / "gamma_local_nearest.json"
    assert emap.exists() and (model / "gamma_local.casi").exists()
    graded = tmp_path / "graded.extxyz"
    capsys.readouterr()
    assert main(["gamma", str(model / "member_000.yaml"), str(model / "gamma_local.casi"), emt_data,
                 "-o", str(graded), "--error-map", str(emap), "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err  # the map was fitted for this active set
    # maps record what they were fitted for: another assignment or active set is flagged
    other = tmp_path / "other.extxyz"
    assert main(["gamma", str(model / "member_000.yaml"), str(model / "gamma_local.casi"), emt_data,
                 "-o", str(other), "--error-map", str(emap.parent / "gamma_local_min.json"), "--no-progress"]) == 0
    assert "fitted for 'assign min'" in capsys.readouterr().err
    assert main(["gamma", str(model / "member_000.yaml"), str(model / "gamma_global.asi"), emt_data,
                 "-o", str(other), "--error-map", str(emap), "--no-progress"]) == 0
    assert "fitted for another active set" in capsys.readouterr().err
    frames = ase.io.read(graded, ":")
    est = np.concatenate([a.arrays["force_error_estimate"] for a in frames])
    assert np.all(est >= 0) and np.all(np.isfinite(est)) and est.max() > 0
    # the estimate is the saved map applied to each atom's γ (γ recomputed here from the model and
    # its active set; the extxyz text keeps ~8 digits)
    from aceuq import Potential
    from aceuq.activeset import ActiveSet
    from aceuq.metrics import ErrorMap

    emap_d = json.loads(emap.read_text())
    assert emap_d["method"] == "isotonic" and np.all(np.diff(emap_d["error"]) >= 0)
    error_map = ErrorMap.load(str(emap))
    aset = ActiveSet.load(str(model / "gamma_local.casi"), Potential(str(model / "member_000.yaml")))
    assert aset.assign == "nearest"
    source = ase.io.read(emt_data, ":")
    assert len(source) == len(frames)
    for src, a in zip(source, frames):
        g, _ = aset.gamma(src)
        np.testing.assert_allclose(a.arrays["gamma"], g, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a.arrays["force_error_estimate"], error_map(g), rtol=1e-6, atol=1e-7)
        assert a.info["max_force_error_estimate"] == pytest.approx(error_map(g).max(), rel=1e-6, abs=1e-7)
    assert len(np.unique(np.round(est, 6))) > 2    # the map is not flat over these atoms
    liquid = [a for a in frames if a.info["config_type"] == "liquid"]
    bulk_ = [a for a in frames if a.info["config_type"] == "bulk"]
    # liquid-like atoms are predicted larger errors than bulk ones
    assert np.mean([a.info["max_force_error_estimate"] for a in liquid]) > \
        np.mean([a.info["max_force_error_estimate"] for a in bulk_])
    # a run into the same folder that fails part-way (here on its data) leaves this run's error
    # maps, beside the report they belong to, and no staging folder
    maps = {p: p.read_bytes() for p in (out / "error_maps").rglob("*.json")}
    bad = tmp_path / "bad.extxyz"
    bad.write_text("not a structure\n")
    cfg.write_text(cfg.read_text().replace(f"data: [{emt_data}]", f"data: [{bad}]"))
    assert main(["study", str(cfg), "-o", str(out), "--no-progress"]) == 1
    assert maps and {p: p.read_bytes() for p in (out / "error_maps").rglob("*.json")} == maps
    assert not [p for p in os.listdir(out) if p.startswith(".aceuq-")]


def test_study_in_full_mode_keeps_its_global_set_as_casi(emt_data, tmp_path):
    """Full-mode γ: the study's linear members have one density, whose full-mode active set an
    .asi cannot hold (it would be read back as linear); the global set is kept as a .casi."""
    from aceuq import Potential
    from aceuq.activeset import ActiveSet
    from aceuq.cli.main import main

    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"data: [{emt_data}]\nseeds: [0]\nensemble: {{members: 2}}\naccuracy: {{bases: [small]}}\n"
                   "gamma: {global: true, clusters: [], mode: full}\n")
    out = tmp_path / "out"
    assert main(["study", str(cfg), "-o", str(out), "--keep-models", "--no-progress"]) == 0
    model = out / "models" / "small-all-seed0"
    assert (model / "gamma_global.casi").exists() and not (model / "gamma_global.asi").exists()
    assert ActiveSet.load(str(model / "gamma_global.casi"), Potential(str(model / "member_000.yaml"))).mode == "full"
    m = json.load(open(out / "metrics.json"))
    assert m["accuracy/small"]["gamma_global"]["n_splits"] == 1
    # a run into the same folder without --keep-models leaves the kept models of the first, and
    # no temporary models of its own
    kept = sorted(p.relative_to(out) for p in (out / "models").rglob("*"))
    # plots of an earlier run's other bases and cases go; this run's and other files stay
    for name in ("parity_large.png", "roc_old-case.png", "roc.png", "notes.png"):
        (out / name).write_bytes(b"earlier")
    assert main(["study", str(cfg), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.relative_to(out) for p in (out / "models").rglob("*")) == kept
    assert not list(out.glob(".aceuq-models-*"))
    assert sorted(p.name for p in out.glob("*.png")) == ["calibration.png", "notes.png", "parity_small.png",
                                                         "reliability.png", "roc.png"]
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_gamma_error_map_bad_file(emt_data, tmp_path):
    from aceuq.cli.gamma import _load_error_map

    p = tmp_path / "m.json"
    p.write_text("{}")
    with pytest.raises(InputError, match="not an aceuq error map"):
        _load_error_map(str(p))
    with pytest.raises(InputError, match="no such file"):
        _load_error_map(str(tmp_path / "missing.json"))


SI_CONFIG = os.path.join(os.path.dirname(__file__), "..", "examples", "paper", "si.yaml")


def test_study_on_mlearn_si(data_dir, tmp_path):
    """The shipped Si study config, cut to one split and the 30-function basis, end to end on the
    DFT data; in the hard case (all groups but Surface trained, Surface novel) local γ must detect
    the surfaces and beat global γ, and the ensemble must be calibrated on held-out frames."""
    from aceuq.cli.main import main

    cfg = yaml.safe_load(open(SI_CONFIG))
    assert [os.path.basename(p) for p in cfg["data"]] == ["train.extxyz", "test.extxyz"]
    cfg["data"] = [os.path.join(data_dir, "mlearn-Si", name) for name in ("train.extxyz", "test.extxyz")]
    cfg["seeds"] = [0]
    cfg["ensemble"]["members"] = 3
    cfg["accuracy"]["bases"] = ["small"]
    cfg["gamma"]["clusters"] = ["auto"]
    for case in cfg["novelty"]:
        if "bases" in case:
            case["bases"] = ["small"]
    path = tmp_path / "si.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["study", str(path), "-o", str(out), "--no-progress"]) == 0
    m = json.load(open(out / "metrics.json"))
    hard = m["surface"]            # one basis per case: keyed by the case's name alone
    local, glob = hard["gamma_local_nearest"]["roc_auc"], hard["gamma_global"]["roc_auc"]
    assert local >= 0.95 and local > glob, (local, glob)
    assert hard["gamma_local_nearest"]["k_effective"] == 2
    for method in ("ensemble", "gamma_global", "gamma_local_nearest"):
        assert m["liquid"][method]["roc_auc"] >= 0.95, method
    assert 0.75 <= m["heterogeneous"]["ensemble"]["z_rms"] <= 1.25
    report = (out / "report.md").read_text()
    assert "Novelty detection 'surface'" in report
    # the report's verdicts on the paper's claims: one basis, so (1) is not measured; surfaces are
    # where global γ leaves room and local γ must beat it; the Elastic-only ensemble under-predicts
    assert "1. **More accurate models → better correlation and novelty detection**: not measured" in report
    assert "3. **Local D-optimality restores novelty detection on heterogeneous data: holds** (local above " \
           "global γ in 1 of 1" in report
    assert "ensemble σ: under-predicts beyond its training data **yes**, calibrated within it **yes**" in report


def test_claims_verdicts_follow_their_rules():
    # a hand-made summary: (1) ensemble improves on both counts, global γ only in Spearman, local γ
    # in neither; (2) ensemble under-predicts beyond Elastic; (3) local beats global where global
    # misses, and the saturated case is left out
    cases = [{"name": "hard", "train": ["A", "B"], "novel": ["S"], "bases": ["small", "large"]},
             {"name": "easy", "train": ["A", "B"], "novel": ["L"], "bases": ["small"]}]
    r = dict
    summary = {
        "accuracy/small": {"ensemble": r(force_rmse=0.3, n_functions=30, spearman=0.5),
                           "gamma_global": r(spearman=-0.3), "gamma_local_nearest": r(spearman=0.2)},
        "accuracy/large": {"ensemble": r(force_rmse=0.1, n_functions=300, spearman=0.8),
                           "gamma_global": r(spearman=0.1), "gamma_local_nearest": r(spearman=0.1)},
        "hard/small": {"ensemble": r(n_functions=30, roc_auc=0.7), "gamma_global": r(roc_auc=0.9),
                       "gamma_local_nearest": r(roc_auc=0.97)},
        "hard/large": {"ensemble": r(n_functions=300, roc_auc=0.8), "gamma_global": r(roc_auc=0.85),
                       "gamma_local_nearest": r(roc_auc=0.96)},
        "easy": {"ensemble": r(roc_auc=1.0), "gamma_global": r(roc_auc=1.0), "gamma_local_nearest": r(roc_auc=0.99)},
        "homogeneous": {"ensemble": r(z_rms=4.0, roc_auc=1.0, false_alarm_rate=0.05, calibration_factor=2.0),
                        "gamma_global": r(z_rms=1.1, roc_auc=1.0, false_alarm_rate=0.10,
                                          count_alarms_gamma_only=5.0, count_alarms_ensemble_only=2.0),
                        "gamma_local_nearest": r(z_rms=1.0, roc_auc=1.0)},
        "heterogeneous": {"ensemble": r(z_rms=1.0, calibration_factor=1.5), "gamma_global": r(z_rms=1.5),
                          "gamma_local_nearest": r(z_rms=1.0)},
    }
    text = "\n".join(study.claims_markdown(summary, cases, "A"))
    assert "ensemble σ: **holds** (Spearman 0.50 → 0.80; 'hard' ROC-AUC 0.700 → 0.800)" in text
    assert "global γ: **partly** (Spearman -0.30 → 0.10; 'hard' ROC-AUC 0.900 → 0.850)" in text
    assert "local γ (nearest): **does not hold**" in text
    assert "ensemble σ: under-predicts beyond its training data **yes**, calibrated within it **yes**, " \
           "misses novelty after heterogeneous training **yes**" in text
    assert "global γ: under-predicts beyond its training data **no**, calibrated within it **no**" in text
    # 5 structures flagged by global γ only against 2 by the ensemble only is counting noise; 12 against 1 is not
    assert "D-optimality more conservative: **not resolved** (false alarms at the 95 % threshold of the " \
           "calibration frames, A-only model: global γ 10%, ensemble 5%; in-distribution test structures over " \
           "all splits flagged by global γ only 5, by the ensemble only 2; exact McNemar test p = 0.23)" in text
    hom = summary["homogeneous"]["gamma_global"]
    hom.update(count_alarms_gamma_only=12.0, count_alarms_ensemble_only=1.0)
    assert "D-optimality more conservative: **yes** (" in "\n".join(study.claims_markdown(summary, cases, "A"))
    hom.update(count_alarms_gamma_only=1.0, count_alarms_ensemble_only=12.0)
    assert "D-optimality more conservative: **no** (" in "\n".join(study.claims_markdown(summary, cases, "A"))
    hom.update(count_alarms_gamma_only=5.0, count_alarms_ensemble_only=2.0)
    assert "restores novelty detection on heterogeneous data: holds** (local above global γ in 2 of 2" in text
    assert "left out, global γ ≥ 0.99 already: easy" in text
    summary["hard/large"]["gamma_local_nearest"]["roc_auc"] = 0.8
    assert "heterogeneous data: partly** (local above global γ in 1 of 2" in \
        "\n".join(study.claims_markdown(summary, cases, "A"))
    # no novelty case trained on several groups: claim 2's novelty verdict is not made up
    only_homogeneous = [{"name": "hom", "train": ["A"], "novel": ["L"], "bases": ["small"]}]
    text = "\n".join(study.claims_markdown(summary, only_homogeneous, "A"))
    assert "ensemble σ: under-predicts beyond its training data **yes**, calibrated within it **yes**, " \
           "misses novelty after heterogeneous training **not measured** (error/σ 4 vs 1.00)" in text
    # an ensemble without calibration frames: raw σ is no calibrated σ, and claim 2 says so
    del summary["heterogeneous"]["ensemble"]["calibration_factor"]
    text = "\n".join(study.claims_markdown(summary, cases, "A"))
    assert "ensemble σ: not measured (σ not calibrated" in text and "ensemble σ: under-predicts" not in text
    # no novelty case over several bases: claim 1 is not said to hold on correlation alone
    text = "\n".join(study.claims_markdown(summary, only_homogeneous, "A"))
    assert "ensemble σ: correlation **better**, novelty detection not measured" in text


def test_stratified_split_three_frame_group_keeps_one_test_frame():
    """A group of 3 or more frames always has a test frame, even when test_fraction * n
    rounds to zero (0.1 * 3 = 0.3); with fewer than 4 frames nothing goes to calibration."""
    labels = np.array(["a"] * 3, dtype=object)
    for seed in range(3):
        s = study.stratified_split(labels, 0.1, 0.2, seed=seed)
        assert len(s["test"]) == 1 and len(s["calibration"]) == 0 and len(s["train"]) == 2
        assert sorted(np.concatenate(list(s.values()))) == [0, 1, 2]


def test_gamma_sigma_is_the_mapped_mean_error_over_the_chi3_mean():
    """The γ→error map predicts the mean force-error norm; for a 3-D Gaussian force error of
    per-component σ that mean is σ·E[χ₃], so σ = map(γ) / E[χ₃]. With the identity map
    (power map, a = 0, b = 1), σ·E[χ₃] (scipy) must give back γ."""
    from scipy import stats

    from aceuq import metrics

    frames = [np.zeros(2), np.zeros(3)]  # only their lengths (atoms per frame) are used
    gamma = [np.array([0.5, 1.0]), np.array([2.0, 4.0, 8.0])]
    m = study.Model(None, frames, np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    m.gamma["g"] = study.GammaMethod(gamma, metrics.ErrorMap("power", a=0.0, b=1.0))
    s = m._gamma_scores("g", [1, 0])
    expected = np.concatenate([gamma[1], gamma[0]])
    assert np.array_equal(s.atom, expected)
    assert list(s.structure_index) == [0, 0, 0, 1, 1]
    assert np.allclose(s.sigma * stats.chi(3).mean(), expected, rtol=1e-12)


def test_score_novelty_threshold_and_paired_alarm_counts():
    """Study.score on hand-set per-structure scores (one atom per structure): the alarm
    threshold is the 95 % quantile of the calibration structures' scores, detection and false
    alarm rates are the novel / known fractions above it, and the paired counts are the known
    structures flagged by global γ only, sum(g & ~e), and by the ensemble only, sum(e & ~g)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    cal, known, novel, test = np.arange(0, 40), np.arange(40, 240), np.arange(240, 280), np.arange(280, 300)
    table = {"ensemble": rng.uniform(0, 1, 300), "gamma_global": rng.uniform(0, 1, 300)}
    table["gamma_global"][known] *= 1.3  # global γ flags more known structures than the ensemble's ~5 %
    table["ensemble"][novel] += 0.5
    table["gamma_global"][novel] += 0.5

    def scorer(name):
        return lambda idx: study.Scores(table[name][np.asarray(idx)], np.arange(len(idx)), len(idx))

    model = SimpleNamespace(methods={n: scorer(n) for n in table}, gamma={},
                            ens=SimpleNamespace(calibration={}),
                            evaluate=lambda idx: (rng.uniform(0.1, 1, len(idx)), None, None))
    out = study.Study.score(study.Study.__new__(study.Study), model, test, cal, known, novel)
    alarm = {}
    for name, v in table.items():
        thr = np.quantile(v[cal], 0.95)
        # the data separate the 95 % from the 90 % quantile
        assert np.sum((v[known] > np.quantile(v[cal], 0.90)) & (v[known] <= thr)) > 0
        alarm[name] = v[known] > thr
        assert out[name]["false_alarm_rate"] == pytest.approx(np.mean(alarm[name]))
        assert out[name]["detection_rate"] == pytest.approx(np.mean(v[novel] > thr))
    g, e = alarm["gamma_global"], alarm["ensemble"]
    assert np.sum(g & ~e) != np.sum(e & ~g)  # the two counts are distinguishable
    assert out["gamma_global"]["count_alarms_gamma_only"] == np.sum(g & ~e)
    assert out["gamma_global"]["count_alarms_ensemble_only"] == np.sum(e & ~g)
    # γ of a degenerate training set, 1 up to rounding everywhere: nothing is above the threshold
    # by rounding alone; a real excess (1e-6) is
    flat = 1.0 + 1e-11 * rng.standard_normal(300)
    flat[known[:3]] = 1.0 + 1e-6
    table = {"ensemble": rng.uniform(0, 1, 300), "gamma_global": flat}
    out = study.Study.score(study.Study.__new__(study.Study), model, test, cal, known, novel)
    assert out["gamma_global"]["false_alarm_rate"] == pytest.approx(3 / len(known))


def test_every_group_keeps_training_frames_whatever_the_fractions():
    """Per-group rounding of large test and calibration fractions takes the calibration part, then
    the test part, down so that every group of two or more frames keeps a training frame."""
    for n, test, cal in ((8, 0.5, 0.45), (5, 0.6, 0.35), (8, 0.7, 0.25), (4, 0.5, 0.45)):
        labels = np.array(["g"] * n)
        s = study.stratified_split(labels, test, cal, seed=0)
        assert len(s["train"]) >= 1 and len(s["test"]) >= 1, (n, test, cal, s)
        assert sorted(np.concatenate([s["train"], s["test"], s["calibration"]])) == list(range(n))


def test_novelty_cases_and_bases_that_cannot_be_measured_or_named(emt_data, tmp_path):
    """Novel groups the model also trains on (its own frames scored as novel), case names that
    name the study's own models, and bases of one name are refused before any fitting; a case
    that trains on every group has nothing novel: a note, not a crash after the study."""
    base = {"data": [emt_data], "seeds": [0], "ensemble": {"members": 2}, "accuracy": {"bases": ["small"]}}
    for novelty, message in (
            ([{"train_groups": ["bulk", "liquid"], "novel_groups": ["liquid"]}], "liquid both trained on and novel"),
            ([{"name": "homogeneous", "train_groups": ["bulk", "surface"], "novel_groups": ["liquid"]}],
             "homogeneous repeated or reserved"),
            ([{"name": "x", "novel_groups": ["liquid"]}, {"name": "x", "novel_groups": ["surface"]}],
             "novelty cases need distinct names"),
            # the names of the study's own experiments: their rows would be averaged with the case's
            ([{"name": "heterogeneous", "train_groups": ["bulk"], "novel_groups": ["liquid"]}],
             "heterogeneous repeated or reserved"),
            ([{"name": "accuracy", "train_groups": ["bulk"], "novel_groups": ["liquid"]}],
             "accuracy repeated or reserved"),
            ([{"name": "surface/vacancy", "train_groups": ["bulk"], "novel_groups": ["liquid"]}],
             "must not hold '/'")):
        with pytest.raises(InputError, match=message):
            study.Study(study.load_config({**base, "novelty": novelty}), str(tmp_path))
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    for d, nrad in (("b1", 4), ("b2", 6)):
        (tmp_path / d / "basis.yaml").write_text(
            "potential:\n  deltaSplineBins: 0.001\n"
            "  embeddings: {ALL: {npot: FinnisSinclairShiftedScaled, fs_parameters: [1, 1], ndensity: 1}}\n"
            "  bonds: {ALL: {radbase: ChebExpCos, radparameters: [5.25], rcut: 5.0, dcut: 0.01}}\n"
            f"  functions: {{ALL: {{nradmax_by_orders: [{nrad}, 2], lmax_by_orders: [0, 1]}}}}\n")
    with pytest.raises(InputError, match="share a name"):
        study.Study(study.load_config({**base, "accuracy": {"bases": [str(tmp_path / "b1" / "basis.yaml"),
                                                                      str(tmp_path / "b2" / "basis.yaml")]}}),
                    str(tmp_path))
    everything = study.Study(study.load_config(
        {**base, "novelty": [{"name": "all-in", "train_groups": ["bulk", "surface", "vacancy", "liquid"]}]}),
        str(tmp_path))
    assert not everything.cases and "'all-in': trained on every group" in " ".join(everything.notes)
    assert study.load_config({**base, "gamma": {"rank_rtol": "1e-8"}})["gamma"]["rank_rtol"] == 1e-8
    # lists with repeats: a data file twice would be split on its own (training frames in the test set)
    for changes, message in (({"data": [emt_data, emt_data]}, "lists .* more than once"),
                             ({"novelty": [{"train_groups": ["bulk"], "novel_groups": ["liquid", "liquid"]}]},
                              "'novel_groups' lists liquid more than once"),
                             ({"gamma": {"clusters": [2, 2]}}, "gamma clusters lists a value more than once")):
        with pytest.raises(InputError, match=message):
            study.load_config({**base, **changes})
    # a basis file is looked for beside the config, as data are, not in the working directory
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "study.yaml").write_text(f"data: [{emt_data}]\naccuracy: {{bases: [here.yaml]}}\n")
    (tmp_path / "here.yaml").write_text((tmp_path / "b1" / "basis.yaml").read_text())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(InputError, match=re.escape(str(tmp_path / "cfg" / "here.yaml"))):
            study.load_config(str(tmp_path / "cfg" / "study.yaml"))
    finally:
        os.chdir(cwd)
    # a basis file that names its elements is read as it stands when the config is checked
    named = tmp_path / "cfg" / "named.yaml"
    named.write_text((tmp_path / "b1" / "basis.yaml").read_text().replace("potential:\n", "potential:\n  elements: [Cu]\n"))
    assert study.load_config({**base, "accuracy": {"bases": [str(named)]}})["accuracy"]["bases"] == [str(named)]
    # a regroup rule whose group no frame is in (a typo) is refused, not ignored
    rule = {"by": "coordination", "group": "liqiud", "threshold": 10, "above": "dense", "below": "open"}
    with pytest.raises(InputError, match="no frame is in group 'liqiud'"):
        study.Study(study.load_config({**base, "regroup": [rule]}), str(tmp_path))


def test_ensemble_ranks_come_from_the_raw_spread_when_the_calibration_factor_is_zero(tmp_path):
    """Calibration frames without force errors (perfect crystals) fit a force factor of 0 when not
    strict, as in the study: every calibrated σ_F is then the floor. The ensemble's rank metrics
    (Spearman, ROC-AUC, novelty thresholds) must still come from the members' raw spread, which a
    monotone calibration would not reorder; the calibration metrics keep the calibrated σ."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from aceuq import metrics
    from aceuq.ensemble import fit_ensemble

    frames = emt_groups(n_per_group=4, seed=5)
    ens = fit_ensemble(frames[:12], 3, str(tmp_path / "ens"), basis="small", bootstrap=True, seed=4)
    perfect = []
    for a0 in (3.58, 3.61, 3.64):
        atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat(2)
        atoms.calc = EMT()
        perfect.append(_label(atoms, "bulk"))
    assert ens.calibrate(perfect, strict=False)["forces"] == 0.0
    test = np.arange(12, 16)
    model = study.Model(ens, frames, np.arange(12), np.zeros(0, dtype=int), "small")
    s = model._ensemble_scores(test)
    assert np.ptp(s.sigma) == 0.0  # every calibrated σ is the floor
    raw = np.concatenate([ens.evaluate(frames[k], calibrated=False).force_uncertainty for k in test])
    assert np.array_equal(s.atom, raw) and np.ptp(raw) > 0
    err, _, _ = model.evaluate(test)
    row = study.Study.score(study.Study.__new__(study.Study), model, test, np.zeros(0, dtype=int))["ensemble"]
    assert np.isfinite(row["spearman"]) and row["spearman"] == metrics.spearman(raw, err)


def test_summary_counts_the_splits_behind_a_mean_that_dropped_nan():
    """A metric that is NaN in some split (a Spearman of a constant score) is averaged over the
    others, and the summary and the report's cell say over how many."""
    st = study.Study.__new__(study.Study)
    st.results = {"homogeneous": {"ensemble": [{"spearman": float("nan"), "force_rmse": 0.1},
                                               {"spearman": 0.5, "force_rmse": 0.3}]}}
    agg = st.summary()["homogeneous"]["ensemble"]
    assert agg["n_splits"] == 2 and agg["spearman"] == 0.5 and agg["spearman_n"] == 1
    assert agg["force_rmse"] == pytest.approx(0.2) and "force_rmse_n" not in agg
    cell = study._fmt(agg["spearman"], agg["spearman_std"], agg["spearman_n"], agg["n_splits"])
    assert cell == "0.500 (1 of 2 splits)"
