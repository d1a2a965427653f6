"""How good is an uncertainty? Compare an uncertainty score with the true error.

Conventions (used by ``ensemble``, ``study`` and the CLIs):

- **per-atom force error**: ``|F_pred,i - F_ref,i|`` (Euclidean norm, eV/Å);
- **per-structure energy error**: ``|E_pred - E_ref| / n_atoms`` (eV/atom);
- an **uncertainty** is any score that should grow with the error (ensemble σ, γ, ...).
  Correlation and novelty metrics need only that. Calibration metrics need a *σ-like*
  uncertainty in the units of the error: ``sigma`` is the standard deviation of each Gaussian
  error *component*, and the error is the norm of ``dof`` such components (``dof=3`` for a
  force vector, ``dof=1`` for an energy), so ``error / sigma`` follows a χ distribution with
  ``dof`` degrees of freedom when the uncertainty is perfectly calibrated.

Everything here is plain numpy/scipy/scikit-learn; plots use matplotlib's Agg backend.
"""
from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

PathLike = os.PathLike


# ---------------------------------------------------------------- true errors
def force_error_norms(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-atom force error |F_pred - F_ref| (n_atoms,) from (n_atoms, 3) arrays."""
    pred = np.asarray(pred, dtype=float).reshape(-1, 3)
    ref = np.asarray(ref, dtype=float).reshape(-1, 3)
    if pred.shape != ref.shape:
        raise ValueError(f"force arrays differ in shape: {pred.shape} vs {ref.shape}")
    return np.linalg.norm(pred - ref, axis=1)


def energy_errors_per_atom(pred: Sequence[float], ref: Sequence[float], n_atoms: Sequence[int]) -> np.ndarray:
    """Per-structure |E_pred - E_ref| / n_atoms."""
    pred, ref, n = (np.asarray(x, dtype=float) for x in (pred, ref, n_atoms))
    return np.abs(pred - ref) / n


def max_per_structure(values: np.ndarray, structure_index: np.ndarray, n_structures: Optional[int] = None) -> np.ndarray:
    """Maximum of per-atom values within each structure (a structure's novelty score)."""
    values = np.asarray(values, dtype=float)
    structure_index = np.asarray(structure_index, dtype=int)
    n = int(structure_index.max()) + 1 if n_structures is None else n_structures
    out = np.full(n, -np.inf)
    np.maximum.at(out, structure_index, values)
    return out


# ---------------------------------------------------------------- correlation
def _finite_pair(x, y, keep_inf: bool = False):
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"arrays differ in length: {x.size} vs {y.size}")
    ok = ~(np.isnan(x) | np.isnan(y)) if keep_inf else np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def spearman(uncertainty, error) -> float:
    """Spearman rank correlation (nan when either input is constant or shorter than 3). Pairs
    with a NaN are left out; ±inf takes part, ranked at its end (an overflowed γ is the largest)."""
    from scipy.stats import spearmanr

    u, e = _finite_pair(uncertainty, error, keep_inf=True)
    if u.size < 3 or np.unique(u).size < 2 or np.unique(e).size < 2:
        return float("nan")
    return float(spearmanr(u, e).statistic)


def pearson(uncertainty, error, log: bool = False) -> float:
    """Pearson correlation; with ``log=True`` of log-values (uncertainties and errors span decades)."""
    from scipy.stats import pearsonr

    u, e = _finite_pair(uncertainty, error)
    if log:
        ok = (u > 0) & (e > 0)
        u, e = np.log(u[ok]), np.log(e[ok])
    if u.size < 3 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(pearsonr(u, e).statistic)


# ---------------------------------------------------------------- calibration
def calibration_curve(errors, sigma, dof: int = 1, n_levels: int = 99):
    """Expected vs observed coverage of the σ-based confidence regions.

    For each expected proportion p (``n_levels`` values in (0, 1)), the region of a perfectly
    calibrated model is ``error <= sigma * chi_dof.ppf(p)`` (for ``dof=1`` the central interval
    of N(0, σ²)); the observed proportion is the fraction of errors inside it.
    Returns (expected, observed).
    """
    from scipy.stats import chi

    e, s = _finite_pair(errors, sigma)
    e = np.abs(e)
    if e.size == 0:
        raise ValueError("no finite (error, sigma) pairs")
    if np.any(s <= 0):
        raise ValueError("sigma must be positive")
    expected = np.linspace(0, 1, n_levels + 2)[1:-1]
    z = np.sort(e / s)
    observed = np.searchsorted(z, chi.ppf(expected, dof), side="right") / z.size
    return expected, observed


def miscalibration_area(errors, sigma, dof: int = 1, n_levels: int = 99) -> float:
    """Miscalibration area (Tran et al., Mach. Learn.: Sci. Technol. 1, 025006 (2020);
    Uncertainty Toolbox): the area between the calibration curve — observed vs expected
    proportion of errors inside the σ-based confidence regions, see :func:`calibration_curve`
    — and the diagonal, ``∫₀¹ |p_obs(p) - p| dp``. 0 is perfect calibration; 0.5 is the
    worst possible (every error inside, or outside, every region).
    """
    expected, observed = calibration_curve(errors, sigma, dof, n_levels)
    x = np.concatenate([[0.0], expected, [1.0]])
    y = np.abs(np.concatenate([[0.0], observed - expected, [0.0]]))
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))


@dataclass
class ReliabilityCurve:
    """Error-based calibration (Levi et al., Sensors 22, 5540 (2022)): atoms binned by
    uncertainty; per bin, the root mean uncertainty (RMV) and the RMS error (RMSE).
    Points on the diagonal mean calibrated; ``ence`` = mean |RMV - RMSE| / RMV."""

    rmv: np.ndarray
    rmse: np.ndarray
    count: np.ndarray
    ence: float


def reliability_curve(errors, uncertainty, n_bins: int = 10, dof: int = 1) -> ReliabilityCurve:
    """Bin by uncertainty quantiles; compare RMS error with RMS of the predicted error scale.

    ``uncertainty`` is per-component σ (as in :func:`miscalibration_area`); the predicted RMS
    of an error made of ``dof`` components is σ·√dof, which is what ``rmv`` reports.
    """
    e, u = _finite_pair(errors, uncertainty)
    order = np.argsort(u, kind="stable")
    bins = [b for b in np.array_split(order, min(n_bins, max(1, u.size))) if b.size]
    rmv = np.array([np.sqrt(np.mean(u[b] ** 2) * dof) for b in bins])
    rmse = np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins])
    count = np.array([b.size for b in bins])
    with np.errstate(divide="ignore", invalid="ignore"):
        ence = float(np.mean(np.abs(rmv - rmse) / rmv))
    return ReliabilityCurve(rmv, rmse, count, ence)


FORCE_RESOLUTION = 1e-4  # eV/Å: force errors below this are at the precision of DFT reference forces


def calibration_factor(errors, sigma, dof: int = 1, floor: float = 0.0) -> float:
    """Scale a such that σ_cal = sqrt((a·σ)² + floor²) is calibrated in the mean-square sense:
    mean((e / σ_cal)²) = dof. With floor = 0 the scalar factor sqrt(mean((e/σ)²)/dof), which is
    also the maximum-likelihood scale of a Gaussian with per-component std a·σ.

    Why a floor: the scalar factor is the mean of (e/σ)², so it is set by the atoms with the
    smallest σ. Atoms whose forces vanish by symmetry (perfect or homogeneously strained
    crystals) have an ensemble σ at rounding level (1e-10 eV/Å and below) and an "error" that is
    the precision of the reference forces (~1e-7 eV/Å): their ratio is noise, yet on mlearn Si it
    makes up most of the sum (96–99 % at 1000 functions), and the factor, and the held-out
    error/σ, move by 2× between random splits. A floor at the resolution of the reference
    forces (:data:`FORCE_RESOLUTION`, far below any error that matters) gives those atoms
    σ_cal ≈ floor; the result does not depend on its value between 1e-6 and 1e-3 eV/Å there.
    The left side decreases with a: a root search in log a. Atoms with σ = 0 take no part (no a
    acts on them). Returns 0 when the floor alone gives mean((e/floor)²) <= dof."""
    e, s = _finite_pair(errors, sigma)
    ok = s > 0  # no scale acts on atoms with sigma = 0: they take no part
    if not np.any(ok):
        raise ValueError("no positive sigma to calibrate")
    e2, s2 = e[ok] ** 2, s[ok] ** 2
    if floor <= 0:
        return float(np.sqrt(np.mean(e2 / s2) / dof))
    f2 = float(floor) ** 2

    def excess(log_a):
        return float(np.mean(e2 / (np.exp(2.0 * log_a) * s2 + f2)) / dof - 1.0)

    if excess(-700.0) <= 0:  # the floor alone covers the errors
        return 0.0
    from scipy.optimize import brentq

    hi = float(np.log(np.sqrt(np.mean(e2 / s2) / dof)))  # the scale without floor: excess <= 0 there
    if excess(hi) >= 0:  # a floor too small to matter (equal up to rounding)
        return float(np.exp(hi))
    return float(np.exp(brentq(excess, -700.0, hi, xtol=1e-10)))


def z_rms(errors, sigma, dof: int = 1) -> float:
    """RMS of error/σ per component: 1 for a calibrated σ (the 'error/σ ≈ 1' check)."""
    e, s = _finite_pair(errors, sigma)
    return float(np.sqrt(np.mean((e / s) ** 2) / dof))


class ErrorMap:
    """Monotone map from an uncertainty score (γ, σ, ...) to the expected error.

    ``method='isotonic'``: isotonic regression of the error on log(score) (non-decreasing,
    flat beyond the fitted range); ``method='power'``: least squares of log(error) on
    log(score), error = exp(a)·score^b, corrected for the log-normal bias so it predicts the
    mean. Saved as JSON (:meth:`save`), so a CLI can report γ in eV/Å without scikit-learn.
    """

    def __init__(self, method: str = "isotonic", x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None,
                 a: float = 0.0, b: float = 1.0, quantity: str = "force error norm", units: str = "eV/A",
                 score: str = "gamma"):
        if method not in ("isotonic", "power"):
            raise ValueError("method must be 'isotonic' or 'power'")
        self.method, self.a, self.b = method, float(a), float(b)
        self.x = None if x is None else np.asarray(x, dtype=float)  # log(score) knots
        self.y = None if y is None else np.asarray(y, dtype=float)
        self.quantity, self.units, self.score = quantity, units, score
        # what the map was fitted for, when known: {"active_set_sha256": ..., "assign": ...}
        self.fitted_for: Optional[Dict[str, Optional[str]]] = None

    @classmethod
    def fit(cls, score, error, method: str = "isotonic", **meta) -> "ErrorMap":
        s, e = _finite_pair(score, error)
        ok = s > 0
        s, e = s[ok], np.abs(e[ok])
        if s.size < 2:
            raise ValueError("need at least two positive scores to fit an error map")
        ls = np.log(s)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(ls, e)
            return cls("isotonic", x=iso.X_thresholds_, y=iso.y_thresholds_, **meta)
        pos = e > 0
        if len(np.unique(ls[pos])) < 2:
            raise ValueError("need positive errors at two or more distinct scores to fit a power-law error map")
        b, a = np.polyfit(ls[pos], np.log(e[pos]), 1)
        resid = np.log(e[pos]) - (a + b * ls[pos])
        return cls("power", a=a + 0.5 * float(np.var(resid)), b=b, **meta)

    def __call__(self, score) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        ls = np.log(np.maximum(s, np.finfo(float).tiny))
        if self.method == "isotonic":
            return np.interp(ls, self.x, self.y)
        return np.exp(self.a + self.b * ls)

    def to_dict(self) -> Dict:
        """The JSON form that save() writes and from_dict() reads back."""
        d = {"format": "aceuq-error-map", "version": 1, "method": self.method, "score": self.score,
             "quantity": self.quantity, "units": self.units}
        if self.method == "isotonic":
            d.update(log_score=self.x.tolist(), error=self.y.tolist())
        else:
            d.update(a=self.a, b=self.b)
        if self.fitted_for:
            d["fitted_for"] = dict(self.fitted_for)
        return d

    @classmethod
    def from_dict(cls, d: Dict, source: str = "error map") -> "ErrorMap":
        """The map of a :meth:`to_dict` mapping, validated: one :class:`aceuq.InputError` (a
        ValueError) naming ``source`` and the key otherwise, never a failure at evaluation."""
        from ._core import InputError
        from .data import check_version

        if not isinstance(d, dict) or d.get("format") != "aceuq-error-map":
            what = f"format {d.get('format')!r}" if isinstance(d, dict) else f"a JSON {type(d).__name__}"
            raise InputError(f"{source}: not an aceuq error map ({what})")
        check_version(d, source)
        method = d.get("method")
        if method not in ("isotonic", "power"):
            raise InputError(f"{source}: 'method' must be 'isotonic' or 'power', got {method!r}")
        meta = {}
        for k in ("quantity", "units", "score"):
            if k in d:
                if not isinstance(d[k], str):
                    raise InputError(f"{source}: '{k}' must be a string, got {d[k]!r}")
                meta[k] = d[k]
        fitted_for = d.get("fitted_for")
        if fitted_for is not None and not (isinstance(fitted_for, dict) and all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in fitted_for.items())):
            raise InputError(f"{source}: 'fitted_for' must map names to strings, got {fitted_for!r}")
        out = cls._from_numbers(d, method, meta, source)
        out.fitted_for = fitted_for
        return out

    @classmethod
    def _from_numbers(cls, d: Dict, method: str, meta: Dict, source: str) -> "ErrorMap":
        from ._core import InputError
        from .data import is_number

        if method == "isotonic":
            arrays = {}
            for k in ("log_score", "error"):
                v = d.get(k)
                if not isinstance(v, list) or not v or not all(is_number(x) for x in v):
                    raise InputError(f"{source}: isotonic '{k}' must be a non-empty list of finite numbers, "
                                     f"got {v!r:.80}")
                arrays[k] = np.array(v, dtype=float)
            x, y = arrays["log_score"], arrays["error"]
            if x.size != y.size:
                raise InputError(f"{source}: isotonic 'log_score' and 'error' differ in length ({x.size} vs {y.size})")
            if np.any(np.diff(x) < 0):
                raise InputError(f"{source}: isotonic 'log_score' must be non-decreasing (knots of the map)")
            if np.any(y < 0):
                raise InputError(f"{source}: isotonic 'error' must be >= 0 (an error norm)")
            return cls("isotonic", x=x, y=y, **meta)
        for k in ("a", "b"):
            if not is_number(d.get(k)):
                raise InputError(f"{source}: power '{k}' must be a finite number, got {d.get(k)!r}")
        return cls("power", a=d["a"], b=d["b"], **meta)

    def save(self, path) -> None:
        """Write the map as JSON, atomically (what 'aceuq gamma --error-map' reads)."""
        _write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "ErrorMap":
        """Read a map written by :meth:`save`; an :class:`aceuq.InputError` (a ValueError) naming
        the file for a missing, unreadable or malformed one."""
        from ._core import InputError

        path = os.fspath(path)
        try:
            with open(path) as fh:
                d = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"error map '{path}': not JSON ({exc})") from None
        except FileNotFoundError:
            raise InputError(f"error map '{path}': no such file") from None
        except OSError as exc:
            raise InputError(f"error map '{path}': cannot be read ({exc.strerror or exc})") from None
        return cls.from_dict(d, f"error map '{path}'")


# ---------------------------------------------------------------- novelty detection
@dataclass
class Detection:
    roc_auc: float
    pr_auc: float            # average precision, novel = positive class
    detection_rate: float    # fraction of novel items above the threshold (`above`; nan without threshold)
    false_alarm_rate: float  # fraction of in-distribution items above the threshold
    threshold: Optional[float]


def _rankable(s: np.ndarray) -> np.ndarray:
    """Scores sklearn accepts, in the same order: it refuses non-finite ones, so the scores are
    replaced by their ranks (ties kept), with +inf (an overflowed γ) above everything and nan and
    -inf below."""
    from scipy.stats import rankdata

    s = np.asarray(s, dtype=float)
    return rankdata(np.where(np.isnan(s), -np.inf, s))


# scores within this relative distance of a threshold are at it, not above it: rounding (γ of
# a degenerate training set is 1 +- 1e-11 everywhere) must not decide an alarm
THRESHOLD_RTOL = 1e-9


def above(scores, threshold: float) -> np.ndarray:
    """scores > threshold beyond rounding (THRESHOLD_RTOL): what raises an alarm."""
    return np.asarray(scores, dtype=float) > threshold + THRESHOLD_RTOL * abs(threshold)


def novelty_detection(score_known, score_novel, threshold: Optional[float] = None) -> Detection:
    """How well a score separates novel items (positive) from in-distribution ones."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = np.asarray(score_known, dtype=float).ravel()
    n = np.asarray(score_novel, dtype=float).ravel()
    if k.size == 0 or n.size == 0:
        raise ValueError("novelty detection needs both in-distribution and novel items")
    y = np.concatenate([np.zeros(k.size), np.ones(n.size)])
    s = _rankable(np.concatenate([k, n]))
    det = fa = float("nan")
    if threshold is not None:
        det = float(np.mean(above(n, threshold)))
        fa = float(np.mean(above(k, threshold)))
    return Detection(float(roc_auc_score(y, s)), float(average_precision_score(y, s)), det, fa, threshold)


# ---------------------------------------------------------------- summary
def summarize(uncertainty, error, sigma_like: bool = False, dof: int = 1) -> Dict[str, float]:
    """Spearman, Pearson (and, for a σ-like uncertainty, miscalibration area and z_rms)."""
    out = {"spearman": spearman(uncertainty, error), "pearson": pearson(uncertainty, error)}
    if sigma_like:
        u, e = _finite_pair(uncertainty, error)
        ok = u > 0
        out["miscalibration_area"] = miscalibration_area(e[ok], u[ok], dof) if ok.any() else float("nan")
        out["z_rms"] = z_rms(e[ok], u[ok], dof) if ok.any() else float("nan")
    return out


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_parity(uncertainty, error, path, xlabel="uncertainty", ylabel="error", title=None, log=True) -> str:
    """Scatter of error vs uncertainty (with Spearman in the title) as a PNG."""
    plt = _pyplot()
    u, e = _finite_pair(uncertainty, error)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(u, e, s=4, alpha=0.4, lw=0)
    if log and len(u) and np.all(u > 0) and np.all(e > 0):  # (empty: no limits a log scale can take)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _set_title(ax, title or f"Spearman {spearman(u, e):.3f}")
    return _save(fig, path)


def _set_title(ax, title: str) -> None:
    """Long titles (case names, the split shown) wrapped, not clipped at the figure's edge."""
    ax.set_title("\n".join(textwrap.wrap(title, 45)), fontsize=9)


def _line_style(i: int) -> Dict:
    """Dashes and markers that differ between the lines of one plot, so that coinciding curves
    (two methods that agree) stay visible."""
    return {"ls": ("-", "--", ":", "-.")[i % 4], "marker": "osv^D"[i % 5]}


def plot_reliability(curves: Dict[str, ReliabilityCurve], path, units="eV/Å", title="reliability") -> str:
    """RMSE vs RMV per uncertainty bin, one line per method; the diagonal is calibrated. Log axes
    when the bins span more than two decades (an uncalibrated method beside calibrated ones)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    values = np.concatenate([np.concatenate([c.rmv, c.rmse]) for c in curves.values()] or [np.zeros(0)])
    values = values[np.isfinite(values) & (values > 0)]
    log = values.size > 0 and values.max() > 100 * values.min()
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(c.rmv, c.rmse, ms=3, label=f"{name} (ENCE {c.ence:.2f})", **_line_style(i))
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
    ax.plot([lo if log else 0, hi], [lo if log else 0, hi], "k--", lw=0.8)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"RMV ({units})")
    ax.set_ylabel(f"RMSE ({units})")
    _set_title(ax, title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_calibration(curves: Dict[str, tuple], path, title="calibration") -> str:
    """Observed vs expected proportion, one line per method (tuples from calibration_curve)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for i, (name, (x, y)) in enumerate(curves.items()):
        ax.plot(x, y, label=name, ls=_line_style(i)["ls"])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("expected proportion")
    ax.set_ylabel("observed proportion")
    _set_title(ax, title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_roc(scores: Dict[str, tuple], path, title="novelty detection") -> str:
    """ROC curves; ``scores`` maps method -> (scores_known, scores_novel)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for i, (name, (k, n)) in enumerate(scores.items()):
        k, n = np.asarray(k, float), np.asarray(n, float)
        y = np.concatenate([np.zeros(k.size), np.ones(n.size)])
        fpr, tpr, _ = roc_curve(y, _rankable(np.concatenate([k, n])))  # ranked as novelty_detection ranks them
        ax.plot(fpr, tpr, label=f"{name} (AUC {novelty_detection(k, n).roc_auc:.2f})", ls=_line_style(i)["ls"])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _set_title(ax, title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path) -> str:
    import matplotlib.pyplot as plt

    from .data import atomic_path

    path = os.fspath(path)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_path(path, suffix="." + fmt) as tmp:
        fig.savefig(tmp, dpi=110, format=fmt)
    plt.close(fig)
    return path


def _write_text_atomic(path, text: str) -> None:
    from .data import atomic_output

    with atomic_output(path) as fh:
        fh.write(text)
