"""Ensembles of linear ACE potentials: fitting (bootstrap), evaluation, calibrated σ.

Fitting uses pyace (``pip install 'aceuq[pacemaker]'``): its ``LinearACEDataset`` builds the
design matrix of the B functions (per-atom energy rows, force-component rows) once, then every
member is a ridge regression (the model of pyace's ``LinearACEFit``) on a resample of the
training structures. Members are written as pacemaker potential ``.yaml`` files plus an
``ensemble.json`` manifest.

Evaluation needs only the aceuq core: members that share one basis (same
``Potential.fingerprint``) are evaluated together, the basis values computed once per
structure; any set of pacemaker potentials with the same elements works too (one evaluation per
basis).

Uncertainties (ASE result names as pyace's ``PyACEEnsembleCalculator``):

- ``energy_std``: std over members of the total energy (eV);
- ``energies_std``: std over members of each atom's energy (eV);
- ``forces_std``: std over members of each force component, (n_atoms, 3) (eV/Å);
- ``force_uncertainty``: per atom sqrt(Σ_c forces_std²) — the predicted RMS of the per-atom
  force-error norm |ΔF|; with :mod:`aceuq.metrics` use ``sigma=force_uncertainty/√3, dof=3``.

Calibration, fitted on held-out structures, stored in the manifest and applied to the ``*_std``
results unless ``calibrated=False``, so that the RMS of error/σ is 1 on those structures
(:func:`aceuq.metrics.calibration_factor`): forces σ_cal = sqrt((a·σ)² + b²) per component, b the
resolution of reference forces (1e-4 eV/Å; atoms whose forces vanish by symmetry have σ ≈ 0 and
would otherwise set the scale a), energies one scalar factor. Manifests without a floor (older
files) are read with b = 0.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from . import metrics
from ._core import InputError
from .calculator import ACECalculator
from .data import (atomic_path, check_output, check_version, is_integer, is_number, read_yaml_config, sigterm_as_exit,
                   structure_label)
from .potential import Potential, stress_from_virial
from .progress import progress as show_progress

MANIFEST = "ensemble.json"
_LABEL_BOUND = 1e12  # eV (per atom) and eV/Å: beyond, squares in the fit lose all precision
FORMAT = "aceuq-ensemble"

# presets of create_multispecies_basis_config "functions" (per element; linear embedding)
BASIS_PRESETS: Dict[str, Dict] = {
    "small": {"number_of_functions_per_element": 30, "nradmax_by_orders": [8, 4, 2], "lmax_by_orders": [0, 2, 1]},
    "medium": {"number_of_functions_per_element": 100, "nradmax_by_orders": [10, 6, 3, 2],
               "lmax_by_orders": [0, 3, 2, 1]},
    "large": {"number_of_functions_per_element": 300, "nradmax_by_orders": [12, 8, 5, 3, 2],
              "lmax_by_orders": [0, 4, 3, 2, 1]},
}
_LINEAR_EMBEDDING = {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1], "ndensity": 1}


def _require_pyace(what: str):
    try:
        import pyace  # noqa: F401
    except ImportError:
        raise InputError(f"{what} needs pyace (the python-ace package): pip install 'aceuq[pacemaker]'") from None


# ======================================================================= basis
def default_cutoff(frames: Sequence[Atoms], progress: bool = False) -> float:
    """A cutoff from the data: 2.2× the median nearest-neighbour distance over all atoms (so not
    the order of the structures), within [4, 7] Å."""
    nn = []
    for atoms in show_progress(frames, progress, "cutoff from the data", unit="struct"):
        nl = _neighbours(atoms, 4.0)
        if nl["dist"].size:
            counts = np.diff(nl["offsets"])
            has = counts > 0
            nn.append(np.minimum.reduceat(nl["dist"], nl["offsets"][:-1][has]))
    if not nn:
        return 5.0
    return float(np.clip(round(2.2 * float(np.median(np.concatenate(nn))), 1), 4.0, 7.0))


def _neighbours(atoms: Atoms, cutoff: float) -> Dict[str, np.ndarray]:
    """aceuq's neighbour list of a structure (CSR: ``offsets``, ``index``, ``dist``); a structure
    the search refuses (no volume, far denser than matter) is an InputError naming it."""
    from ._core import neighbor_list

    try:
        return neighbor_list(np.asarray(atoms.positions, dtype=float), np.asarray(atoms.cell.array, dtype=float),
                             np.asarray(atoms.pbc, dtype=bool), float(cutoff))
    except ValueError as exc:
        raise InputError(f"{structure_label(atoms, None)}: {exc}") from None


def basis_potential_config(basis: str, elements: Optional[Sequence[str]], cutoff: float) -> Dict:
    """The create_multispecies_basis_config input for a preset name or a YAML file.

    A YAML file holds that input (``elements/embeddings/bonds/functions``) at its top level or
    under ``potential:`` (a pacemaker input file). Embeddings are forced to be linear (a linear
    fit cannot fit a non-linear embedding); elements are the fit's (given, else those of the data),
    which a file that names elements must name too. With ``elements`` None the input is only read
    and checked, as it stands.
    """
    if basis in BASIS_PRESETS:
        functions = {"ALL": {k: v for k, v in BASIS_PRESETS[basis].items() if k != "number_of_functions_per_element"},
                     "number_of_functions_per_element": BASIS_PRESETS[basis]["number_of_functions_per_element"]}
        bonds = {"ALL": {"radbase": "ChebExpCos", "radparameters": [5.25], "rcut": float(cutoff), "dcut": 0.01,
                         "NameOfCutoffFunction": "cos", "r_in": 0.5, "delta_in": 0.1,
                         "inner_cutoff_type": "distance", "core-repulsion": [10000.0, 5.0]}}
        return {"deltaSplineBins": 0.001, "elements": list(elements or []),
                "embeddings": {"ALL": dict(_LINEAR_EMBEDDING)}, "bonds": bonds, "functions": functions}
    if not os.path.exists(basis):
        raise InputError(f"basis '{basis}': neither a preset ({', '.join(BASIS_PRESETS)}) nor a file")
    cfg = read_yaml_config(basis, "basis config")
    if "potential" in cfg:
        cfg = cfg["potential"]
    if not isinstance(cfg, dict) or "functions" not in cfg or "bonds" not in cfg:
        raise InputError(f"basis config '{basis}': needs 'bonds' and 'functions' (create_multispecies_basis_config input)")
    cfg = dict(cfg)
    if elements is None:  # (the file checked alone)
        return cfg
    named = cfg.setdefault("elements", list(elements))
    if not isinstance(named, list) or sorted(map(str, named)) != sorted(elements):
        raise InputError(f"basis config '{basis}': its elements ({named}) are not those of the fit "
                         f"({' '.join(sorted(elements))}: those given, else those of the training data); an element "
                         "without training data would stay unfitted, one without functions cannot be fitted")
    cfg["embeddings"] = {"ALL": dict(_LINEAR_EMBEDDING)}
    return cfg


def make_basis(basis: str, elements: Sequence[str], cutoff: float):
    """An ACEBBasisSet (zero coefficients) for a preset or a config file."""
    _require_pyace("building an ACE basis")
    from pyace import ACEBBasisSet, create_multispecies_basis_config

    cfg = basis_potential_config(basis, elements, cutoff)
    what = f"basis config '{basis}'" if basis not in BASIS_PRESETS else f"basis '{basis}'"
    try:
        bbasis = ACEBBasisSet(create_multispecies_basis_config(cfg))
    except Exception as exc:  # pyace's validation: ValueError, KeyError, TypeError, RuntimeError ...
        raise InputError(f"{what}: pyace cannot build the basis ({type(exc).__name__}: {exc})") from None
    counts = {el: len(r1) + len(hi) for el, r1, hi in zip(bbasis.elements_name, bbasis.basis_rank1, bbasis.basis)}
    if len(set(counts.values())) > 1:
        # pyace's design matrix (generate_data) lays out the force rows as if every element had
        # the same functions: on such a basis they are wrong (0.5 eV/Å off) or it crashes
        raise InputError(f"{what}: its elements have different numbers of functions "
                         f"({', '.join(f'{el} {n}' for el, n in counts.items())}); pyace's linear-fit design "
                         "matrix, which the fit uses, is wrong for such bases: give all elements the same "
                         "functions (one 'ALL' block)")
    return bbasis


def check_cutoff(basis: str, cutoff: Optional[float]) -> None:
    """A cutoff is an input of the presets only: a basis config file sets its own, the bonds'
    ``rcut`` (per element pair, as in a pacemaker input file), which a single number cannot
    override unambiguously. Reject a cutoff given with a file, and a non-positive one."""
    if cutoff is None:
        return
    if not (is_number(cutoff) and cutoff > 0):
        raise InputError(f"cutoff must be a positive number of Å, got {cutoff!r}")
    if basis not in BASIS_PRESETS:
        raise InputError(f"basis config '{basis}': a cutoff ({cutoff} Å) applies to the presets "
                         f"({', '.join(BASIS_PRESETS)}) only; a basis config sets its cutoff by the bonds' "
                         "'rcut': edit it there")


# ======================================================================= fitting
@dataclass
class DesignMatrix:
    """Linear ACE design matrix of a dataset: row s is structure s's energy per atom, then the
    force components of all atoms (structure by structure)."""

    X: np.ndarray
    y: np.ndarray
    n_atoms: np.ndarray                  # per structure
    composition: np.ndarray              # (n_structures, n_elements) atom counts
    elements: List[str]

    @property
    def n_structures(self) -> int:
        """Structures the design matrix was built from."""
        return len(self.n_atoms)

    def rows(self, structures: np.ndarray, energy_weight: float = 1.0, reference_energy: Optional[Dict] = None):
        """(X, y) rows of the given structures (repeats allowed: bootstrap); ``reference_energy``
        (per element, on top of the one the matrix was built with) is subtracted from the energies."""
        structures = np.asarray(structures, dtype=int)
        start = self.n_structures + 3 * np.concatenate([[0], np.cumsum(self.n_atoms)[:-1]])
        force_rows = np.concatenate([np.arange(start[s], start[s] + 3 * self.n_atoms[s]) for s in structures])
        ye = self.y[structures]
        if reference_energy:
            e0 = np.array([reference_energy.get(el, 0.0) for el in self.elements])
            ye = ye - (self.composition[structures] @ e0) / self.n_atoms[structures]
        # written in place: a vstack of the gathered blocks would hold the force rows twice
        X = np.empty((len(structures) + len(force_rows), self.X.shape[1]))
        np.multiply(self.X[structures], energy_weight, out=X[: len(structures)])
        np.take(self.X, force_rows, axis=0, out=X[len(structures):], mode="clip")  # (valid rows; 'raise' buffers)
        y = np.concatenate([energy_weight * ye, self.y[force_rows]])
        return X, y


def fit_elements(frames: Sequence[Atoms], elements: Optional[Sequence[str]]) -> List[str]:
    """The sorted elements of a fit: those given, each of which some training structure must
    contain (an element without data keeps its functions unfitted, zero, and takes part of the
    basis from the others), or else those of the structures."""
    present = {s for a in frames for s in a.get_chemical_symbols()}
    absent = sorted(set(elements or ()) - present)
    if absent:
        raise InputError(f"element(s) {', '.join(absent)} given but in no training structure: their functions "
                         f"would stay unfitted (zero), and would take part of the basis from the others")
    if elements:  # (before the calibration structures are checked against them)
        for k, a in enumerate(frames):
            other = sorted(set(a.get_chemical_symbols()) - set(elements))
            if other:
                raise InputError(f"{structure_label(a, k)}: a training structure has {', '.join(other)}, not among "
                                 f"the elements given ({' '.join(sorted(set(elements)))})")
    return sorted(set(elements) if elements else present)


def _energy(atoms: Atoms, index: Optional[int] = None, what: str = "training") -> float:
    if "energy" in atoms.info:
        value = atoms.info["energy"]
    else:
        try:
            value = atoms.get_potential_energy()
        except Exception:
            raise InputError(f"{structure_label(atoms, index)}: a {what} structure has no energy "
                             f"(extxyz 'energy' or a calculator result)") from None
    try:
        energy = float(value)
    except (TypeError, ValueError):
        energy = np.nan
    if not (np.isfinite(energy) and abs(energy) < _LABEL_BOUND * max(len(atoms), 1)):
        raise InputError(f"{structure_label(atoms, index)}: the energy must be a finite number of eV, got {value}")
    return energy


def _forces(atoms: Atoms, index: Optional[int] = None, what: str = "training") -> np.ndarray:
    value = None
    for key in ("forces", "forces_ref", "REF_forces"):
        if key in atoms.arrays:
            value = atoms.arrays[key]
            break
    if value is None:
        try:
            value = atoms.get_forces()
        except Exception:
            raise InputError(f"{structure_label(atoms, index)}: a {what} structure has no forces "
                             f"(extxyz 'forces' or a calculator result)") from None
    try:
        forces = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        forces = None
    if forces is None or forces.shape != (len(atoms), 3):
        raise InputError(f"{structure_label(atoms, index)}: forces must be {len(atoms)} x 3 numbers (eV/Å), got "
                         f"{'shape ' + str(forces.shape) if forces is not None else repr(value)[:60]}")
    bad = np.flatnonzero(~np.all(np.isfinite(forces) & (np.abs(forces) < _LABEL_BOUND), axis=1))
    if bad.size:
        raise InputError(f"{structure_label(atoms, index)}: atom {bad[0]}'s force must be finite numbers of eV/Å, "
                         f"got {forces[bad[0]].tolist()}")
    return forces


def reference_energies(frames: Sequence[Atoms], elements: Sequence[str]) -> Dict[str, float]:
    """Per-element reference energies E0 by least squares E ≈ Σ_el n_el E0_el (as pacemaker's
    'auto' reference energy): a linear ACE model has no constant term."""
    comp = np.array([[a.get_chemical_symbols().count(el) for el in elements] for a in frames], dtype=float)
    e = np.array([_energy(a, k) for k, a in enumerate(frames)])
    e0, *_ = np.linalg.lstsq(comp, e, rcond=None)
    return {el: float(v) for el, v in zip(elements, e0)}


def _fully_periodic(atoms: Atoms, cutoff: float) -> Atoms:
    """pyace takes only fully periodic or fully open cells: give a partly periodic cell (a slab)
    vectors along its open directions, normal to the periodic ones and longer than the atoms'
    extent plus the cutoff, so no periodic image comes within the cutoff."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all() or not pbc.any():
        return atoms.copy()
    a = atoms.copy()
    cell = np.array(a.cell.array, dtype=float)
    pos = a.get_positions()
    # orthonormal directions normal to the periodic vectors (and to each other): each open
    # vector's own direction where it has one (a wire's open vectors may be zero), else an axis
    done = list(np.linalg.qr(cell[pbc].T)[0].T)
    for i in np.nonzero(~pbc)[0]:
        for n in (cell[i], *np.eye(3)):
            n = n - sum((n @ d) * d for d in done)
            if np.linalg.norm(n) > 1e-6 * max(1.0, np.linalg.norm(cell[i])):
                break
        n = n / np.linalg.norm(n)
        done.append(n)
        extent = float(np.ptp(pos @ n)) if len(a) else 0.0
        cell[i] = n * (extent + 2.0 * cutoff + 1.0)
    a.set_cell(cell, scale_atoms=False)
    a.pbc = True
    return a


def design_matrix(bbasis, frames: Sequence[Atoms], e0: Dict[str, float], workers: int = 2,
                  progress: bool = False) -> DesignMatrix:
    """B-function design matrix of the frames (pyace's LinearACEDataset rows, computed by pyace's
    ``generate_data`` in worker processes whose failures are reported, not silently left as zeros;
    with ``progress``, a bar over chunks of structures, ``workers`` of them at a time)."""
    import multiprocessing as mp

    import pandas as pd
    from pyace.linearacefit import LinearACEDataset, generate_data

    elements = list(bbasis.elements_name)
    comp = np.array([[a.get_chemical_symbols().count(el) for el in elements] for a in frames], dtype=int)
    for k, a in enumerate(frames):
        unknown = sorted(set(a.get_chemical_symbols()) - set(elements))
        if unknown:
            raise InputError(f"{structure_label(a, k)}: element(s) {', '.join(unknown)} outside the basis "
                             f"({', '.join(elements)})")
        _check_fittable(a, k)
    shift = comp @ np.array([e0.get(el, 0.0) for el in elements])
    cutoff = float(bbasis.cutoffmax)
    df = pd.DataFrame({
        "ase_atoms": [_fully_periodic(a, cutoff) for a in frames],
        "energy_corrected": [_energy(a, k) - s for k, (a, s) in enumerate(zip(frames, shift))],
        "forces": [_forces(a, k) for k, a in enumerate(frames)],
    })
    ds = LinearACEDataset(bbasis, df)
    n_struct, n_atoms = len(frames), int(comp.sum())
    shared = mp.Array("d", (n_struct + 3 * n_atoms) * ds.nfunc, lock=False)
    # a bar needs more chunks than workers; a few per worker keep them busy without many forks
    n_chunks = min(n_struct, workers * (8 if progress else 1))
    chunks = [c for c in np.array_split(np.arange(n_struct), max(1, n_chunks)) if c.size]
    atom_start = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    jobs = [((int(c[0]), int(c[-1]) + 1), (int(atom_start[c[0]]), int(atom_start[c[-1] + 1]))) for c in chunks]
    rounds = [jobs[i:i + workers] for i in range(0, len(jobs), workers)]

    def where(sc):
        first, last = structure_label(frames[sc[0]], sc[0]), structure_label(frames[sc[1] - 1], sc[1] - 1)
        return first if sc[1] - sc[0] == 1 else f"{first} .. {last}"

    for batch in show_progress(rounds, progress and len(rounds) > 1, "design matrix", unit="chunk"):
        if len(batch) == 1:  # no process to fork for one chunk
            for sc, ac in batch:
                try:
                    generate_data(ds.df, ds.basis, shared, sc, ac, cutoff, ds.elements_mapper_dict)
                except Exception as exc:
                    raise InputError(f"computing the design matrix failed on {where(sc)} "
                                     f"({type(exc).__name__}: {exc})") from None
            continue
        procs = [mp.Process(target=generate_data, args=(ds.df, ds.basis, shared, sc, ac, cutoff,
                                                        ds.elements_mapper_dict)) for sc, ac in batch]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [where(sc) for p, (sc, _) in zip(procs, batch) if p.exitcode != 0]
        if failed:
            raise InputError(f"computing the design matrix failed on {'; '.join(failed)} (see the traceback above)")
    X = np.frombuffer(shared).reshape(n_struct + 3 * n_atoms, ds.nfunc)  # the shared buffer itself, not a copy
    y = np.array(ds.get_target_vector(), copy=True)
    return DesignMatrix(X, y, np.array([len(a) for a in frames]), comp, elements)


_OVERLAP = 0.1  # Å: atoms closer than this are taken to be the same atom written twice


def _check_fittable(atoms: Atoms, index: int) -> None:
    """A training structure pyace's design matrix can take: some atoms, none on top of another."""
    if len(atoms) == 0:
        raise InputError(f"{structure_label(atoms, index)}: a training structure without atoms")
    nl = _neighbours(atoms, _OVERLAP)
    if len(nl["dist"]):
        k = int(np.argmin(nl["dist"]))
        i = int(np.searchsorted(nl["offsets"], k, side="right") - 1)
        raise InputError(f"{structure_label(atoms, index)}: atoms {i} and {int(nl['index'][k])} are "
                         f"{nl['dist'][k]:.3g} Å apart (on top of each other)")


def resample(n: int, n_members: int, bootstrap: bool, seed: int, fraction: float = 0.8) -> List[np.ndarray]:
    """Training structures of each member: a bootstrap sample (with replacement, n of n) or,
    without bootstrap, a random subsample of ``fraction`` of the structures."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_members):
        if bootstrap:
            out.append(np.sort(rng.integers(0, n, size=n)))
        else:
            out.append(np.sort(rng.choice(n, size=max(1, int(round(fraction * n))), replace=False)))
    return out


def fit_members(dm: DesignMatrix, samples: Sequence[np.ndarray], alpha: float = 1e-5,
                energy_weight: float = 1.0, progress: bool = False,
                reference_energy: Optional[Dict] = None) -> List[np.ndarray]:
    """Ridge coefficients (pyace LinearACEFit's model: no intercept) for each resample.

    scikit-learn warns for each fit whose regularised normal equations are ill-conditioned (small
    alpha on correlated B functions, as in pyace's fit): one warning in all says how many were."""
    import warnings

    from scipy.linalg import LinAlgWarning
    from sklearn.linear_model import Ridge

    coefs, ill = [], 0
    for s in show_progress(samples, progress, "fit members"):
        X, y = dm.rows(s, energy_weight, reference_energy)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LinAlgWarning)
            # (copy_X False: X is this member's own rows, dropped after the fit)
            coefs.append(Ridge(alpha=alpha, fit_intercept=False, solver="auto", copy_X=False).fit(X, y).coef_.copy())
        ill += any(issubclass(w.category, LinAlgWarning) for w in caught)
        for w in caught:  # anything else as it was
            if not issubclass(w.category, LinAlgWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        del X, y  # before the next member's rows are gathered: one member's rows in memory at a time
    if ill:
        warnings.warn(f"ridge fit: the normal equations of {ill} of {len(samples)} members were ill-conditioned "
                      f"(scikit-learn's LinAlgWarning, as in pyace's linear fit): their coefficients are less "
                      f"precise; compare the RMSEs, or regularise more (alpha)", RuntimeWarning, stacklevel=2)
    return coefs


def _save_bbasis(bbasis, coef: np.ndarray, path: str) -> None:
    bbasis.basis_coeffs = list(coef)
    with atomic_path(path, suffix=".yaml") as tmp:
        bbasis.save(tmp)


def fit_linear_potential(frames: Sequence[Atoms], path: str, basis: str = "small",
                         elements: Optional[Sequence[str]] = None, cutoff: Optional[float] = None,
                         alpha: float = 1e-5, energy_weight: float = 1.0, workers: int = 2) -> Dict[str, float]:
    """One linear ACE fitted (ridge, pyace's model) to all frames, written to ``path`` as a
    pacemaker .yaml. Returns the per-element reference energies the fit subtracted (a linear
    ACE has no constant term; they shift energies only, never forces)."""
    _require_pyace("fitting a potential")
    frames = list(frames)
    if not frames:
        raise InputError("no training structures")
    check_cutoff(basis, cutoff)
    elements = fit_elements(frames, elements)
    bbasis = make_basis(basis, elements, float(cutoff) if cutoff else default_cutoff(frames))
    e0 = reference_energies(frames, list(bbasis.elements_name))
    dm = design_matrix(bbasis, frames, e0, workers=workers)
    (coef,) = fit_members(dm, [np.arange(len(frames))], alpha, energy_weight)
    _save_bbasis(bbasis, coef, path)
    return e0


def check_fit_options(n_members: int = 2, alpha: float = 0.0, energy_weight: float = 1.0,
                      subsample: float = 0.8, workers: int = 1, seed: int = 0) -> None:
    """Ranges of the ensemble fit's numeric options (one InputError naming the option)."""
    if not (is_integer(n_members) and n_members >= 2):
        raise InputError(f"an ensemble needs at least 2 members, got {n_members!r}")
    if not (is_number(alpha) and alpha >= 0):
        raise InputError(f"ridge alpha must be a number >= 0, got {alpha!r}")
    if not (is_number(energy_weight) and energy_weight > 0):
        raise InputError(f"energy weight must be a number > 0, got {energy_weight!r}")
    if not (is_number(subsample) and 0 < subsample <= 1):
        raise InputError(f"subsample must be a fraction in (0, 1], got {subsample!r}")
    if not (is_integer(workers) and workers >= 1):
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    if not (is_integer(seed) and seed >= 0):
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")


def fit_ensemble(frames: Sequence[Atoms], n_members: int, output_dir: str, basis: str = "small",
                 bootstrap: bool = True, elements: Optional[Sequence[str]] = None, cutoff: Optional[float] = None,
                 seed: int = 0, alpha: float = 1e-5, energy_weight: float = 1.0, subsample: float = 0.8,
                 calibration_frames: Optional[Sequence[Atoms]] = None, sources: Sequence[str] = (),
                 progress: bool = False, workers: int = 2) -> "Ensemble":
    """Fit an ensemble of linear ACE members and write it to ``output_dir``.

    ``calibration_frames`` (held out, not used in fitting) fit the σ calibration factors.
    ``cutoff`` (Å) is the cutoff of a preset basis (default: from the data, :func:`default_cutoff`);
    a basis config file sets its own (the bonds' ``rcut``) and takes none (:func:`check_cutoff`).
    The manifest records the cutoff the members have.
    """
    _require_pyace("fitting an ensemble")
    check_fit_options(n_members=n_members, alpha=alpha, energy_weight=energy_weight, subsample=subsample,
                      workers=workers, seed=seed)
    check_cutoff(basis, cutoff)
    check_output(output_dir, folder=True)
    frames = list(frames)
    if not frames:
        raise InputError("no training structures")
    elements = fit_elements(frames, elements)
    if calibration_frames:  # checked before the fit, which they would otherwise fail after
        calibration_frames = list(calibration_frames)
        for k, atoms in enumerate(calibration_frames):
            _energy(atoms, k, "calibration")
            _forces(atoms, k, "calibration")
            foreign = sorted(set(atoms.get_chemical_symbols()) - set(elements))
            if foreign:
                raise InputError(f"{structure_label(atoms, k)}: a calibration structure has {', '.join(foreign)}, "
                                 f"which the members are not fitted for (elements {' '.join(elements)})")
    bbasis = make_basis(basis, elements, float(cutoff) if cutoff is not None else default_cutoff(frames, progress))
    cutoff = float(bbasis.cutoffmax)  # what the members have (a basis config's rcut, not the argument)
    e0 = reference_energies(frames, list(bbasis.elements_name))
    dm = design_matrix(bbasis, frames, e0, workers=workers, progress=progress)
    samples = resample(len(frames), n_members, bootstrap, seed, subsample)
    coefs = fit_members(dm, samples, alpha, energy_weight, progress)

    fit_info = {"basis": basis if basis in BASIS_PRESETS else os.path.abspath(basis), "cutoff": cutoff,
                "bootstrap": bool(bootstrap), "subsample": None if bootstrap else subsample, "seed": int(seed),
                "ridge_alpha": alpha, "energy_weight": energy_weight, "n_structures": len(frames),
                "n_functions": int(dm.X.shape[1]), "sources": [os.fspath(s) for s in sources],
                "member_structures": [s.tolist() for s in samples],
                "train_rmse": training_rmse(dm, coefs)}
    # written and calibrated in a staging folder inside output_dir (the same file system, found
    # writable by check_output), then moved in: a calibration that fails leaves no uncalibrated
    # ensemble behind, and a folder of an earlier fit keeps no members of it beside the new ones
    # (SIGTERM, e.g. a batch system's time limit, ends the process as an exception does, so the
    # staging folder is removed, and a folder made for this fit too if it stayed empty)
    created = not os.path.isdir(output_dir)
    with sigterm_as_exit():
        try:
            os.makedirs(output_dir, exist_ok=True)
            stage = tempfile.mkdtemp(prefix=".aceuq-ensemble-", dir=output_dir)
        except OSError as exc:
            raise InputError(f"output folder '{output_dir}': cannot write in it ({exc.strerror or exc})") from None
        try:
            ens = write_ensemble(bbasis, coefs, stage, e0, fit_info)
            if calibration_frames:
                ens.calibrate(calibration_frames, progress=progress)
                ens.save_calibration(stage)
            _move_members(stage, output_dir)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if created and not os.listdir(output_dir):
                os.rmdir(output_dir)
            raise
        shutil.rmtree(stage, ignore_errors=True)
    return Ensemble.load(output_dir)


_MEMBER_FILE = re.compile(r"member_\d{3,}\.yaml")


def _move_members(stage: str, output_dir: str) -> None:
    """Move an ensemble written in ``stage`` into ``output_dir``: the members, then the manifest
    (a reader never sees it list missing members), then away with an earlier fit's members that
    the new one does not have."""
    with open(os.path.join(stage, MANIFEST)) as fh:
        names = json.load(fh)["members"]
    try:
        for name in names + [MANIFEST]:
            os.replace(os.path.join(stage, name), os.path.join(output_dir, name))
        for name in os.listdir(output_dir):
            if _MEMBER_FILE.fullmatch(name) and name not in names:
                os.unlink(os.path.join(output_dir, name))
    except OSError as exc:
        raise InputError(f"output folder '{output_dir}': cannot move the ensemble in ({exc.strerror or exc})") from None


def training_rmse(dm: DesignMatrix, coefs: Sequence[np.ndarray]) -> Dict[str, float]:
    """RMS errors of the members' mean on the training rows: energy per atom (eV/atom) and force
    components (eV/Å), unweighted (a linear model: the mean of the coefficients predicts the mean)."""
    resid = dm.X @ np.mean(coefs, axis=0) - dm.y
    ns = dm.n_structures
    return {"energy_per_atom": float(np.sqrt(np.mean(resid[:ns] ** 2))),
            "forces": float(np.sqrt(np.mean(resid[ns:] ** 2))) if len(resid) > ns else None}


def write_ensemble(bbasis, coefs: Sequence[np.ndarray], output_dir: str, reference_energy: Dict[str, float],
                   fit_info: Dict) -> "Ensemble":
    """Write members (pacemaker .yaml, atomically) and the manifest; return the loaded Ensemble."""
    os.makedirs(output_dir, exist_ok=True)
    names = [f"member_{k:03d}.yaml" for k in range(len(coefs))]
    for name, coef in zip(names, coefs):
        _save_bbasis(bbasis, coef, os.path.join(output_dir, name))
    manifest = {
        "format": FORMAT, "version": 1, "members": names, "elements": list(bbasis.elements_name),
        "reference_energy": dict(reference_energy), "calibration": {"energy": 1.0, "forces": 1.0, "fitted": False},
        "fit": fit_info,
    }
    write_manifest(output_dir, manifest)
    return Ensemble.load(output_dir)


def write_manifest(folder: str, manifest: Dict) -> None:
    metrics._write_text_atomic(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1))


def check_manifest(man, path: str) -> List[str]:
    """Validate an ``ensemble.json`` mapping (the schema :func:`write_ensemble` and
    :meth:`Ensemble.save_calibration` write); return the member paths, relative ones resolved
    against the manifest's folder. One :class:`InputError` naming ``path`` and the key otherwise.

    Required: ``format``, ``members`` (>= 2 potential files). Optional, type-checked when present:
    ``elements``, ``reference_energy`` (element → eV; absent = 0, as for a list of member files),
    ``calibration`` and ``fit``. ``calibration`` as a whole may be absent (σ uncalibrated, as for
    a list of member files), but when present it needs both factors ``energy`` and ``forces``: every
    writer stores them together, so a block without one is a damaged file, and a silently assumed
    factor 1 would misstate σ. ``forces_floor`` may be absent (manifests older than the floor: b = 0).
    """
    where = f"ensemble manifest '{path}'"
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise InputError(f"{where}: not an aceuq ensemble manifest (needs \"format\": \"{FORMAT}\")")
    check_version(man, where)
    members = man.get("members")
    if not isinstance(members, list) or not members:
        raise InputError(f"{where}: 'members' must be a list of member potential files, got {members!r}")
    if len(members) < 2:
        raise InputError(f"{where}: 'members' lists {len(members)} potential; an ensemble needs at least 2")
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    for k, m in enumerate(members):
        if not isinstance(m, str) or not m.strip():
            raise InputError(f"{where}: 'members' entry {k} must be a potential file name, got {m!r}")
        full = m if os.path.isabs(m) else os.path.join(folder, m)
        if not os.path.isfile(full):
            raise InputError(f"{where}: member '{m}' not found ({full})")
        out.append(full)
    elements = man.get("elements")
    if elements is not None and (not isinstance(elements, list) or not all(isinstance(e, str) for e in elements)):
        raise InputError(f"{where}: 'elements' must be a list of element symbols, got {elements!r}")
    ref = man.get("reference_energy")
    if ref is not None:
        if not isinstance(ref, dict):
            raise InputError(f"{where}: 'reference_energy' must map elements to energies in eV, got {ref!r}")
        for el, v in ref.items():
            if not is_number(v):
                raise InputError(f"{where}: 'reference_energy' of {el} must be a finite number (eV), got {v!r}")
    cal = man.get("calibration")
    if cal is not None:
        if not isinstance(cal, dict):
            raise InputError(f"{where}: 'calibration' must be a mapping (energy, forces, ...), got {cal!r}")
        for key in ("energy", "forces"):
            if key not in cal:
                raise InputError(f"{where}: 'calibration' has no '{key}' factor (written with 'energy' and "
                                 "'forces'; remove the whole 'calibration' block for uncalibrated σ)")
        for key in ("energy", "forces", "forces_floor"):
            if key in cal and not (is_number(cal[key]) and cal[key] >= 0):
                raise InputError(f"{where}: 'calibration' '{key}' must be a finite number >= 0, got {cal[key]!r}")
        if "fitted" in cal and not isinstance(cal["fitted"], bool):
            raise InputError(f"{where}: 'calibration' 'fitted' must be true or false, got {cal['fitted']!r}")
        for key in ("n_structures", "n_atoms"):
            v = cal.get(key)
            if v is not None and not (is_integer(v) and v >= 0):
                raise InputError(f"{where}: 'calibration' '{key}' must be a count, got {v!r}")
    if "fit" in man and not isinstance(man["fit"], dict):
        raise InputError(f"{where}: 'fit' must be a mapping, got {man['fit']!r}")
    return out


# ======================================================================= evaluation
@dataclass
class EnsembleResult:
    """Mean and spread of the members for one structure (eV, eV/Å)."""

    energy: float
    energies: np.ndarray           # (n_atoms,)
    forces: Optional[np.ndarray]   # (n_atoms, 3)
    energy_std: float
    energies_std: np.ndarray
    forces_std: Optional[np.ndarray]
    members_energy: np.ndarray     # (M,)
    members_energies: np.ndarray   # (M, n_atoms)
    members_forces: Optional[np.ndarray]  # (M, n_atoms, 3)
    stress: Optional[np.ndarray] = None       # members' mean, ASE's Voigt order (periodic cells with forces)
    stress_std: Optional[np.ndarray] = None   # members' spread of it (not calibrated)

    @property
    def force_uncertainty(self) -> Optional[np.ndarray]:
        """Per atom sqrt(Σ_c σ_c²): predicted RMS of the force-error norm."""
        return None if self.forces_std is None else np.sqrt(np.sum(self.forces_std ** 2, axis=1))


@dataclass
class _Group:
    potential: Potential
    members: List[Dict[str, np.ndarray]]
    index: List[int] = field(default_factory=list)


class Ensemble:
    """Members (pacemaker .yaml potentials with the same elements) evaluated together.

    >>> ens = Ensemble.load("ens_dir")          # or Ensemble.load(["a.yaml", "b.yaml"])
    >>> r = ens.evaluate(atoms)                 # EnsembleResult: mean, *_std, per-member values
    """

    def __init__(self, paths: Sequence[str], reference_energy: Optional[Dict[str, float]] = None,
                 calibration: Optional[Dict] = None, manifest: Optional[Dict] = None):
        paths = [os.fspath(p) for p in paths]
        if len(paths) < 2:
            raise InputError("an ensemble needs at least 2 member potentials")
        self.paths = paths
        self.reference_energy = dict(reference_energy or {})
        self.calibration = {"energy": 1.0, "forces": 1.0, "fitted": False, **(calibration or {})}
        self.manifest = manifest
        self.groups: List[_Group] = []
        by_fp: Dict[str, _Group] = {}
        elements = None
        for k, path in enumerate(paths):
            pot = Potential(path)
            if elements is None:
                elements = pot.elements
            elif sorted(pot.elements) != sorted(elements):
                raise InputError(f"ensemble member '{path}' has elements {pot.elements}, the first member {elements}")
            g = by_fp.get(pot.fingerprint)
            if g is None:
                g = by_fp[pot.fingerprint] = _Group(pot, [])
                self.groups.append(g)
            g.members.append({el: np.array(pot.coefficients(el)) for el in pot.elements})
            g.index.append(k)
        self.elements = list(elements)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shared_basis(self) -> bool:
        """Whether all members share one basis (then they are evaluated together, in one pass)."""
        return len(self.groups) == 1

    @classmethod
    def load(cls, source: Union[str, os.PathLike, Sequence[str]]) -> "Ensemble":
        """A directory with ``ensemble.json``, a manifest path, or a list of potential files."""
        if isinstance(source, (str, os.PathLike)):
            source = os.fspath(source)
            path = os.path.join(source, MANIFEST) if os.path.isdir(source) else source
            if not os.path.exists(path):
                raise InputError(f"ensemble '{source}': no {MANIFEST} (give a directory written by "
                                 f"'aceuq ensemble' or a list of potential files)")
            try:
                with open(path) as fh:
                    man = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"ensemble manifest '{path}': not JSON ({exc})") from None
            except OSError as exc:
                raise InputError(f"ensemble manifest '{path}': cannot be read ({exc.strerror or exc})") from None
            members = check_manifest(man, path)
            ens = cls(members, man.get("reference_energy"), man.get("calibration"), man)
            listed = man.get("elements")
            if listed is not None and sorted(listed) != sorted(ens.elements):
                raise InputError(f"ensemble manifest '{path}': 'elements' {listed} differ from the members' "
                                 f"elements {ens.elements}")
            unknown = sorted(set(ens.reference_energy) - set(ens.elements))
            if unknown:
                raise InputError(f"ensemble manifest '{path}': 'reference_energy' names element(s) "
                                 f"{', '.join(unknown)} not in the members ({', '.join(ens.elements)})")
            return ens
        return cls(list(source))

    # ---------------------------------------------------------------- members
    def members_evaluate(self, atoms: Atoms, forces: bool = True) -> Dict[str, np.ndarray]:
        """Every member's energy (M,), energies (M, n), forces (M, n, 3) and virial (M, 3, 3),
        reference energies added."""
        M, n = len(self.paths), len(atoms)
        energy = np.zeros(M)
        energies = np.zeros((M, n))
        frc = np.zeros((M, n, 3)) if forces else None
        vir = np.zeros((M, 3, 3)) if forces else None
        for g in self.groups:
            out = g.potential.evaluate_ensemble(atoms, g.members, forces=forces)
            energy[g.index] = out["energy"]
            energies[g.index] = out["energies"]
            if forces:
                frc[g.index] = out["forces"]
                vir[g.index] = out["virial"]
        if self.reference_energy:
            e0 = np.array([self.reference_energy.get(s, 0.0) for s in atoms.get_chemical_symbols()])
            energies += e0
            energy += e0.sum()
        return {"energy": energy, "energies": energies, "forces": frc, "virial": vir}

    def evaluate(self, atoms: Union[Atoms, Sequence[Atoms]], forces: bool = True, calibrated: bool = True,
                 progress: bool = False):
        """Members' mean and (calibrated) spread of one structure (an EnsembleResult), or of each
        of a list of them (a list), as Potential.evaluate."""
        if not isinstance(atoms, Atoms):
            return [self.evaluate(a, forces, calibrated)
                    for a in show_progress(list(atoms), progress, "evaluate", unit="struct")]
        m = self.members_evaluate(atoms, forces)
        se = self.calibration["energy"] if calibrated else 1.0
        f = m["forces"]
        return EnsembleResult(
            energy=float(m["energy"].mean()), energies=m["energies"].mean(axis=0),
            forces=None if f is None else f.mean(axis=0),
            energy_std=float(se * m["energy"].std()), energies_std=se * m["energies"].std(axis=0),
            forces_std=None if f is None else self._forces_std(f.std(axis=0), calibrated),
            members_energy=m["energy"], members_energies=m["energies"], members_forces=f,
            **self._stress(atoms, m["virial"]),
        )

    @staticmethod
    def _stress(atoms: Atoms, virials: Optional[np.ndarray]) -> Dict[str, Optional[np.ndarray]]:
        members = None if virials is None else [stress_from_virial(atoms, v) for v in virials]
        if not members or members[0] is None:
            return {"stress": None, "stress_std": None}
        members = np.array(members)
        return {"stress": members.mean(axis=0), "stress_std": members.std(axis=0)}

    def _forces_std(self, raw: np.ndarray, calibrated: bool) -> np.ndarray:
        if not calibrated:
            return raw
        floor = float(self.calibration.get("forces_floor", 0.0) or 0.0)
        scaled = self.calibration["forces"] * raw
        return np.sqrt(scaled ** 2 + floor ** 2) if floor > 0 else scaled

    # ---------------------------------------------------------------- calibration
    def errors_and_sigma(self, frames: Sequence[Atoms], calibrated: bool = False, progress: bool = False) -> Dict:
        """True errors and raw (or calibrated) σ on labelled frames, per atom and per structure."""
        f_err, f_unc, e_err, e_unc, s_idx = [], [], [], [], []
        for k, atoms in enumerate(show_progress(list(frames), progress, "ensemble")):
            r = self.evaluate(atoms, forces=True, calibrated=calibrated)
            f_err.append(metrics.force_error_norms(r.forces, _forces(atoms, k, "labelled")))
            f_unc.append(r.force_uncertainty)
            e_err.append(abs(r.energy - _energy(atoms, k, "labelled")) / len(atoms))
            e_unc.append(r.energy_std / len(atoms))
            s_idx.append(np.full(len(atoms), k))
        return {"force_error": np.concatenate(f_err), "force_sigma": np.concatenate(f_unc),
                "energy_error": np.array(e_err), "energy_sigma": np.array(e_unc),
                "structure": np.concatenate(s_idx)}

    def calibrate(self, frames: Sequence[Atoms], progress: bool = False, strict: bool = True) -> Dict:
        """Fit the σ calibration on held-out labelled frames (RMS error/σ = 1 there; module doc).
        Frames whose force errors the floor alone covers (perfect crystals) would fit a force
        factor of 0, every σ then the floor: an InputError, unless ``strict`` is False (the study
        measures what such a calibration does beyond its data)."""
        d = self.errors_and_sigma(frames, calibrated=False, progress=progress)
        floor = metrics.FORCE_RESOLUTION
        try:
            fs = metrics.calibration_factor(d["force_error"], d["force_sigma"] / np.sqrt(3.0), dof=3, floor=floor)
            es = metrics.calibration_factor(d["energy_error"], d["energy_sigma"], dof=1)
        except ValueError as exc:
            raise InputError(f"calibration structures: {exc}: the members agree exactly on all of them (too "
                             f"few training structures for members to differ?)") from None
        # the members' mean on these held-out frames, as training_rmse
        rmse_forces = float(np.sqrt(np.mean(d["force_error"] ** 2) / 3.0))
        if fs == 0.0 and strict:
            raise InputError(
                f"calibration structures: their force errors (RMS {rmse_forces:.3g} eV/Å) are within the "
                f"resolution of the reference forces, so they cannot scale σ (perfect crystals have no forces): "
                f"calibrate on structures that the members get wrong, e.g. MD snapshots")
        self.calibration = {"energy": es, "forces": fs, "forces_floor": floor, "fitted": True,
                            "n_structures": len(d["energy_error"]), "n_atoms": int(d["force_error"].size),
                            "rmse_energy_per_atom": float(np.sqrt(np.mean(d["energy_error"] ** 2))),
                            "rmse_forces": rmse_forces}
        return self.calibration

    def save_calibration(self, folder: str) -> None:
        """Store the calibration factors in ``folder/ensemble.json`` (created for a plain list of members)."""
        man = dict(self.manifest or {"format": FORMAT, "version": 1, "elements": self.elements,
                                     "members": [os.path.abspath(p) for p in self.paths],
                                     "reference_energy": self.reference_energy})
        man["calibration"] = self.calibration
        write_manifest(folder, man)
        self.manifest = man


# ======================================================================= ASE
class EnsembleCalculator(ACECalculator):
    """:class:`aceuq.ACECalculator` on an ensemble (and only on one): the members' mean
    energy/forces plus energy_std, energies_std, forces_std (pyace's PyACEEnsembleCalculator
    names; calibrated if the manifest has factors) and force_uncertainty (see module doc).

    >>> atoms.calc = EnsembleCalculator("ens_dir")
    >>> atoms.get_forces(); atoms.calc.results["forces_std"]
    """

    def __init__(self, ensemble, calibrated: bool = True, **kwargs):
        super().__init__(ensemble if isinstance(ensemble, Ensemble) else Ensemble.load(ensemble),
                         calibrated=calibrated, **kwargs)
