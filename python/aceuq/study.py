"""The paper's protocol (Shuang et al., arXiv 2508.03405) on labelled data: how model accuracy and
training-data heterogeneity shape uncertainty quality.

Data: labelled structures (energy, forces) with a group label (extxyz ``config_type``), optionally
regrouped by structure (e.g. liquid-like vs crystalline frames by mean coordination). Over several
random splits (stratified by group: test, calibration and training parts of every group):

(a) **accuracy**: ensembles with growing bases trained on all groups → Spearman/Pearson of the
    per-atom force uncertainty vs the per-atom force error on the test part, miscalibration area;
(b) **heterogeneity**: trained on one group (homogeneous) vs on all groups (heterogeneous), σ
    calibrated on held-out frames of the training distribution, evaluated on the test part of all
    groups → calibration of each method;
(c) **novelty**: trained on some groups, held-out groups are novel; a structure's score is the
    maximum over its atoms; ROC-AUC, PR-AUC and the detection rate at a threshold (the 95th
    percentile of in-distribution calibration scores).

Methods: ``ensemble`` (linear ACE ensemble σ). Extrapolation-grade columns (global γ,
clustering-local γ) join when ``aceuq.activeset`` provides its build API.

Outputs: ``report.md`` (tables, PNGs) and ``metrics.json``:
``{experiment: {method: {spearman, pearson, miscalibration_area, roc_auc, pr_auc, ...}}}`` with
means over splits (``*_std`` beside them; ``null`` where a metric does not apply).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from . import ensemble as ens_mod
from . import metrics
from ._core import InputError
from .data import read_structures

METRIC_KEYS = ("spearman", "pearson", "miscalibration_area", "roc_auc", "pr_auc")
_CHI3_MEAN = 2.0 * np.sqrt(2.0 / np.pi)  # E|x| for x ~ N(0, I_3): mean force-error norm per unit σ


# ======================================================================= config
DEFAULTS = {
    "group_by": "config_type",
    "regroup": [],
    "seeds": [0, 1, 2],
    "test_fraction": 0.25,
    "calibration_fraction": 0.15,
    "cutoff": None,
    "elements": None,
    "ensemble": {"members": 5, "bootstrap": True, "alpha": 1e-5, "energy_weight": 1.0},
    "accuracy": {"bases": ["small", "medium"]},
    "heterogeneity": {"homogeneous_group": None, "basis": None},
    "novelty": {"train_groups": None, "novel_groups": None, "basis": None},
    "keep_models": False,
}


def load_config(path_or_dict) -> Dict:
    """Read a study config (YAML) and fill defaults; data paths are relative to the config file."""
    if isinstance(path_or_dict, dict):
        cfg, base = dict(path_or_dict), os.getcwd()
    else:
        import yaml

        path = os.fspath(path_or_dict)
        if not os.path.exists(path):
            raise InputError(f"study config '{path}': no such file")
        with open(path) as fh:
            try:
                cfg = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise InputError(f"study config '{path}': not valid YAML ({exc})") from None
        if not isinstance(cfg, dict):
            raise InputError(f"study config '{path}': expected a mapping")
        base = os.path.dirname(os.path.abspath(path))
    if "data" not in cfg:
        raise InputError("study config: needs 'data' (labelled structure files)")
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    cfg["data"] = [d if os.path.isabs(d) else os.path.normpath(os.path.join(base, d)) for d in data]
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in cfg.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, dict):
            out[k].update(v)
        else:
            out[k] = v
    unknown = set(cfg) - set(DEFAULTS) - {"data", "name", "description"}
    if unknown:
        raise InputError(f"study config: unknown key(s) {', '.join(sorted(unknown))}")
    if len(out["seeds"]) < 1:
        raise InputError("study config: 'seeds' must list at least one seed")
    return out


def mean_coordination(atoms: Atoms, cutoff: float) -> float:
    from ase.neighborlist import neighbor_list

    return float(np.bincount(neighbor_list("i", atoms, cutoff), minlength=len(atoms)).mean())


def group_labels(frames: Sequence[Atoms], cfg: Dict) -> np.ndarray:
    """Group of every frame: its ``group_by`` info, then the ``regroup`` rules (by structure)."""
    key = cfg["group_by"]
    labels = []
    for k, a in enumerate(frames):
        if key not in a.info:
            raise InputError(f"structure {k} has no '{key}' label (study groups frames by it)")
        labels.append(str(a.info[key]))
    labels = np.array(labels, dtype=object)
    for rule in cfg["regroup"] or []:
        if rule.get("by") != "coordination":
            raise InputError(f"regroup rule {rule}: only 'by: coordination' is supported")
        for k in np.nonzero(labels == rule["group"])[0]:
            c = mean_coordination(frames[k], float(rule.get("cutoff", 3.0)))
            labels[k] = rule["above"] if c > float(rule["threshold"]) else rule["below"]
    return labels


def stratified_split(labels: np.ndarray, test_fraction: float, calibration_fraction: float, seed: int):
    """Per group: a random test part, a calibration part, the rest for training (index arrays)."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "calibration": [], "test": []}
    for g in sorted(set(labels)):
        idx = rng.permutation(np.nonzero(labels == g)[0])
        n = idx.size
        n_test = int(round(test_fraction * n)) if n >= 3 else 0
        n_cal = int(round(calibration_fraction * n)) if n >= 4 else 0
        if n >= 3:
            n_test = max(n_test, 1)
        parts["test"].extend(idx[:n_test])
        parts["calibration"].extend(idx[n_test:n_test + n_cal])
        parts["train"].extend(idx[n_test + n_cal:])
    return {k: np.array(sorted(v), dtype=int) for k, v in parts.items()}


# ======================================================================= methods
@dataclass
class Scores:
    """Per-atom uncertainty of one method on some frames, and the true errors."""

    atom: np.ndarray           # per-atom score
    structure_index: np.ndarray
    n_structures: int
    sigma: Optional[np.ndarray] = None  # per-component σ-like value (calibration), if any

    def per_structure(self) -> np.ndarray:
        return metrics.max_per_structure(self.atom, self.structure_index, self.n_structures)


def _gamma_note() -> str:
    """Why the γ columns are absent (the active-set API is being built alongside this module)."""
    import importlib.util

    if importlib.util.find_spec("aceuq.activeset") is None:
        return "γ columns (global, clustering-local) are left out: aceuq.activeset is not available yet."
    return "γ columns (global, clustering-local) are left out: the study does not call aceuq.activeset yet."


class Model:
    """One trained ensemble (and, when available, active sets) and its scorers."""

    def __init__(self, ens: ens_mod.Ensemble, frames: Sequence[Atoms], train_idx: np.ndarray):
        self.ens = ens
        self.frames = frames
        self.train_idx = train_idx
        self._cache: Dict[int, tuple] = {}
        self.methods: Dict[str, Callable] = {"ensemble": self._ensemble_scores}

    def evaluate(self, idx: Sequence[int]):
        """(force error per atom, force σ per atom (calibrated), structure index) on frames idx."""
        fe, fs, si = [], [], []
        for j, k in enumerate(idx):
            if k not in self._cache:
                r = self.ens.evaluate(self.frames[k], forces=True, calibrated=True)
                self._cache[k] = (metrics.force_error_norms(r.forces, ens_mod._forces(self.frames[k])),
                                  r.force_uncertainty)
            e, s = self._cache[k]
            fe.append(e)
            fs.append(s)
            si.append(np.full(e.size, j))
        if not fe:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        return np.concatenate(fe), np.concatenate(fs), np.concatenate(si)

    def _ensemble_scores(self, idx) -> Scores:
        _, s, si = self.evaluate(idx)
        return Scores(s, si, len(idx), sigma=s / np.sqrt(3.0))


# ======================================================================= the study
class Study:
    def __init__(self, cfg: Dict, output_dir: str, progress: bool = True, workers: int = 2):
        self.cfg, self.out, self.progress, self.workers = cfg, output_dir, progress, workers
        self.frames = read_structures(cfg["data"])
        self.labels = group_labels(self.frames, cfg)
        self.groups = sorted(set(self.labels))
        self.elements = cfg["elements"] or sorted({s for a in self.frames for s in a.get_chemical_symbols()})
        self.cutoff = float(cfg["cutoff"] or ens_mod.default_cutoff(self.frames))
        self._dm: Dict[str, tuple] = {}
        self.results: Dict[str, Dict[str, List[Dict]]] = {}
        self.plot_data: Dict[str, Dict] = {}
        self.notes: List[str] = []
        self.notes.append(_gamma_note())
        het = cfg["heterogeneity"]
        self.homogeneous = het["homogeneous_group"] or max(self.groups, key=lambda g: np.sum(self.labels == g))
        if self.homogeneous not in self.groups:
            raise InputError(f"study config: homogeneous_group '{self.homogeneous}' is not a group "
                             f"(groups: {', '.join(self.groups)})")
        nov = cfg["novelty"]
        self.novelty_train = list(nov["train_groups"] or [self.homogeneous])
        self.novel = list(nov["novel_groups"] or [g for g in self.groups if g not in self.novelty_train])
        for g in self.novelty_train + self.novel:
            if g not in self.groups:
                raise InputError(f"study config: novelty group '{g}' is not a group (groups: {', '.join(self.groups)})")
        self.bases = list(cfg["accuracy"]["bases"])
        self.main_basis = het["basis"] or self.bases[0]

    # ---------------------------------------------------------------- fitting
    def design(self, basis: str):
        if basis not in self._dm:
            bb = ens_mod.make_basis(basis, self.elements, self.cutoff)
            self._dm[basis] = (bb, ens_mod.design_matrix(bb, self.frames, {}, workers=self.workers))
        return self._dm[basis]

    def fit(self, basis: str, train_idx: np.ndarray, cal_idx: np.ndarray, seed: int, tag: str) -> Model:
        e = self.cfg["ensemble"]
        bb, dm = self.design(basis)
        train = [self.frames[k] for k in train_idx]
        e0 = ens_mod.reference_energies(train, dm.elements)
        local = ens_mod.resample(len(train_idx), int(e["members"]), bool(e["bootstrap"]), seed)
        samples = [train_idx[s] for s in local]
        coefs = ens_mod.fit_members(dm, samples, float(e["alpha"]), float(e["energy_weight"]), reference_energy=e0)
        folder = os.path.join(self.out, "models", f"{tag}-seed{seed}")
        ens = ens_mod.write_ensemble(bb, coefs, folder, e0, {"basis": basis, "cutoff": self.cutoff, "seed": seed,
                                                             "n_structures": len(train_idx),
                                                             "n_functions": int(dm.X.shape[1])})
        if len(cal_idx):
            ens.calibrate([self.frames[k] for k in cal_idx])
            ens.save_calibration(folder)
        return Model(ens, self.frames, train_idx)

    # ---------------------------------------------------------------- scoring
    def score(self, model: Model, test_idx, cal_idx, known_idx=None, novel_idx=None) -> Dict[str, Dict]:
        """Every method's metrics: correlation and calibration on test_idx; novelty on known vs novel."""
        err, _, _ = model.evaluate(test_idx)
        out = {}
        for name, scorer in model.methods.items():
            s = scorer(test_idx)
            row = {k: None for k in METRIC_KEYS}
            row["spearman"] = metrics.spearman(s.atom, err)
            row["pearson"] = metrics.pearson(s.atom, err)
            row["force_rmse"] = float(np.sqrt(np.mean(err ** 2)))
            if s.sigma is not None and np.all(s.sigma > 0):
                row["miscalibration_area"] = metrics.miscalibration_area(err, s.sigma, dof=3)
                row["z_rms"] = metrics.z_rms(err, s.sigma, dof=3)
                row["ence"] = metrics.reliability_curve(err, s.sigma, dof=3).ence
            if known_idx is not None and len(known_idx) and novel_idx is not None and len(novel_idx):
                k = scorer(known_idx).per_structure()
                n = scorer(novel_idx).per_structure()
                thr = float(np.quantile(scorer(cal_idx).per_structure(), 0.95)) if len(cal_idx) else None
                d = metrics.novelty_detection(k, n, thr)
                row.update(roc_auc=d.roc_auc, pr_auc=d.pr_auc, detection_rate=d.detection_rate,
                           false_alarm_rate=d.false_alarm_rate)
            out[name] = row
        return out

    def _record(self, experiment: str, scores: Dict[str, Dict]):
        for method, row in scores.items():
            self.results.setdefault(experiment, {}).setdefault(method, []).append(row)

    # ---------------------------------------------------------------- protocol
    def run(self) -> Dict:
        seeds = list(self.cfg["seeds"])
        tasks = [(s, "accuracy", b) for s in seeds for b in self.bases] + \
                [(s, exp, None) for s in seeds for exp in ("homogeneous", "novelty")]
        bar = _bar(len(tasks), self.progress)
        models: Dict[tuple, Model] = {}
        for seed in seeds:
            split = stratified_split(self.labels, self.cfg["test_fraction"], self.cfg["calibration_fraction"], seed)
            tr, cal, te = split["train"], split["calibration"], split["test"]
            in_group = lambda idx, groups: idx[np.isin(self.labels[idx], groups)]  # noqa: E731
            # (a) accuracy sweep, heterogeneous training on all groups
            for basis in self.bases:
                bar.set_description(f"seed {seed}: accuracy {basis}")
                m = models[("all", basis, seed)] = self.fit(basis, tr, cal, seed, f"all-{basis}")
                self._record(f"accuracy/{basis}", self.score(m, te, cal))
                if seed == seeds[0]:
                    err, sig, _ = m.evaluate(te)
                    self.plot_data.setdefault("parity", {})[basis] = (sig, err)
                bar.update()
            # (b) homogeneous vs heterogeneous, same test frames (all groups)
            bar.set_description(f"seed {seed}: heterogeneity")
            hom_tr, hom_cal = in_group(tr, [self.homogeneous]), in_group(cal, [self.homogeneous])
            others = te[~np.isin(self.labels[te], [self.homogeneous])]
            het = models.get(("all", self.main_basis, seed)) or self.fit(self.main_basis, tr, cal, seed, "all")
            hom = models[("hom", seed)] = self.fit(self.main_basis, hom_tr, hom_cal, seed, "homogeneous")
            self._record("heterogeneous", self.score(het, te, cal))
            self._record("homogeneous", self.score(hom, te, hom_cal, in_group(te, [self.homogeneous]), others))
            if seed == seeds[0]:
                self.plot_data["reliability"] = {}
                for name, m in (("homogeneous", hom), ("heterogeneous", het)):
                    err, sig, _ = m.evaluate(te)
                    self.plot_data["reliability"][name] = (err, sig / np.sqrt(3.0))
            bar.update()
            # (c) novelty detection of held-out groups
            bar.set_description(f"seed {seed}: novelty")
            n_tr, n_cal = in_group(tr, self.novelty_train), in_group(cal, self.novelty_train)
            known = in_group(te, self.novelty_train)
            novel = np.nonzero(np.isin(self.labels, self.novel))[0]
            m = hom if self.novelty_train == [self.homogeneous] else self.fit(self.main_basis, n_tr, n_cal, seed,
                                                                            "novelty")
            self._record("novelty", self.score(m, np.concatenate([known, novel]), n_cal, known, novel))
            for g in self.novel:
                self._record(f"novelty/{g}", self.score(m, np.nonzero(self.labels == g)[0], n_cal, known,
                                                        np.nonzero(self.labels == g)[0]))
            if seed == seeds[0]:
                self.plot_data["roc"] = {
                    meth: (sc(known).per_structure(), sc(novel).per_structure()) for meth, sc in m.methods.items()}
            bar.update()
        bar.close()
        return self.summary()

    def summary(self) -> Dict:
        out = {}
        for exp, by_method in self.results.items():
            out[exp] = {}
            for method, rows in by_method.items():
                agg = {"n_splits": len(rows)}
                keys = list(METRIC_KEYS) + sorted({k for r in rows for k in r} - set(METRIC_KEYS))
                for k in keys:
                    vals = [r.get(k) for r in rows if r.get(k) is not None and np.isfinite(r.get(k))]
                    agg[k] = float(np.mean(vals)) if vals else None
                    if k in METRIC_KEYS or k == "force_rmse":
                        agg[k + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
                out[exp][method] = agg
        return out

    # ---------------------------------------------------------------- report
    def write(self, summary: Dict) -> Dict[str, str]:
        os.makedirs(self.out, exist_ok=True)
        metrics._write_text_atomic(os.path.join(self.out, "metrics.json"), json.dumps(summary, indent=1))
        pngs = {}
        for basis, (sig, err) in self.plot_data.get("parity", {}).items():
            pngs[f"parity_{basis}"] = metrics.plot_parity(
                sig, err, os.path.join(self.out, f"parity_{basis}.png"), xlabel="ensemble σ_F (eV/Å)",
                ylabel="|ΔF| (eV/Å)", title=f"{basis} basis, Spearman {metrics.spearman(sig, err):.2f}")
        rel = self.plot_data.get("reliability", {})
        if rel:
            pngs["reliability"] = metrics.plot_reliability(
                {k: metrics.reliability_curve(e, s, dof=3) for k, (e, s) in rel.items()},
                os.path.join(self.out, "reliability.png"), title="ensemble σ, homogeneous vs heterogeneous")
            pngs["calibration"] = metrics.plot_calibration(
                {k: metrics.calibration_curve(e, s, dof=3) for k, (e, s) in rel.items()},
                os.path.join(self.out, "calibration.png"))
        if self.plot_data.get("roc"):
            pngs["roc"] = metrics.plot_roc(self.plot_data["roc"], os.path.join(self.out, "roc.png"),
                                           title=f"novel: {', '.join(self.novel)}")
        metrics._write_text_atomic(os.path.join(self.out, "report.md"), self._markdown(summary, pngs))
        return pngs

    def _markdown(self, summary: Dict, pngs: Dict[str, str]) -> str:
        cfg = self.cfg
        counts = ", ".join(f"{g} {int(np.sum(self.labels == g))}" for g in self.groups)
        lines = [f"# UQ study{': ' + cfg['name'] if cfg.get('name') else ''}", "",
                 f"Data: {', '.join(cfg['data'])} — {len(self.frames)} structures, "
                 f"{sum(len(a) for a in self.frames)} atoms; groups ({cfg['group_by']}"
                 f"{', regrouped by structure' if cfg['regroup'] else ''}): {counts}.",
                 f"Splits: {len(cfg['seeds'])} random stratified splits (seeds {cfg['seeds']}), test "
                 f"{cfg['test_fraction']:.0%}, calibration {cfg['calibration_fraction']:.0%} of every group. "
                 f"Ensembles: {cfg['ensemble']['members']} linear ACE members, "
                 f"{'bootstrap' if cfg['ensemble']['bootstrap'] else 'subsampling'}, cutoff {self.cutoff} Å.",
                 "", "Per-atom force error |ΔF| vs per-atom uncertainty; miscalibration area on the σ "
                 "calibrated on held-out frames of the training distribution (dof 3); novelty score = max "
                 "over a structure's atoms. Values: mean ± std over splits.", ""]
        lines += [f"> {n}" for n in self.notes] + ([""] if self.notes else [])
        sections = [
            ("(a) Accuracy sweep (trained on all groups)", [e for e in summary if e.startswith("accuracy/")]),
            (f"(b) Homogeneous ({self.homogeneous}) vs heterogeneous (all groups) training, "
             f"basis {self.main_basis}, test on all groups", ["homogeneous", "heterogeneous"]),
            (f"(c) Novelty detection: trained on {', '.join(self.novelty_train)}, novel "
             f"{', '.join(self.novel)}", ["novelty"] + [f"novelty/{g}" for g in self.novel]),
        ]
        cols = ["spearman", "pearson", "miscalibration_area", "roc_auc", "pr_auc", "detection_rate", "force_rmse"]
        for title, exps in sections:
            lines += [f"## {title}", "", "| experiment | method | " + " | ".join(cols) + " |",
                      "|" + "---|" * (len(cols) + 2)]
            for exp in exps:
                for method, agg in summary.get(exp, {}).items():
                    cells = [_fmt(agg.get(c), agg.get(c + "_std")) for c in cols]
                    lines.append(f"| {exp} | {method} | " + " | ".join(cells) + " |")
            lines.append("")
        for key, path in pngs.items():
            lines += [f"![{key}]({os.path.basename(path)})", ""]
        return "\n".join(lines)


def _fmt(v, sd=None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, s):
        pass

    def close(self):
        pass


def _bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="fit")


def run_study(config, output_dir: str, progress: bool = True, workers: int = 2) -> Dict:
    """Run the study described by ``config`` (a YAML path or a dict); write report.md, metrics.json, PNGs."""
    ens_mod._require_pyace("the study (it fits linear ACE ensembles)")
    study = Study(load_config(config), output_dir, progress, workers)
    summary = study.run()
    study.write(summary)
    if not study.cfg["keep_models"]:
        import shutil

        shutil.rmtree(os.path.join(output_dir, "models"), ignore_errors=True)
    return summary
