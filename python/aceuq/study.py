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

Several novelty cases can be listed (``novelty:`` a list of mappings with ``name``,
``train_groups`` (a list, or ``rest`` = every group not novel), ``novel_groups`` and ``bases``),
e.g. the hard case of the paper: heterogeneous training on everything but surfaces, surfaces novel,
over a sweep of basis sizes.

Methods, all graded on the same frames:

- ``ensemble``: linear ACE ensemble force σ, calibrated on the calibration frames (scale and
  floor, :meth:`aceuq.ensemble.Ensemble.calibrate`);
- ``gamma_global``: D-optimality extrapolation grade γ against one active set per element
  (pacemaker's .asi) built from the training atoms' projections;
- ``gamma_local_<assign>`` (``gamma_local_k<k>_<assign>`` when several k are studied): the
  clustering-enhanced local γ (``aceuq.activeset``, k clusters per element or ``auto``; the
  effective k is reported as ``k_effective``), assigning a new atom to its nearest centroid or
  taking the minimum γ over clusters.

γ is not an error in eV/Å: for calibration it goes through a monotone :class:`aceuq.metrics.ErrorMap`
(γ → expected per-atom force-error norm, fitted on the calibration frames), whose output
E|ΔF| is read as σ_per-component = E|ΔF| / E|χ₃| (the ensemble's convention, dof 3). The maps are
written to ``DIR/error_maps/`` (``aceuq gamma ... --error-map FILE.json`` applies one).
Correlations (Spearman, Pearson) and novelty detection use the raw score (for the ensemble, the
members' uncalibrated spread: a calibration factor of 0, where the calibration frames' force
errors are all within the floor, would make every calibrated σ the floor); ``map_spearman`` is the
Spearman of the mapped estimate (ties of the isotonic steps lower it). The calibration metrics use
the calibrated σ or the mapped estimate.

The report ends with the paper's three claims checked on the data, each with its numbers:
(1) from the least to the most accurate basis of the accuracy sweep (force RMSE), Spearman rises
and, in every novelty case swept over bases, ROC-AUC does not fall ("holds" if both, "partly" if
one); (2) trained on the homogeneous group only, held-out RMS error/σ on the test frames of all
groups exceeds 1.25 (under-prediction), trained on all groups it is within 1 ± 0.25, the
heterogeneous novelty cases (more than one training group) have a lower ROC-AUC than the
homogeneous one, and global γ raises more false alarms than the ensemble (more conservative:
McNemar's exact test at 5 % on the structures only one of them flags, else "not resolved");
(3) local γ (nearest; k auto if studied) has a higher ROC-AUC than global γ in every
heterogeneous novelty case and basis where global γ is below 0.99.

Outputs: ``report.md`` (tables, claims, PNGs) and ``metrics.json``:
``{experiment: {method: {spearman, pearson, miscalibration_area, roc_auc, pr_auc, ...}}}`` with
means over splits (``*_std`` beside them; ``*_n``, the number of splits averaged, where some
split gave NaN; ``null`` where a metric does not apply). The plots show the first split.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from . import ensemble as ens_mod
from . import metrics
from ._core import InputError
from .data import (check_output, config_number, file_sha256, is_integer, read_structures, read_yaml_config,
                   sigterm_as_exit, structure_label)
from .progress import counter as progress_counter

METRIC_KEYS = ("spearman", "pearson", "miscalibration_area", "roc_auc", "pr_auc")
GAMMA_ASSIGN = ("nearest", "min")
SATURATED_AUC = 0.99  # claim (3) is judged only where global γ's ROC-AUC is below this
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
    # extrapolation-grade methods: clusters of the local sets (an int, "auto", or a list of them),
    # the cluster assignment rules studied, the γ→error map; gamma: false leaves γ out
    # rank_rtol: the active sets' rank cut (aceuq.maxvol); None = the library default
    "gamma": {"global": True, "clusters": ["auto"], "assign": ["nearest", "min"], "error_map": "isotonic",
              "mode": "linear", "rank_rtol": None},
    "keep_models": False,
}


def load_config(path_or_dict) -> Dict:
    """Read a study config (YAML) and fill defaults; data paths are relative to the config file.

    Every key is type- and range-checked here, and every basis (accuracy sweep, heterogeneity,
    novelty cases) must be a preset or a readable basis config, so that a bad config fails at
    once with one :class:`InputError` naming the file and the key, not after minutes of fitting.
    """
    if isinstance(path_or_dict, dict):
        cfg, base = dict(path_or_dict), os.getcwd()
        source = cfg.get("_path")
    else:
        source = os.fspath(path_or_dict)
        cfg = read_yaml_config(source, "study config")
        base = os.path.dirname(os.path.abspath(source))
    where = f"study config '{source}'" if source else "study config"

    def bad(msg):
        raise InputError(f"{where}: {msg}")

    if "data" not in cfg:
        bad("needs 'data' (labelled structure files)")
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    if not data or not all(isinstance(d, str) and d.strip() for d in data):
        bad(f"'data' must be a structure file or a list of them, got {cfg['data']!r}")
    cfg["data"] = [d if os.path.isabs(d) else os.path.normpath(os.path.join(base, d)) for d in data]
    twice = sorted({d for d in cfg["data"] if cfg["data"].count(d) > 1})
    if twice:  # its copies would be split on their own: training frames in the test set
        bad(f"'data' lists {', '.join(twice)} more than once")
    unknown = set(cfg) - set(DEFAULTS) - {"data", "name", "description", "_path"}
    if unknown:
        bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    for k in ("ensemble", "accuracy", "heterogeneity"):
        if k in cfg and not isinstance(cfg[k], dict):
            bad(f"'{k}' must be a mapping, got {cfg[k]!r}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in cfg.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, dict):
            out[k].update(v)
        else:
            out[k] = v
    if source:
        out["_path"] = source
    for k in ("name", "description"):
        if out.get(k) is not None and not isinstance(out[k], str):
            bad(f"'{k}' must be a string, got {out[k]!r}")
    if not isinstance(out["group_by"], str) or not out["group_by"]:
        bad(f"'group_by' must be the name of a structure label (e.g. config_type), got {out['group_by']!r}")
    if not isinstance(out["keep_models"], bool):
        bad(f"'keep_models' must be true or false, got {out['keep_models']!r}")

    seeds = out["seeds"]
    if not isinstance(seeds, list) or not seeds:
        bad(f"'seeds' must be a list of at least one seed (e.g. [0, 1, 2]), got {seeds!r}")
    if not all(is_integer(x) and x >= 0 for x in seeds):
        bad(f"'seeds' must be integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        bad(f"'seeds' must be distinct (a repeated seed repeats its split), got {seeds!r}")
    out["test_fraction"] = _number(out["test_fraction"], lambda v: 0 < v < 1, "in (0, 1)", "'test_fraction'", bad)
    out["calibration_fraction"] = _number(out["calibration_fraction"], lambda v: 0 <= v < 1, "in [0, 1)",
                                          "'calibration_fraction'", bad)
    if out["test_fraction"] + out["calibration_fraction"] >= 1:
        bad("'test_fraction' + 'calibration_fraction' must leave training frames (sum < 1)")
    if out["cutoff"] is not None:
        out["cutoff"] = _number(out["cutoff"], lambda v: v > 0, "> 0 (Å)", "'cutoff'", bad)
    if out["elements"] is not None:
        from .data import parse_elements

        if not isinstance(out["elements"], (str, list)) or not all(isinstance(x, str) for x in out["elements"]):
            bad(f"'elements' must be a list of element symbols, got {out['elements']!r}")
        try:
            out["elements"] = parse_elements(out["elements"])
        except InputError as exc:
            bad(f"'elements': {exc}")
    out["regroup"] = _regroup_config(out["regroup"], bad)

    e = out["ensemble"]
    unknown = set(e) - set(DEFAULTS["ensemble"])
    if unknown:
        bad(f"unknown ensemble key(s) {', '.join(sorted(unknown))} (known: {', '.join(DEFAULTS['ensemble'])})")
    if not (is_integer(e["members"]) and e["members"] >= 2):
        bad(f"ensemble 'members' must be an integer >= 2, got {e['members']!r}")
    if not isinstance(e["bootstrap"], bool):
        bad(f"ensemble 'bootstrap' must be true or false, got {e['bootstrap']!r}")
    e["alpha"] = _number(e["alpha"], lambda v: v >= 0, ">= 0", "ensemble 'alpha'", bad)
    e["energy_weight"] = _number(e["energy_weight"], lambda v: v > 0, "> 0", "ensemble 'energy_weight'", bad)

    acc = out["accuracy"]
    if set(acc) - {"bases"}:
        bad(f"unknown accuracy key(s) {', '.join(sorted(set(acc) - {'bases'}))} (known: bases)")
    acc["bases"] = _name_list(acc["bases"], "accuracy 'bases'", bad, "a basis")
    het = out["heterogeneity"]
    if set(het) - set(DEFAULTS["heterogeneity"]):
        bad(f"unknown heterogeneity key(s) {', '.join(sorted(set(het) - set(DEFAULTS['heterogeneity'])))}")
    for k in ("homogeneous_group", "basis"):
        if het[k] is not None and not (isinstance(het[k], str) and het[k]):
            bad(f"heterogeneity '{k}' must be a name, got {het[k]!r}")

    out["gamma"] = _gamma_config(out["gamma"], where)
    cases = out["novelty"] if isinstance(out["novelty"], list) else [out["novelty"]]
    known = {"name", "train_groups", "novel_groups", "basis", "bases"}
    for c in cases:
        if not isinstance(c, dict) or set(c) - known:
            bad(f"a novelty case is a mapping of {', '.join(sorted(known))}, got {c!r}")
        if c.get("name") is not None and not (isinstance(c["name"], str) and c["name"]):
            bad(f"a novelty case's 'name' must be a string, got {c['name']!r}")
        label = f"novelty case '{c.get('name') or 'novelty'}'"
        if c.get("train_groups") is not None and c["train_groups"] != "rest":
            c["train_groups"] = _name_list(c["train_groups"], f"{label} 'train_groups'", bad, "a group or 'rest'")
        if c.get("novel_groups") is not None:
            c["novel_groups"] = _name_list(c["novel_groups"], f"{label} 'novel_groups'", bad, "a group")
        if c.get("basis") is not None and not (isinstance(c["basis"], str) and c["basis"]):
            bad(f"{label} 'basis' must be a basis name or file, got {c['basis']!r}")
        if c.get("bases") is not None:
            c["bases"] = _name_list(c["bases"], f"{label} 'bases'", bad, "a basis")
    out["novelty"] = cases
    names = [c.get("name") or "novelty" for c in cases]
    if len(set(names)) != len(names):
        bad("novelty cases need distinct names")

    def resolve(b, key):  # basis files are relative to the config, like data; checked here, not mid-study
        given = str(b)
        preset = given in ens_mod.BASIS_PRESETS
        b = given if preset or os.path.isabs(given) else os.path.normpath(os.path.join(base, given))
        if not preset and not os.path.exists(b):
            bad(f"{key}: basis '{given}': neither a preset ({', '.join(ens_mod.BASIS_PRESETS)}) nor a file "
                f"(looked for {b}, beside the config)")
        try:
            ens_mod.basis_potential_config(b, None, 5.0)
        except InputError as exc:
            bad(f"{key}: {exc}")
        return b

    acc["bases"] = [resolve(b, "accuracy 'bases'") for b in acc["bases"]]
    if het.get("basis"):
        het["basis"] = resolve(het["basis"], "heterogeneity 'basis'")
    for c in cases:
        label = f"novelty case '{c.get('name') or 'novelty'}'"
        for key in ("basis", "bases"):
            if c.get(key):
                c[key] = [resolve(b, f"{label} 'bases'") for b in c[key]] if key == "bases" else \
                    resolve(c[key], f"{label} 'basis'")
    return out


def _number(v, ok, text: str, key: str, bad) -> float:
    """A finite number (data.config_number: also one YAML hands over as text) with ok(v), else
    bad(...)."""
    x = config_number(v)
    if x is None or not ok(x):
        bad(f"{key} must be a number {text}, got {v!r}")
    return x


def _name_list(v, key: str, bad, what: str) -> List[str]:
    """A list of distinct non-empty strings (a single string is a list of one)."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        bad(f"{key} must be {what} or a non-empty list of them, got {v!r}")
    twice = sorted({x for x in items if items.count(x) > 1})
    if twice:
        bad(f"{key} lists {', '.join(twice)} more than once")
    return list(items)


def _regroup_config(rules, bad) -> List[Dict]:
    if rules is None:
        return []
    if not isinstance(rules, list):
        bad(f"'regroup' must be a list of rules, got {rules!r}")
    keys = {"group", "by", "cutoff", "threshold", "above", "below"}
    out = []
    for rule in rules:
        if not isinstance(rule, dict) or set(rule) - keys:
            bad(f"a regroup rule is a mapping of {', '.join(sorted(keys))}, got {rule!r}")
        if rule.get("by") != "coordination":
            bad(f"regroup rule {rule}: only 'by: coordination' is supported")
        for k in ("group", "above", "below"):
            if not (isinstance(rule.get(k), str) and rule[k]):
                bad(f"regroup rule {rule}: '{k}' must be a group name")
        r = dict(rule)
        r["threshold"] = _number(rule.get("threshold"), lambda v: v >= 0, ">= 0",
                                 f"regroup rule {rule}: 'threshold'", bad)
        r["cutoff"] = _number(rule.get("cutoff", 3.0), lambda v: v > 0, "> 0 (Å)",
                              f"regroup rule {rule}: 'cutoff'", bad)
        out.append(r)
    return out


def _gamma_config(g, where: str = "study config") -> Dict:
    if g is False or g is None:
        return {"global": False, "clusters": [], "assign": [], "error_map": "isotonic", "mode": "linear",
                "rank_rtol": None}
    if g is not True and not isinstance(g, dict):
        raise InputError(f"{where}: 'gamma' must be a mapping or false, got {g!r}")
    g = {**DEFAULTS["gamma"], **(g if isinstance(g, dict) else {})}
    unknown = set(g) - set(DEFAULTS["gamma"])
    if unknown:
        raise InputError(f"{where}: unknown gamma key(s) {', '.join(sorted(unknown))}")
    if not isinstance(g["global"], bool):
        raise InputError(f"{where}: gamma global must be true or false, got {g['global']!r}")
    ks = g["clusters"] if isinstance(g["clusters"], list) else [g["clusters"]]
    for k in ks:
        if not (k == "auto" or (is_integer(k) and k >= 2)):
            raise InputError(f"{where}: gamma clusters must be 'auto' or integers >= 2, got {k!r}")
    assign = g["assign"] if isinstance(g["assign"], list) else [g["assign"]]
    for key, values in (("clusters", ks), ("assign", assign)):
        if len(set(map(str, values))) < len(values):
            raise InputError(f"{where}: gamma {key} lists a value more than once: {values}")
    if not all(isinstance(a, str) for a in assign) or set(assign) - set(GAMMA_ASSIGN):
        raise InputError(f"{where}: gamma assign must be among {', '.join(GAMMA_ASSIGN)}, got {assign}")
    if g["error_map"] not in ("isotonic", "power"):
        raise InputError(f"{where}: gamma error_map must be 'isotonic' or 'power'")
    if g["mode"] not in ("linear", "full"):
        raise InputError(f"{where}: gamma mode must be 'linear' or 'full'")
    rtol = g["rank_rtol"]
    if rtol is not None:
        value = config_number(rtol)  # PyYAML reads 1e-8 as text
        if value is None or not 0 < value < 1:
            raise InputError(f"{where}: gamma rank_rtol must be a number in (0, 1), got {rtol!r}")
        rtol = value
    return {"global": bool(g["global"]), "clusters": ks, "assign": assign, "error_map": g["error_map"],
            "mode": g["mode"], "rank_rtol": None if rtol is None else float(rtol)}


def basis_label(basis: str) -> str:
    """Short name of a basis (a preset, or a config file's stem) for experiment keys."""
    return os.path.splitext(os.path.basename(basis))[0] if basis not in ens_mod.BASIS_PRESETS else basis


def novelty_key(case: Dict, basis: str) -> str:
    """The metrics.json experiment of a novelty case at one basis: the case's name alone when it has
    one basis, else name/basis."""
    return case["name"] if len(case["bases"]) == 1 else f"{case['name']}/{basis_label(basis)}"


def mean_coordination(atoms: Atoms, cutoff: float) -> float:
    from ase.neighborlist import neighbor_list

    return float(np.bincount(neighbor_list("i", atoms, cutoff), minlength=len(atoms)).mean())


def group_labels(frames: Sequence[Atoms], cfg: Dict) -> np.ndarray:
    """Group of every frame: its ``group_by`` info, then the ``regroup`` rules (by structure)."""
    key = cfg["group_by"]
    labels = []
    for k, a in enumerate(frames):
        if key not in a.info:
            raise InputError(f"{structure_label(a, k)} has no '{key}' label (the study groups frames by its "
                             f"'group_by' key)")
        labels.append(str(a.info[key]))
    labels = np.array(labels, dtype=object)
    for rule in cfg["regroup"] or []:
        if rule.get("by") != "coordination":
            raise InputError(f"regroup rule {rule}: only 'by: coordination' is supported")
        if not np.any(labels == rule["group"]):
            raise InputError(f"regroup rule {rule}: no frame is in group {rule['group']!r} (groups: "
                             f"{', '.join(sorted(set(map(str, labels))))})")
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
        # (rounding per group could leave none: the calibration part gives way, then the test part)
        n_cal = max(0, min(n_cal, n - 1 - n_test))
        n_test = max(0, min(n_test, n - 1))
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


@dataclass
class GammaMethod:
    """One extrapolation-grade method of a model: per-frame γ (all frames) and its γ→error map."""

    gamma: List[np.ndarray]            # per frame, per atom (every frame of the study)
    error_map: Optional[metrics.ErrorMap]
    k_effective: Optional[float] = None  # mean over elements of the clusters actually built
    condition: Optional[float] = None    # worst condition number of the active-set matrices


def gamma_method_names(gcfg: Dict) -> List[str]:
    names = ["gamma_global"] if gcfg["global"] else []
    for k in gcfg["clusters"]:
        tag = "" if len(gcfg["clusters"]) == 1 else f"_k{k}"
        names += [f"gamma_local{tag}_{a}" for a in gcfg["assign"]]
    return names


class Model:
    """One trained ensemble, the active sets of its training atoms, and their scorers."""

    def __init__(self, ens: ens_mod.Ensemble, frames: Sequence[Atoms], train_idx: np.ndarray,
                 cal_idx: np.ndarray, basis: str = ""):
        self.ens = ens
        self.frames = frames
        self.train_idx = train_idx
        self.cal_idx = cal_idx
        self.basis = basis
        self._cache: Dict[int, tuple] = {}
        self.methods: Dict[str, Callable] = {"ensemble": self._ensemble_scores}
        self.gamma: Dict[str, GammaMethod] = {}
        self.notes: List[str] = []

    def evaluate(self, idx: Sequence[int], calibrated: bool = True):
        """(force error per atom, force σ per atom (calibrated, or the members' raw spread),
        structure index) on frames idx."""
        fe, fs, si = [], [], []
        for j, k in enumerate(idx):
            if k not in self._cache:
                r = self.ens.evaluate(self.frames[k], forces=True, calibrated=False)
                cal = replace(r, forces_std=self.ens._forces_std(r.forces_std, calibrated=True))
                self._cache[k] = (metrics.force_error_norms(r.forces, ens_mod._forces(self.frames[k])),
                                  r.force_uncertainty, cal.force_uncertainty)
            e, s_raw, s_cal = self._cache[k]
            fe.append(e)
            fs.append(s_cal if calibrated else s_raw)
            si.append(np.full(e.size, j))
        if not fe:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        return np.concatenate(fe), np.concatenate(fs), np.concatenate(si)

    def _ensemble_scores(self, idx) -> Scores:
        # ranks (Spearman, ROC-AUC, novelty thresholds) from the members' raw spread: the
        # calibration only rescales it, except where its factor is 0 and every σ is the floor
        _, raw, si = self.evaluate(idx, calibrated=False)
        _, cal, _ = self.evaluate(idx)
        return Scores(raw, si, len(idx), sigma=cal / np.sqrt(3.0))

    # ---------------------------------------------------------------- γ
    def add_gamma(self, potential, projections: Dict, gcfg: Dict, folder: str, error_map_dir: Optional[str],
                  progress: bool = False):
        """Build the global and clustered active sets of the training atoms, grade every frame."""
        from .activeset import ActiveSet, build_active_set

        train = np.zeros(len(self.frames), dtype=bool)
        train[self.train_idx] = True
        subset = {el: _rows_of(p, train) for el, p in projections.items()}
        builds = [("gamma_global", 1, ["global"])] if gcfg["global"] else []
        for k in gcfg["clusters"]:
            tag = "" if len(gcfg["clusters"]) == 1 else f"_k{k}"
            builds.append((f"gamma_local{tag}", k, gcfg["assign"]))
        for stem, k, assigns in builds:
            try:
                extra = {} if gcfg.get("rank_rtol") is None else {"rank_rtol": gcfg["rank_rtol"]}
                built = build_active_set(potential, None, clusters=k, mode=gcfg["mode"], projections=subset,
                                         progress=progress, **extra)
            except (InputError, ValueError, np.linalg.LinAlgError) as exc:
                self.notes.append(f"{stem}: no active set ({exc})")
                continue
            # (full mode: a .casi, which records the mode; an .asi of one-density elements cannot)
            as_asi = not built.clustered and k == 1 and built.mode == "linear"
            path = built.save(os.path.join(folder, f"{stem}.asi" if as_asi else f"{stem}.casi"))
            aset = ActiveSet.load(path, potential)
            digest = file_sha256(path)  # what the error maps below are fitted for
            k_eff = float(np.mean([s.k for s in built.elements.values()]))
            cond = float(max(m.condition for s in built.elements.values() for m in s.matrices))
            for a in assigns:
                name = stem if a == "global" else f"{stem}_{a}"
                if a != "global":
                    aset.assign = a
                gamma = [g for g, _ in aset.grade_projections(projections, [len(f) for f in self.frames])]
                gm = GammaMethod(gamma, None, None if a == "global" else k_eff, cond)
                self.gamma[name] = gm
                if len(self.cal_idx):
                    err, _, _ = self.evaluate(self.cal_idx)
                    g_cal = np.concatenate([gamma[j] for j in self.cal_idx])
                    try:
                        gm.error_map = metrics.ErrorMap.fit(g_cal, err, method=gcfg["error_map"])
                        gm.error_map.fitted_for = {"active_set_sha256": digest,
                                                   "assign": None if a == "global" else a}
                    except ValueError as exc:
                        self.notes.append(f"{name}: no error map ({exc})")
                    if gm.error_map is not None and error_map_dir:
                        gm.error_map.save(os.path.join(error_map_dir, f"{name}.json"))
                self.methods[name] = (lambda idx, n=name: self._gamma_scores(n, idx))

    def _gamma_scores(self, name: str, idx) -> Scores:
        gm = self.gamma[name]
        g = np.concatenate([gm.gamma[k] for k in idx]) if len(idx) else np.zeros(0)
        si = np.concatenate([np.full(len(self.frames[k]), j) for j, k in enumerate(idx)]) if len(idx) else \
            np.zeros(0, dtype=int)
        sigma = None if gm.error_map is None else gm.error_map(g) / _CHI3_MEAN
        return Scores(g, si, len(idx), sigma=sigma)


def _rows_of(p, keep: np.ndarray):
    """ElementProjections restricted to the rows of structures with keep[structure]."""
    from .potential import ElementProjections

    sel = keep[p.structure]
    return ElementProjections(p.values[sel], p.structure[sel], p.atom[sel], p.mode)


# ======================================================================= the study
class Study:
    def __init__(self, cfg: Dict, output_dir: str, progress: bool = True, workers: int = 2,
                 models_dir: Optional[str] = None, error_maps_dir: Optional[str] = None):
        self.cfg, self.out, self.progress, self.workers = cfg, output_dir, progress, workers
        self.models_dir = models_dir or os.path.join(output_dir, "models")
        self.error_maps_dir = error_maps_dir or os.path.join(output_dir, "error_maps")
        self.frames = read_structures(cfg["data"], progress=progress)
        self.labels = group_labels(self.frames, cfg)
        self.groups = sorted(set(self.labels))
        self.elements = cfg["elements"] or sorted({s for a in self.frames for s in a.get_chemical_symbols()})
        self.cutoff = float(cfg["cutoff"] or ens_mod.default_cutoff(self.frames, progress))  # of the preset bases
        where = f"study config '{cfg['_path']}'" if cfg.get("_path") else "study config"
        self._bb: Dict[str, object] = {}
        self._dm: Dict[str, tuple] = {}
        self._proj: Dict[str, tuple] = {}
        self._models: Dict[tuple, Model] = {}
        self.results: Dict[str, Dict[str, List[Dict]]] = {}
        self.plot_data: Dict[str, Dict] = {}
        self.notes: List[str] = []
        self.gamma_cfg = cfg["gamma"]
        het = cfg["heterogeneity"]
        self.homogeneous = het["homogeneous_group"] or max(self.groups, key=lambda g: np.sum(self.labels == g))
        if self.homogeneous not in self.groups:
            raise InputError(f"{where}: homogeneous_group '{self.homogeneous}' is not a group "
                             f"(groups: {', '.join(self.groups)})")
        self.bases = list(cfg["accuracy"]["bases"])
        self.main_basis = het["basis"] or self.bases[0]
        self.cases = []
        for c in cfg["novelty"]:
            train, novel = c.get("train_groups"), c.get("novel_groups")
            if train == "rest":
                if not novel:
                    raise InputError(f"{where}: novelty train_groups 'rest' needs novel_groups")
                train = [g for g in self.groups if g not in novel]
            train = list(train or [self.homogeneous])
            novel = list(novel or [g for g in self.groups if g not in train])
            for g in train + novel:
                if g not in self.groups:
                    raise InputError(f"{where}: novelty group '{g}' is not a group "
                                     f"(groups: {', '.join(self.groups)})")
            both = sorted(set(train) & set(novel))
            if both:  # the model's own training frames would be scored as novel
                raise InputError(f"{where}: novelty group(s) {', '.join(both)} both trained on and novel")
            if not novel:  # e.g. data of one group: a note, not an error
                self.notes.append(f"novelty case {c.get('name') or 'novelty'!r}: trained on every group, none is "
                                  f"left to be novel: not measured")
                continue
            bases = list(c.get("bases") or [c.get("basis") or self.main_basis])
            self.cases.append({"name": c.get("name") or "novelty", "train": train, "novel": novel, "bases": bases})
        # experiment keys and model folders are named by these: each must name one thing
        names = [c["name"] for c in self.cases]
        reserved = {"homogeneous", "heterogeneous", "accuracy", "all"}  # the study's own experiments and models
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & reserved))
        if clash:
            raise InputError(f"{where}: novelty case name(s) {', '.join(clash)} repeated or reserved ("
                             f"{', '.join(sorted(reserved))} name the study's own experiments): give each case its "
                             "own 'name'")
        for n in names:  # (they name files and folders too)
            if not n or "/" in n or "\\" in n or n.startswith("."):
                raise InputError(f"{where}: novelty case name {n!r}: names files, so it must not hold '/' or '\\' "
                                 "nor start with '.'")
        for listed in [self.bases] + [c["bases"] for c in self.cases]:
            labels = [basis_label(b) for b in listed]
            if len(set(labels)) != len(labels):
                raise InputError(f"{where}: bases {', '.join(map(str, listed))} share a name ({', '.join(labels)}): "
                                 f"experiments are keyed by it (give basis files distinct names)")
        # every basis built now (cheap), so a config pyace rejects fails before any fitting
        for b in dict.fromkeys(self.bases + [self.main_basis] + [b for c in self.cases for b in c["bases"]]):
            try:
                self._bb[b] = ens_mod.make_basis(b, self.elements, self.cutoff)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None

    # ---------------------------------------------------------------- fitting
    def design(self, basis: str):
        if basis not in self._dm:
            bb = self._bb[basis] if basis in self._bb else ens_mod.make_basis(basis, self.elements, self.cutoff)
            self._dm[basis] = (bb, ens_mod.design_matrix(bb, self.frames, {}, workers=self.workers,
                                                         progress=self.progress))
        return self._dm[basis]

    def projections(self, basis: str, member_path: str):
        """(Potential, projections of every frame) of a basis: they do not depend on the coefficients."""
        if basis not in self._proj:
            from .potential import Potential

            pot = Potential(member_path)
            self._proj[basis] = (pot, pot.projections(self.frames, mode=self.gamma_cfg["mode"], progress=self.progress))
        return self._proj[basis]

    def fit(self, basis: str, train_idx: np.ndarray, cal_idx: np.ndarray, seed: int, tag: str) -> Model:
        e = self.cfg["ensemble"]
        bb, dm = self.design(basis)
        train = [self.frames[k] for k in train_idx]
        e0 = ens_mod.reference_energies(train, dm.elements)
        local = ens_mod.resample(len(train_idx), int(e["members"]), bool(e["bootstrap"]), seed)
        samples = [train_idx[s] for s in local]
        coefs = ens_mod.fit_members(dm, samples, float(e["alpha"]), float(e["energy_weight"]), reference_energy=e0)
        folder = os.path.join(self.models_dir, f"{tag}-seed{seed}")
        ens = ens_mod.write_ensemble(bb, coefs, folder, e0, {"basis": basis, "cutoff": float(bb.cutoffmax),
                                                             "seed": seed,
                                                             "n_structures": len(train_idx),
                                                             "n_functions": int(dm.X.shape[1])})
        if len(cal_idx):
            cal = ens.calibrate([self.frames[k] for k in cal_idx], strict=False)
            ens.save_calibration(folder)
            if cal["forces"] == 0.0:
                self.notes.append(
                    f"{tag}, seed {seed}: the force σ calibration factor is 0 (the calibration frames' force "
                    f"errors, RMS {cal['rmse_forces']:.3g} eV/Å, are within the {cal['forces_floor']:g} eV/Å "
                    f"floor): every calibrated ensemble σ_F is the floor, so its calibration metrics describe "
                    f"a constant σ")
        m = Model(ens, self.frames, train_idx, cal_idx, basis)
        m.n_functions = int(dm.X.shape[1])
        if gamma_method_names(self.gamma_cfg):
            pot, proj = self.projections(basis, ens.paths[0])
            m.add_gamma(pot, proj, self.gamma_cfg, folder, os.path.join(self.error_maps_dir, f"{tag}-seed{seed}"),
                        self.progress)
            for n in m.notes:
                self.notes.append(f"{tag}, seed {seed}: {n}")
        return m

    def model(self, basis: str, groups: Sequence[str], split: Dict, seed: int, tag: str) -> Model:
        """The model trained on the training part of `groups` (calibrated on their calibration part),
        fitted once per (basis, groups, seed)."""
        key = (basis, tuple(sorted(groups)), seed)
        if key not in self._models:
            sel = lambda idx: idx[np.isin(self.labels[idx], list(groups))]  # noqa: E731
            self._models[key] = self.fit(basis, sel(split["train"]), sel(split["calibration"]), seed,
                                         f"{basis_label(basis)}-{tag}")
        return self._models[key]

    # ---------------------------------------------------------------- scoring
    def score(self, model: Model, test_idx, cal_idx, known_idx=None, novel_idx=None) -> Dict[str, Dict]:
        """Every method's metrics: correlation and calibration on test_idx; novelty on known vs novel."""
        err, _, _ = model.evaluate(test_idx)
        out, alarms = {}, {}
        for name, scorer in model.methods.items():
            s = scorer(test_idx)
            row = {k: None for k in METRIC_KEYS}
            row["spearman"] = metrics.spearman(s.atom, err)
            row["pearson"] = metrics.pearson(s.atom, err)
            row["force_rmse"] = float(np.sqrt(np.mean(err ** 2)))
            row["n_functions"] = float(getattr(model, "n_functions", np.nan))
            if s.sigma is not None and np.all(s.sigma > 0):
                row["miscalibration_area"] = metrics.miscalibration_area(err, s.sigma, dof=3)
                row["z_rms"] = metrics.z_rms(err, s.sigma, dof=3)
                row["ence"] = metrics.reliability_curve(err, s.sigma, dof=3).ence
                row["map_spearman"] = metrics.spearman(s.sigma, err)
            if name == "ensemble" and model.ens.calibration.get("fitted"):
                row["calibration_factor"] = float(model.ens.calibration["forces"])
                row["calibration_floor"] = float(model.ens.calibration.get("forces_floor", 0.0))
            if name in model.gamma:
                gm = model.gamma[name]
                row["k_effective"] = gm.k_effective
                row["condition"] = gm.condition
            if known_idx is not None and len(known_idx) and novel_idx is not None and len(novel_idx):
                k = scorer(known_idx).per_structure()
                n = scorer(novel_idx).per_structure()
                thr = float(np.quantile(scorer(cal_idx).per_structure(), 0.95)) if len(cal_idx) else None
                d = metrics.novelty_detection(k, n, thr)
                row.update(roc_auc=d.roc_auc, pr_auc=d.pr_auc, detection_rate=d.detection_rate,
                           false_alarm_rate=d.false_alarm_rate)
                if thr is not None:
                    alarms[name] = metrics.above(k, thr)
            out[name] = row
        if "ensemble" in alarms and "gamma_global" in alarms:
            # the two methods' false alarms on the same structures (paired: McNemar's discordant
            # pairs), summed over splits by summary()
            g, e = alarms["gamma_global"], alarms["ensemble"]
            out["gamma_global"].update(count_alarms_gamma_only=float(np.sum(g & ~e)),
                                       count_alarms_ensemble_only=float(np.sum(e & ~g)))
        return out

    def _record(self, experiment: str, scores: Dict[str, Dict]):
        for method, row in scores.items():
            self.results.setdefault(experiment, {}).setdefault(method, []).append(row)

    # ---------------------------------------------------------------- protocol
    def run(self) -> Dict:
        seeds = list(self.cfg["seeds"])
        n_tasks = len(seeds) * (len(self.bases) + 1 + sum(len(c["bases"]) for c in self.cases))
        bar = progress_counter(n_tasks, self.progress, unit="fit")
        for seed in seeds:
            split = stratified_split(self.labels, self.cfg["test_fraction"], self.cfg["calibration_fraction"], seed)
            cal, te = split["calibration"], split["test"]
            in_group = lambda idx, groups: idx[np.isin(self.labels[idx], groups)]  # noqa: E731
            self._models = {}
            # (a) accuracy sweep, heterogeneous training on all groups
            for basis in self.bases:
                bar.set_description(f"seed {seed}: accuracy {basis_label(basis)}")
                m = self.model(basis, self.groups, split, seed, "all")
                self._record(f"accuracy/{basis_label(basis)}", self.score(m, te, cal))
                if seed == seeds[0]:
                    err, sig, _ = m.evaluate(te)
                    _, raw, _ = m.evaluate(te, calibrated=False)
                    self.plot_data.setdefault("parity", {})[basis_label(basis)] = (sig, err, raw)
                bar.update()
            # (b) homogeneous vs heterogeneous, same test frames (all groups)
            bar.set_description(f"seed {seed}: heterogeneity")
            hom_cal = in_group(cal, [self.homogeneous])
            others = te[~np.isin(self.labels[te], [self.homogeneous])]
            het = self.model(self.main_basis, self.groups, split, seed, "all")
            hom = self.model(self.main_basis, [self.homogeneous], split, seed, "homogeneous")
            self._record("heterogeneous", self.score(het, te, cal))
            self._record("homogeneous", self.score(hom, te, hom_cal, in_group(te, [self.homogeneous]), others))
            if seed == seeds[0]:
                self.plot_data["reliability"] = {}
                for name, m in (("homogeneous", hom), ("heterogeneous", het)):
                    err, sig, _ = m.evaluate(te)
                    self.plot_data["reliability"][f"{name}, ensemble"] = (err, sig / np.sqrt(3.0))
                    for meth in m.gamma:
                        s = m.methods[meth](te)
                        # global γ and local γ (nearest assignment), for every k studied
                        if (s.sigma is not None and np.all(s.sigma > 0)
                                and (meth == "gamma_global" or (meth.startswith("gamma_local")
                                                                and meth.endswith("_nearest")))):
                            self.plot_data["reliability"][f"{name}, {meth}"] = (err, s.sigma)
            bar.update()
            # (c) novelty detection of held-out groups, per case and basis
            for case in self.cases:
                known = in_group(te, case["train"])
                novel = np.nonzero(np.isin(self.labels, case["novel"]))[0]
                n_cal = in_group(cal, case["train"])
                tag = "homogeneous" if case["train"] == [self.homogeneous] else \
                    ("all" if sorted(case["train"]) == self.groups else case["name"])
                for basis in case["bases"]:
                    bar.set_description(f"seed {seed}: {case['name']} {basis_label(basis)}")
                    m = self.model(basis, case["train"], split, seed, tag)
                    key = novelty_key(case, basis)
                    self._record(key, self.score(m, np.concatenate([known, novel]), n_cal, known, novel))
                    if len(case["novel"]) > 1:
                        for g in case["novel"]:
                            nov_g = np.nonzero(self.labels == g)[0]
                            self._record(f"{key}/{g}", self.score(m, nov_g, n_cal, known, nov_g))
                    if seed == seeds[0] and basis == case["bases"][-1] and len(known) and len(novel):
                        self.plot_data.setdefault("roc", {})[case["name"]] = {
                            meth: (sc(known).per_structure(), sc(novel).per_structure())
                            for meth, sc in m.methods.items()}
                    bar.update()
        bar.close()
        self._models = {}
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
                    if k.startswith("count_"):  # counts add up over splits
                        agg[k] = float(np.sum(vals)) if vals else None
                        continue
                    agg[k] = float(np.mean(vals)) if vals else None
                    if k not in ("n_functions",):
                        agg[k + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
                    given = [r.get(k) for r in rows if r.get(k) is not None]
                    if vals and len(vals) < len(given):  # splits where it was NaN (e.g. a constant σ)
                        agg[k + "_n"] = len(vals)
                out[exp][method] = agg
        return out

    # ---------------------------------------------------------------- report
    def write(self, summary: Dict) -> Dict[str, str]:
        os.makedirs(self.out, exist_ok=True)
        metrics._write_text_atomic(os.path.join(self.out, "metrics.json"), json.dumps(summary, indent=1))
        pngs = {}
        split = self._plotted_split()
        for basis, (sig, err, raw) in self.plot_data.get("parity", {}).items():
            pngs[f"parity_{basis}"] = metrics.plot_parity(
                sig, err, os.path.join(self.out, f"parity_{basis}.png"), xlabel="ensemble σ_F (eV/Å)",
                ylabel="|ΔF| (eV/Å)", title=f"{basis} basis, Spearman {metrics.spearman(raw, err):.2f}{split}")
        rel = self.plot_data.get("reliability", {})
        if rel:
            pngs["reliability"] = metrics.plot_reliability(
                {k: metrics.reliability_curve(e, s, dof=3) for k, (e, s) in rel.items()},
                os.path.join(self.out, "reliability.png"), title=f"homogeneous vs heterogeneous training{split}")
            pngs["calibration"] = metrics.plot_calibration(
                {k: metrics.calibration_curve(e, s, dof=3) for k, (e, s) in rel.items()},
                os.path.join(self.out, "calibration.png"), title=f"calibration{split}")
        for j, case in enumerate(self.cases):
            scores = self.plot_data.get("roc", {}).get(case["name"])
            if scores:
                png = "roc.png" if j == 0 else f"roc_{case['name']}.png"
                pngs[png[:-4]] = metrics.plot_roc(
                    scores, os.path.join(self.out, png),
                    title=f"{case['name']} ({basis_label(case['bases'][-1])}): novel "
                          f"{', '.join(case['novel'])}{split}")
        metrics._write_text_atomic(os.path.join(self.out, "report.md"), self._markdown(summary, pngs))
        # an earlier run's plots that this run did not draw (other bases or cases) would pass for
        # this run's: the study's own names only, other files stay
        drawn = {os.path.basename(p) for p in pngs.values()}
        for name in os.listdir(self.out):
            ours = name in ("reliability.png", "calibration.png", "roc.png") or (
                name.endswith(".png") and name.startswith(("parity_", "roc_")))
            if ours and name not in drawn and os.path.isfile(os.path.join(self.out, name)):
                os.remove(os.path.join(self.out, name))
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
                 f"{'bootstrap' if cfg['ensemble']['bootstrap'] else 'subsampling'}, cutoff {self._cutoff_text()} Å.",
                 "", "Per-atom force error |ΔF| vs per-atom uncertainty; miscalibration area on the σ "
                 "calibrated on held-out frames of the training distribution (dof 3); novelty score = max "
                 "over a structure's atoms. Values: mean ± std over splits (\"n of N splits\" where the "
                 "others gave no value, such as a Spearman of a constant σ)."
                 + (f" Plots show the first split (seed {cfg['seeds'][0]})." if len(cfg["seeds"]) > 1 else ""),
                 ""]
        lines += [f"> {n}" for n in self.notes] + ([""] if self.notes else [])
        sections = [
            ("(a) Accuracy sweep (trained on all groups)", [e for e in summary if e.startswith("accuracy/")]),
            (f"(b) Homogeneous ({self.homogeneous}) vs heterogeneous (all groups) training, "
             f"basis {basis_label(self.main_basis)}, test on all groups", ["homogeneous", "heterogeneous"]),
        ]
        for case in self.cases:
            exps = []
            for b in case["bases"]:
                key = novelty_key(case, b)
                exps += [key] + ([f"{key}/{g}" for g in case["novel"]] if len(case["novel"]) > 1 else [])
            sections.append((f"(c) Novelty detection '{case['name']}': trained on {', '.join(case['train'])}, "
                             f"novel {', '.join(case['novel'])}", exps))
        cols = ["spearman", "pearson", "miscalibration_area", "z_rms", "roc_auc", "pr_auc", "detection_rate",
                "force_rmse", "k_effective"]
        for title, exps in sections:
            lines += [f"## {title}", "", "| experiment | method | " + " | ".join(cols) + " |",
                      "|" + "---|" * (len(cols) + 2)]
            for exp in exps:
                for method, agg in summary.get(exp, {}).items():
                    cells = [_fmt(agg.get(c), agg.get(c + "_std"), agg.get(c + "_n"), agg.get("n_splits"))
                             for c in cols]
                    lines.append(f"| {exp} | {method} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += self._sweep_tables(summary)
        lines += claims_markdown(summary, self.cases, self.homogeneous)
        for key, path in pngs.items():
            lines += [f"![{key}]({os.path.basename(path)})", ""]
        return "\n".join(lines)


    def _plotted_split(self) -> str:
        """What the plots show, for their titles: the first split only (the tables average all)."""
        seeds = list(self.cfg["seeds"])
        return "" if len(seeds) == 1 else f" (split 1 of {len(seeds)}, seed {seeds[0]})"

    def _cutoff_text(self) -> str:
        """The cutoff(s) the fitted bases have (a basis config's rcut, else the config's cutoff)."""
        cutoffs = sorted({round(float(bb.cutoffmax), 6) for bb in self._bb.values()}) or [self.cutoff]
        return ", ".join(f"{c:g}" for c in cutoffs)

    def _sweep_tables(self, summary: Dict) -> List[str]:
        """One line per basis: novelty ROC-AUC of every method (mean ± std over splits)."""
        lines = []
        for case in self.cases:
            if len(case["bases"]) < 2:
                continue
            keys = [novelty_key(case, b) for b in case["bases"]]
            methods = list(summary.get(keys[0], {}))
            lines += [f"### ROC-AUC over basis sizes, '{case['name']}' (novel {', '.join(case['novel'])})", "",
                      "| basis | n functions | " + " | ".join(methods) + " | k effective |",
                      "|" + "---|" * (len(methods) + 3)]
            for b, key in zip(case["bases"], keys):
                row = summary.get(key, {})
                nf = next((r.get("n_functions") for r in row.values() if r.get("n_functions")), None)
                ks = [f"{row[m]['k_effective']:.2g}" for m in methods
                      if m.endswith("_nearest") and row.get(m, {}).get("k_effective") is not None]
                lines.append(f"| {basis_label(b)} | {'' if nf is None else int(nf)} | "
                             + " | ".join(_fmt(row.get(m, {}).get("roc_auc"), row.get(m, {}).get("roc_auc_std"),
                                               row.get(m, {}).get("roc_auc_n"), row.get(m, {}).get("n_splits"))
                                          for m in methods) + f" | {', '.join(ks)} |")
            lines.append("")
        return lines


def claims_markdown(summary: Dict, cases: Sequence[Dict], homogeneous: str) -> List[str]:
    """The paper's three claims checked on a study's summary, each with the numbers it rests on
    (markdown lines; the rules are in the module docstring). cases: the novelty cases (name,
    train, novel, bases); homogeneous: the group of the homogeneous training set."""
    def val(exp, method, key):
        return summary.get(exp, {}).get(method, {}).get(key)

    local = [m for m in next(iter(summary.values()), {}) if m.startswith("gamma_local") and m.endswith("nearest")]
    local = next((m for m in local if "kauto" in m), local[0] if local else None)
    methods = [(m, lab) for m, lab in (("ensemble", "ensemble σ"), ("gamma_global", "global γ"),
                                       (local, "local γ (nearest)")) if m]
    verdict = {(True, True): "holds", (True, False): "partly", (False, True): "partly", (False, False): "does not hold"}
    hetero = [c for c in cases if len(c["train"]) > 1]
    lines = ["## The paper's claims on this data", ""]

    # (1) accuracy: least vs most accurate basis of the sweep, and every novelty sweep
    acc = sorted((e for e in summary if e.startswith("accuracy/") and val(e, "ensemble", "force_rmse")),
                 key=lambda e: -val(e, "ensemble", "force_rmse"))
    sweeps = []
    for c in cases:
        keys = sorted((novelty_key(c, b) for b in c["bases"]),
                      key=lambda k: val(k, "ensemble", "n_functions") or 0)
        if len(keys) > 1:
            sweeps.append((c["name"], keys[0], keys[-1]))
    if len(acc) < 2:
        lines += ["1. **More accurate models → better correlation and novelty detection**: not measured "
                  "(one basis in the accuracy sweep).", ""]
    else:
        lo, hi = acc[0], acc[-1]
        lines.append(f"1. **More accurate models → better correlation and novelty detection.** Force RMSE "
                     f"{val(lo, 'ensemble', 'force_rmse'):.3f} → {val(hi, 'ensemble', 'force_rmse'):.3f} eV/Å "
                     f"({int(val(lo, 'ensemble', 'n_functions'))} → {int(val(hi, 'ensemble', 'n_functions'))} "
                     "functions).")
        for m, lab in methods:
            a, b = val(lo, m, "spearman"), val(hi, m, "spearman")
            if a is None or b is None:
                continue
            nov = [(name, val(k0, m, "roc_auc"), val(k1, m, "roc_auc")) for name, k0, k1 in sweeps]
            nov = [x for x in nov if x[1] is not None and x[2] is not None]
            if not nov:  # the claim is about both: half of it cannot hold or fail alone
                lines.append(f"   - {lab}: correlation **{'better' if b > a else 'not better'}**, novelty "
                             f"detection not measured (no novelty case over several bases; Spearman {a:.2f} → "
                             f"{b:.2f})")
                continue
            better_nov = all(y >= x for _, x, y in nov)
            text = "; ".join(f"'{name}' ROC-AUC {x:.3f} → {y:.3f}" for name, x, y in nov)
            lines.append(f"   - {lab}: **{verdict[(b > a, better_nov)]}** (Spearman {a:.2f} → {b:.2f}; {text})")
        lines.append("")

    # (2) calibration and novelty with homogeneous vs heterogeneous training
    lines.append(f"2. **Calibrated on homogeneous data, under-predicting and missing novelty beyond it; "
                 f"D-optimality the more conservative.** Held-out RMS error/σ on the test frames of all "
                 f"groups (1 = calibrated, > 1.25 under-predicted), trained on {homogeneous} only vs "
                 f"on all groups; novelty ROC-AUC trained on {homogeneous} only vs heterogeneous (the novel "
                 f"groups differ between the two, so the difficulty of the task enters the comparison too):")
    for m, lab in methods:
        zh, za = val("homogeneous", m, "z_rms"), val("heterogeneous", m, "z_rms")
        if zh is None or za is None:
            continue
        if m == "ensemble" and (val("homogeneous", m, "calibration_factor") is None
                                or val("heterogeneous", m, "calibration_factor") is None):
            lines.append(f"   - {lab}: not measured (σ not calibrated: no calibration frames, "
                         f"calibration_fraction 0 or groups too small)")
            continue
        parts = [f"error/σ {zh:.3g} vs {za:.2f}"]
        aucs = [(c["name"], val(novelty_key(c, c["bases"][0]), m, "roc_auc")) for c in hetero]
        aucs = [x for x in aucs if x[1] is not None]
        hom_auc = val("homogeneous", m, "roc_auc")
        if hom_auc is not None and aucs:
            missed = "yes" if any(a < hom_auc for _, a in aucs) else "no"
            parts.append(f"ROC-AUC {hom_auc:.3f} vs " + ", ".join(f"{a:.3f} ('{n}')" for n, a in aucs))
        else:  # no novelty case trained on several groups (or none on one): nothing to compare
            missed = "not measured"
        lines.append(f"   - {lab}: under-predicts beyond its training data **{'yes' if zh > 1.25 else 'no'}**, "
                     f"calibrated within it **{'yes' if 0.75 <= za <= 1.25 else 'no'}**, misses novelty after "
                     f"heterogeneous training **{missed}** ({'; '.join(parts)})")
    fe, fg = val("homogeneous", "ensemble", "false_alarm_rate"), val("homogeneous", "gamma_global", "false_alarm_rate")
    only_g = val("homogeneous", "gamma_global", "count_alarms_gamma_only")
    only_e = val("homogeneous", "gamma_global", "count_alarms_ensemble_only")
    if fe is not None and fg is not None and only_g is not None and only_e is not None:
        # both thresholds are 95th percentiles of in-distribution scores, so both rates are near 5 %
        # by construction: only a difference beyond counting noise says one method is more
        # conservative. The alarms fall on the same structures: McNemar's exact test on the
        # structures only one of the two flags
        from scipy.stats import binomtest

        b, c = int(only_g), int(only_e)
        if b + c:
            p_more = binomtest(b, b + c, 0.5, alternative="greater").pvalue
            p_less = binomtest(b, b + c, 0.5, alternative="less").pvalue
        else:
            p_more = p_less = 1.0
        more = "yes" if p_more < 0.05 else ("no" if p_less < 0.05 else "not resolved")
        lines.append(f"   - D-optimality more conservative: **{more}** (false alarms at the 95 % threshold of the "
                     f"calibration frames, {homogeneous}-only model: global γ {fg:.0%}, ensemble {fe:.0%}; "
                     f"in-distribution test structures over all splits flagged by global γ only {b}, by the "
                     f"ensemble only {c}; exact McNemar test p = {min(p_more, p_less):.2g})")
    lines.append("")

    # (3) local vs global γ on heterogeneous training, every case and basis
    pairs = [(c["name"], k, val(k, local, "roc_auc"), val(k, "gamma_global", "roc_auc"))
             for c in hetero for k in (novelty_key(c, b) for b in c["bases"])]
    pairs = [p for p in pairs if p[2] is not None and p[3] is not None]
    open_ = [p for p in pairs if p[3] < SATURATED_AUC]   # where global γ leaves something to restore
    if not local or not open_:
        lines += ["3. **Local D-optimality restores novelty detection on heterogeneous data**: not measured"
                  + (" (global γ already detects every heterogeneous case)" if pairs else "") + ".", ""]
    else:
        wins = sum(a > g for _, _, a, g in open_)
        v = "holds" if wins == len(open_) else ("partly" if wins else "does not hold")
        sat = [k for _, k, _, g in pairs if g >= SATURATED_AUC]
        lines += [f"3. **Local D-optimality restores novelty detection on heterogeneous data: {v}** "
                  f"(local above global γ in {wins} of {len(open_)}; ROC-AUC local / global: "
                  + ", ".join(f"{k} {a:.3f} / {g:.3f}" for _, k, a, g in open_) + ")"
                  + (f"; left out, global γ ≥ {SATURATED_AUC} already: {', '.join(sat)}" if sat else "")
                  + ".", ""]
    return lines


def _fmt(v, sd=None, n=None, of=None) -> str:
    """A mean (± std) over splits; "(n of N splits)" when only n of them gave a value."""
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "") + (f" ({n} of {of} splits)" if n else "")


def run_study(config, output_dir: str, progress: bool = True, workers: int = 2) -> Dict:
    """Run the study described by ``config`` (a YAML path or a dict); write report.md, metrics.json, PNGs."""
    ens_mod._require_pyace("the study (it fits linear ACE ensembles)")
    import shutil
    import tempfile

    cfg = load_config(config)
    check_output(output_dir, folder=True)
    keep = bool(cfg["keep_models"])
    # models that are not kept live in a temporary folder inside DIR, so an earlier run's kept
    # models/ stay; the error maps are written beside DIR/error_maps and replace an earlier run's
    # only once the report is written (an interrupted run leaves the earlier run whole); SIGTERM
    # ends the run as an exception does, so the temporary folders go too
    with sigterm_as_exit():
        os.makedirs(output_dir, exist_ok=True)
        models = os.path.join(output_dir, "models") if keep else tempfile.mkdtemp(prefix=".aceuq-models-",
                                                                                  dir=output_dir)
        maps = tempfile.mkdtemp(prefix=".aceuq-error-maps-", dir=output_dir)
        try:
            study = Study(cfg, output_dir, progress, workers, models_dir=models, error_maps_dir=maps)
            summary = study.run()
            study.write(summary)
            final, old = os.path.join(output_dir, "error_maps"), None
            if os.path.exists(final):  # moved aside first: a rename cannot replace a folder
                old = tempfile.mkdtemp(prefix=".aceuq-old-error-maps-", dir=output_dir)
                os.rename(final, os.path.join(old, "error_maps"))
            os.rename(maps, final)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(maps, ignore_errors=True)
            if not keep:
                shutil.rmtree(models, ignore_errors=True)
    return summary
