"""Active sets: building them (global per element, or clustered per DESIGN.md), saving them as
pacemaker ``.asi`` or aceuq ``.casi``, and grading atoms against them with the C++ Grader.

Clusters (per element): features from the two- and three-body B functions (rank <= 2; all
functions when a basis has fewer than two of them), standardized, PCA to at most 32 dimensions
(eigenvectors of the covariance; components whose variance is at most 1e-5 of the largest are
dropped), whitened (each component divided by the standard deviation of its scores), k-means (Lloyd with
greedy k-means++ starts as in scikit-learn, in numpy: n_init=4, fixed random_state; beyond 20000
atoms the 4 starts compete on a sample of 20000 and the best is refined on all atoms). ``clusters="auto"`` chooses k by the silhouette
score of k = 2..8 on the PCA features (k-means with n_init=1 on a sample of at most 20000 atoms,
scored on 3000 of them; the chosen k is then fitted on all atoms): the largest score wins, but a smaller k within 0.02 of it is preferred (fewer
atoms per cluster make every local active set worse conditioned, and the study found k = 2-4
best, k = 8 noisier); if no k scores above 0.1 the data has no cluster structure and k = 1.
Whatever k is asked for, every cluster must hold at least n_projections atoms (MaxVol needs a
square submatrix): the smallest too-small cluster is dropped, its atoms go to the nearest
remaining centre, k-means is rerun from the remaining centres, until all are large enough. The
effective k is reported. Atoms belong to the cluster of their nearest centre, which is what the
Grader's ``assign nearest`` computes, so every training atom has gamma <= 1 + tol in it.

Why only rank <= 2 for the clusters: they are the radial and bond-angle distributions of the
neighbourhood (coordination, bond lengths and angles), the quantities that tell a surface or a
liquid from a crystal; their number grows slowly with the basis (25 of 30 functions, 168 of 1000 for
the study's Si bases). Standardizing all functions instead gives the hundreds of many-body functions
of a large basis the same weight each, so they dominate the PCA and the clusters follow many-body
detail (on mlearn Si with 1000 functions the crystal-like cluster then keeps ~300 liquid atoms,
which span the surface atoms graded there: surface-novelty ROC-AUC of local gamma 0.81 instead of
0.95, both measured before the whitening below). The active sets themselves use all functions. The
transform is stored as before (T(b) = ((b - mean)/scale)·componentsᵀ, components zero on the columns
not used, the whitening folded into the components), so .casi files and the Grader do not change.

Why whitened: k-means with Euclidean distances splits along the directions of largest spread. Over a
heterogeneous training set that is often the spread within one kind of environment rather than the
gap between kinds (on mlearn Si at 30 functions, the spread within the liquid groups is half the
variance of the first two components). With every kept direction at unit variance, the k = 2
clusters of mlearn Si are the liquid atoms and the rest at every basis size (without whitening, up
to half the liquid atoms fell in the crystal-like cluster and spanned the surfaces graded there),
and the surface-novelty ROC-AUC of local gamma rose from 0.95-0.98 to 0.98-0.99 at 30 to 1000
functions. The variance cut keeps whitening from blowing up directions the data does not really vary
in (rounding and fitting noise): with a cut of 1e-6 instead of 1e-5 the AUC falls by about 0.02 at
100 and 300 functions.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms

from . import _core
from ._core import InputError
from .data import atomic_output, sigterm_as_exit
from .maxvol import (DEFAULT_MAX_ITERS, DEFAULT_RANK_RTOL, DEFAULT_TOL, ActiveSetMatrix, check_maxvol_args,
                     parse_memory, select_active_set)
from .potential import Potential, as_frames
from .progress import progress as show_progress

CASI_FORMAT = "aceuq.casi"
CASI_VERSION = 1
GAMMA_BATCH_VALUES = 1 << 23  # projection values graded at a time by ActiveSet.gamma (64 MB)
MAX_PCA_DIM = 32
WHITEN_RTOL = 1e-5          # clustering features: PCA components with variance > this x the largest
# ... and > this (a standardized feature that varies has variance 1): below it, only rounding noise
WHITEN_ATOL = 1e-6
# A projection whose standard deviation over the atoms is below this x the largest RMS value of
# any projection is constant up to rounding (a function that vanishes by symmetry, or one that is
# the same for every atom of perfect crystals): standardized by that floor, not by its own spread,
# which would turn the rounding noise into a feature of unit variance.
CONSTANT_RTOL = 1e-10
CLUSTER_MAX_RANK = 2        # clustering features: B functions of rank (body order - 1) <= this
AUTO_K = range(2, 9)
RANDOM_STATE = 0
SILHOUETTE_SAMPLE = 3000
AUTO_K_SAMPLE = 20000
KMEANS_N_INIT = 4
_CHUNK = 8192
SILHOUETTE_NEAR = 0.02
SILHOUETTE_MIN = 0.1


# ----------------------------------------------------------------- built sets

@dataclass
class ElementSet:
    """Active sets of one element: one per cluster, with the feature transform when k > 1."""

    element: str
    n_atoms: int
    n_projections: int
    k_requested: Union[int, str]
    inverses: List[np.ndarray]
    matrices: List[ActiveSetMatrix] = field(default_factory=list)
    cluster_sizes: List[int] = field(default_factory=list)
    mean: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    components: Optional[np.ndarray] = None
    centers: Optional[np.ndarray] = None
    active_rows: List[np.ndarray] = field(default_factory=list)  # (structure, atom) pairs per cluster
    notes: List[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """Number of clusters (1: global)."""
        return len(self.inverses)

    def transform(self, b: np.ndarray) -> np.ndarray:
        """Projections (rows) in the clustering space: standardised, then the PCA components."""
        return ((b - self.mean) / self.scale) @ self.components.T


@dataclass
class BuiltActiveSet:
    """What ``build_active_set`` returns; ``save`` writes .asi (all k = 1) or .casi."""

    potential: Potential
    mode: str
    assign: str
    elements: Dict[str, ElementSet]

    @property
    def clustered(self) -> bool:
        """Whether any element has more than one cluster (then only a .casi holds it)."""
        return any(s.k > 1 for s in self.elements.values())

    def save(self, path) -> str:
        """Write a pacemaker .asi (global sets) or an aceuq .casi (clustered sets, or a path ending
        in .casi), atomically; returns the path written."""
        path = os.fspath(path)
        if self.clustered or path.endswith(".casi"):
            if path.endswith((".asi", ".asi.nonlinear")):
                raise InputError(f"'{path}': a clustered active set is written as .casi, not .asi")
            write_casi(path, self)
        else:
            check_asi_holds(path, self.potential, self.mode)
            write_asi(path, {el: s.inverses[0] for el, s in self.elements.items()})
        return path

    def summary(self) -> List[str]:
        """Lines for a person, per element: atoms, projections, clusters asked for and kept (with
        their sizes), each cluster's rank and condition numbers, and any notes."""
        lines = []
        for el, s in self.elements.items():
            conds = ", ".join(f"{m.condition:.3g}" for m in s.matrices)
            raw = ", ".join(f"{m.raw_condition:.3g}" if np.isfinite(m.raw_condition) else "singular"
                            for m in s.matrices)
            ranks = ", ".join(str(m.rank) for m in s.matrices)
            lines.append(f"{el}: {s.n_atoms} atoms, {s.n_projections} projections, k requested {s.k_requested}, "
                         f"effective k {s.k} (cluster sizes {s.cluster_sizes})")
            lines.append(f"  {el}: per cluster: rank [{ranks}]; condition number of the selected rows in the "
                         f"rank-r space MaxVol used [{conds}], of the raw selected rows [{raw}]")
            lines.extend(f"  {el}: {n}" for n in s.notes)
            for c, m in enumerate(s.matrices):
                lines.extend(f"  {el}/cluster {c}: {n}" for n in m.notes)
        return lines


# ----------------------------------------------------------------- writing

def _atomic_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write arrays as an .npz, atomically; refused (InputError) when aceuq's reader (the C++ core,
    in Python and LAMMPS) would refuse to read it back for its size."""
    header = 1024  # (an upper bound on np.save's header of such an array)
    big = max(arrays, key=lambda k: arrays[k].nbytes, default=None)
    if big is not None and arrays[big].nbytes + header > _core.NPZ_MAX_ENTRY_BYTES:
        raise InputError(f"'{path}': entry '{big}' would hold {arrays[big].nbytes} bytes, more than the "
                         f"{int(_core.NPZ_MAX_ENTRY_BYTES) - header} an active set entry may hold to be read back "
                         f"(1 GiB with its header)")
    total = sum(a.nbytes + header for a in arrays.values())
    if total > _core.NPZ_MAX_TOTAL_BYTES:
        raise InputError(f"'{path}': the arrays would hold {total} bytes in all (with their headers), more than "
                         f"the {int(_core.NPZ_MAX_TOTAL_BYTES)} (2 GiB) an active set may hold to be read back")
    with atomic_output(path, "wb") as fh:
        np.savez(fh, **arrays)


def check_asi_holds(path, potential: Potential, mode: str) -> None:
    """InputError unless an .asi at path can hold active sets of this mode: an .asi has no field
    for the mode, which readers (aceuq's and pyace's) tell from the widths of its arrays, and with
    one density full projections are as wide as linear ones (they would be read back as linear)."""
    if mode != "full":
        return
    one = [el for el in potential.elements if potential.ndensity(el) == 1]
    if one:
        raise InputError(f"'{os.fspath(path)}': full-mode active sets of {', '.join(one)} (one density: full "
                         f"projections as wide as linear ones) would be read back from an .asi as linear; "
                         f"write a .casi, which records the mode")


def write_asi(path, inverses: Dict[str, np.ndarray]) -> None:
    """pacemaker .asi: one square array per element, keyed by element name.

    Keys are written in sorted order: pyace's Python loader gives the i-th sorted key to species
    i, and pyace numbers species in sorted element order, so both its loaders (and ours, by
    name) agree."""
    _atomic_npz(os.fspath(path), {el: np.ascontiguousarray(inverses[el], dtype=float) for el in sorted(inverses)})


def write_casi(path, built: BuiltActiveSet) -> None:
    """The .casi layout (README, File formats): per element its transform, centres and one inverse
    per cluster, plus a JSON 'meta' entry (format, potential fingerprint, mode, assignment rule,
    clusters per element)."""
    arrays: Dict[str, np.ndarray] = {}
    for el in sorted(built.elements):
        s = built.elements[el]
        for c, inv in enumerate(s.inverses):
            arrays[f"{el}/inv/{c}"] = np.ascontiguousarray(inv, dtype=float)
        if s.k > 1:
            arrays[f"{el}/centers"] = s.centers
            arrays[f"{el}/mean"] = s.mean
            arrays[f"{el}/scale"] = s.scale
            arrays[f"{el}/components"] = s.components
    meta = {
        "format": CASI_FORMAT, "version": CASI_VERSION, "elements": sorted(built.elements), "mode": built.mode,
        "fingerprint": built.potential.active_set_fingerprint(built.mode), "assign": built.assign,
        "clusters": {el: s.k for el, s in built.elements.items()},
        "n_projections": {el: s.n_projections for el, s in built.elements.items()},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _atomic_npz(os.fspath(path), arrays)


# ----------------------------------------------------------------- loading and grading

class ActiveSet:
    """A saved active set (.asi or .casi) checked against its potential; grades atoms.

    >>> aset = ActiveSet.load("pot.casi", pot)
    >>> gamma, cluster = aset.gamma(atoms)          # per atom
    """

    def __init__(self, path: str, potential: Potential, grader):
        self.path = path
        self.potential = potential
        self._grader = grader
        self._fingerprint = potential.active_set_fingerprint(self.mode)  # what the file was checked against

    @classmethod
    def load(cls, path, potential: Union[Potential, str], assign: Optional[str] = None) -> "ActiveSet":
        """The active set at ``path`` (.asi or .casi) of ``potential`` (a Potential, or its file)."""
        path = os.fspath(path)
        if not isinstance(potential, Potential):
            potential = Potential(os.fspath(potential))
        if not os.path.exists(path):
            raise InputError(f"active set '{path}': no such file")
        grader = _core.Grader(path, potential._pot)
        aset = cls(path, potential, grader)
        if assign is not None:
            aset.assign = assign
        return aset

    @property
    def mode(self) -> str:
        """The projections it grades: "linear" (B functions) or "full" (dE/dc)."""
        return "full" if self._grader.full else "linear"

    @property
    def assign(self) -> str:
        """How an atom picks its cluster: "nearest" centre, or "min" (the cluster of smallest γ)."""
        return self._grader.assign

    @assign.setter
    def assign(self, value: str) -> None:
        if value not in ("nearest", "min"):
            raise ValueError(f"assign must be 'nearest' or 'min', got {value!r}")
        self._grader.assign = value

    def n_clusters(self, element: str) -> int:
        """Clusters of the element's active set (1 for an .asi)."""
        return self._grader.n_clusters(self.potential._element_index(element))

    def grade(self, element: str, projections: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """gamma and cluster of rows of projections of one element."""
        mu = self.potential._element_index(element)
        return self._grader.grade(mu, np.ascontiguousarray(projections, dtype=float))

    def check_potential(self, potential: Potential) -> None:
        """ValueError unless ``potential`` gives the projections this set grades: the basis it was
        loaded for and, in full mode, the coefficients too (dE/dc depends on them, and
        set_coefficients may have changed them since)."""
        if potential.active_set_fingerprint(self.mode) == self._fingerprint:
            return
        why = ("in full mode it was built for other coefficients than those it has now (set_coefficients "
               "included), and full projections (dE/dc) depend on them: load an active set built for these "
               "coefficients" if self.mode == "full" else "another basis")
        raise ValueError(f"active set '{self.path}' was loaded for another potential than '{potential.path}': {why}")

    def gamma(self, structures: Union[Atoms, Sequence[Atoms]], progress: bool = False):
        """Per-atom (gamma, cluster) of one structure, or a list of them for a list of structures.

        Structures are graded a batch at a time (about GAMMA_BATCH_VALUES projection values), so
        a long trajectory needs no more memory than its structures and their grades."""
        single = isinstance(structures, Atoms)
        frames = as_frames(structures, "ActiveSet.gamma")
        self.check_potential(self.potential)
        width = max(self.potential.n_projections(el, self.mode) for el in self.potential.elements)
        out: List[Tuple[np.ndarray, np.ndarray]] = []
        first, atoms_in_batch = 0, 0
        for i, atoms in enumerate(show_progress(frames, progress, "gamma", unit="struct")):
            atoms_in_batch += len(atoms)
            if atoms_in_batch * width >= GAMMA_BATCH_VALUES or i == len(frames) - 1:
                batch = frames[first:i + 1]
                proj = self.potential.projections(batch, mode=self.mode, first_index=first)
                out.extend(self.grade_projections(proj, [len(a) for a in batch]))
                first, atoms_in_batch = i + 1, 0
        return out[0] if single else out

    def grade_rows(self, symbols: Sequence[str], projections: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per-atom (gamma, cluster) of one structure from its projection rows as
        ``Potential.evaluate(..., projections=mode)`` returns them (one row per atom, padded)."""
        symbols = np.asarray(symbols)
        gamma, cluster = np.zeros(len(symbols)), np.zeros(len(symbols), dtype=np.int32)
        for el in np.unique(symbols):
            rows = np.flatnonzero(symbols == el)
            width = self.potential.n_projections(str(el), self.mode)
            gamma[rows], cluster[rows] = self.grade(str(el), projections[rows, :width])
        return gamma, cluster

    def grade_projections(self, projections, n_atoms: Sequence[int]):
        """Per-structure (gamma, cluster) from ``Potential.projections`` output (in this active
        set's mode) of structures with ``n_atoms`` atoms each."""
        start = np.concatenate([[0], np.cumsum(n_atoms, dtype=np.int64)])
        gamma, cluster = np.zeros(start[-1]), np.zeros(start[-1], dtype=np.int32)
        for el, p in projections.items():
            if len(p.values) == 0:
                continue
            rows = start[p.structure] + p.atom
            gamma[rows], cluster[rows] = self.grade(el, p.values)
        return [(gamma[a:b].copy(), cluster[a:b].copy()) for a, b in zip(start[:-1], start[1:])]

    def active_matrices(self) -> Dict[str, List[np.ndarray]]:
        """{element: [active-set matrix per cluster]}: the inverse of each stored grading matrix
        (rows that reproduce gamma; for a pacemaker file, the selected atoms' projections)."""
        data = load_npz(self.path)
        out: Dict[str, List[np.ndarray]] = {}
        for el in self.potential.elements:
            mats = _stored_inverses(data, el)
            out[el] = [np.linalg.pinv(m) for m in mats]
        return out


def load_npz(path) -> Dict[str, np.ndarray]:
    """The arrays of an .asi/.casi, read without pickles; InputError naming the file otherwise."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputError(f"active set '{path}': cannot be read as .npz ({type(exc).__name__}: {exc})") from None


def _stored_inverses(data: Dict[str, np.ndarray], el: str) -> List[np.ndarray]:
    if el in data:
        return [data[el]]
    mats, c = [], 0
    while f"{el}/inv/{c}" in data:
        mats.append(data[f"{el}/inv/{c}"])
        c += 1
    return mats


# ----------------------------------------------------------------- building

def build_active_set(potential: Potential, structures: Sequence[Atoms], clusters: Union[int, str] = 1,
                     mode: str = "linear", assign: str = "nearest", tol: float = DEFAULT_TOL,
                     max_iters: int = DEFAULT_MAX_ITERS, memory_limit: Optional[int] = None,
                     rank_rtol: float = DEFAULT_RANK_RTOL, random_state: int = RANDOM_STATE,
                     progress: bool = False, projections=None) -> BuiltActiveSet:
    """Active sets of every element of the potential from the atoms of `structures`.

    clusters: 1 (global, pacemaker's .asi), an int k, or "auto". mode: "linear" or "full".
    projections: precomputed ``potential.projections(structures, mode)`` (optional)."""
    if mode not in ("linear", "full"):
        raise ValueError("mode must be 'linear' or 'full'")
    if assign not in ("nearest", "min"):
        raise ValueError("assign must be 'nearest' or 'min'")
    if not (clusters == "auto" or (isinstance(clusters, (int, np.integer)) and clusters >= 1)):
        raise ValueError(f"clusters must be 'auto' or a positive integer, got {clusters!r}")
    check_maxvol_args(tol, max_iters)
    if not (isinstance(rank_rtol, (float, int)) and 0 < rank_rtol < 1):
        raise ValueError(f"rank_rtol must be a number between 0 and 1, got {rank_rtol!r}")
    memory_limit = parse_memory(memory_limit)  # also '2GB', as the CLI's --memory-limit
    # (SIGTERM, e.g. `timeout`, ends the build as an exception does, so the spilled projections go)
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="aceuq-projections-") as spill:
        if projections is None:
            structures = as_frames(structures, "build_active_set")
            # Projections beyond half the memory limit go to memory-mapped files; global MaxVol
            # then streams them in batches.
            n_atoms = sum(len(a) for a in structures)
            width = max(potential.n_projections(el, mode) for el in potential.elements)
            on_disk = memory_limit is not None and 8 * n_atoms * width > memory_limit // 2
            projections = potential.projections(structures, mode=mode, progress=progress,
                                                memmap_dir=spill if on_disk else None)
        return _build_all(potential, projections, clusters, mode, assign, tol, max_iters, memory_limit, rank_rtol,
                          random_state, progress)


def _build_all(potential, proj, clusters, mode, assign, tol, max_iters, memory_limit, rank_rtol, random_state,
               progress) -> BuiltActiveSet:
    sets = {}
    for el in potential.elements:
        p = proj[el]
        n_proj = potential.n_projections(el, mode)
        if (p.mode and p.mode != mode) or p.values.shape[1] != n_proj:
            raise ValueError(f"projections of {el}: {p.mode or 'given'} projections {p.values.shape[1]} wide, but "
                             f"the active set is built on {mode} projections, {n_proj} wide")
        if len(p.values) < n_proj:
            raise InputError(f"element {el}: {len(p.values)} training atoms for {n_proj} projections; an active set "
                             f"needs at least as many atoms as projections (add structures, or use a smaller basis)")
        sets[el] = _build_element(el, p, n_proj, clusters, tol, max_iters, memory_limit, rank_rtol, random_state,
                                  progress, potential, mode)
    return BuiltActiveSet(potential, mode, assign, sets)


def _build_element(el, p, n_proj, clusters, tol, max_iters, memory_limit, rank_rtol, random_state, progress,
                   potential, mode):
    values = p.values
    n = len(values)
    s = ElementSet(element=el, n_atoms=n, n_projections=n_proj, k_requested=clusters, inverses=[])
    labels = np.zeros(n, dtype=int)
    k_cap = n // n_proj
    clustered = clusters == "auto" or clusters > 1
    if clustered:
        columns = feature_columns(potential, el, mode)
        mean, scale, comps = cluster_transform(values, int(min(MAX_PCA_DIM, len(columns), n - 1)), columns)
        if len(comps) == 0:
            s.notes.append("the clustering features do not vary over the training atoms: one cluster")
            clustered = False
    if clustered:
        feats = np.empty((n, len(comps)))
        for a in range(0, n, _CHUNK):
            feats[a: a + _CHUNK] = ((np.asarray(values[a: a + _CHUNK], dtype=float) - mean) / scale) @ comps.T
        if clusters == "auto":
            k, scores = choose_k(feats, k_cap, random_state)
            tried = (", ".join(f"k={kk}: {sc:.3f}" for kk, sc in scores.items()) if scores else
                     "no k above 1 to try")
            s.notes.append(f"auto k: silhouette {tried} -> k={k}" + (f" (at most {k_cap}: {n} atoms / {n_proj} "
                                                                      "projections)" if k_cap < max(AUTO_K) else ""))
        else:
            k = int(clusters)
            if k > max(k_cap, 1):
                s.notes.append(f"k={k} requested; at most {max(k_cap, 1)} clusters of >= {n_proj} atoms "
                               f"({n} atoms / {n_proj} projections)")
        if k > 1:
            labels, centers, merge_notes = cluster_with_minimum_size(feats, k, n_proj, random_state)
            s.notes.extend(merge_notes)
            if len(centers) > 1:
                s.mean, s.scale, s.components, s.centers = mean, scale, comps, centers
            else:
                labels = np.zeros(n, dtype=int)
    k_eff = int(labels.max()) + 1
    for c in range(k_eff):
        idx = np.nonzero(labels == c)[0]
        # a cluster's rows read from the element's (possibly memory-mapped) projections a batch at
        # a time, as MaxVol streams them: a copy of them would not heed memory_limit
        rows = values if k_eff == 1 else _RowSubset(values, idx)
        # a cluster's active set has no pacemaker counterpart to retrace: the greedy swaps start
        # from the working set alone (the LU of all rows cost a third of the clustered build)
        m = select_active_set(rows, tol=tol, max_iters=max_iters, rank_rtol=rank_rtol, memory_limit=memory_limit,
                              pacemaker_start=k_eff == 1, progress=progress,
                              desc=f"MaxVol {el}" + (f"/{c}" if k_eff > 1 else ""))
        chosen = m.rows if k_eff == 1 else idx[m.rows]
        s.inverses.append(m.inverse)
        s.matrices.append(m)
        s.cluster_sizes.append(len(idx))
        s.active_rows.append(np.stack([p.structure[chosen], p.atom[chosen]], axis=1))
    return s


def feature_columns(potential: Potential, element: str, mode: str = "linear") -> np.ndarray:
    """Projection columns the clusters are built on: the B functions of rank <= CLUSTER_MAX_RANK
    (in full mode, those columns of every density block); all columns when there are fewer than
    two such functions."""
    ranks = potential.function_ranks(element)
    n_proj = potential.n_projections(element, mode)
    if len(ranks) == 0:
        return np.arange(n_proj)
    cols = np.nonzero(np.tile(ranks, n_proj // len(ranks)) <= CLUSTER_MAX_RANK)[0]  # full: density-major
    return cols if len(cols) >= 2 else np.arange(n_proj)


def cluster_transform(values, dim: int, columns: np.ndarray):
    """(mean, scale, components) of the clustering features: the standardized PCA of ``columns``
    (at most ``dim`` components), whitened (each component divided by the standard deviation of
    its scores, so every kept direction has unit variance over the training atoms), keeping only
    the components whose variance exceeds WHITEN_RTOL times the largest and WHITEN_ATOL (below
    that, whitening would blow up directions the data hardly varies in: rounding and fitting
    noise)."""
    mean, scale, comps, var = standardized_pca(values, dim, columns, variances=True)
    keep = (var > WHITEN_RTOL * var[0]) & (var > WHITEN_ATOL)
    return mean, scale, np.ascontiguousarray(comps[keep] / np.sqrt(var[keep])[:, None])


def standardized_pca(values, dim: int, columns: Optional[np.ndarray] = None, variances: bool = False):
    """(mean, scale, components) of the PCA of the standardized rows (x - mean) / scale: scale the
    standard deviation, floored at CONSTANT_RTOL times the largest RMS value of a column (1 where
    all are 0), components (dim, p) the leading eigenvectors of the
    covariance (in chunks: no standardized copy of the data and no n x dim U of an SVD), each
    signed so that its largest-magnitude entry is positive. With ``columns``, the PCA of those
    columns only: components are zero elsewhere (rows of zeros if dim exceeds their number).
    With ``variances``, also the variance of the standardized rows along each component."""
    n, p = values.shape
    if columns is not None and len(columns) < p:
        columns = np.asarray(columns, dtype=int)
        mean, scale, sub, var = standardized_pca(_ColumnView(values, columns), min(dim, len(columns)),
                                                 variances=True)
        comps, full_var = np.zeros((dim, p)), np.zeros(dim)
        comps[: len(sub)][:, columns], full_var[: len(var)] = sub, var
        full_mean, full_scale = np.zeros(p), np.ones(p)
        full_mean[columns], full_scale[columns] = mean, scale
        return (full_mean, full_scale, comps) + ((full_var,) if variances else ())
    mean = np.zeros(p)
    for a in range(0, n, _CHUNK):
        mean += np.asarray(values[a: a + _CHUNK], dtype=float).sum(axis=0)
    mean /= n
    gram = np.zeros((p, p))
    for a in range(0, n, _CHUNK):
        x = np.asarray(values[a: a + _CHUNK], dtype=float) - mean
        gram += x.T @ x
    scale = np.sqrt(np.maximum(np.diag(gram), 0.0) / n)
    scale = np.maximum(scale, CONSTANT_RTOL * np.sqrt(mean ** 2 + scale ** 2).max())
    scale[scale == 0] = 1.0
    cov = gram / np.outer(scale, scale)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:dim]
    comps = v[:, order].T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1.0
    out = (mean, scale, np.ascontiguousarray(comps * signs[:, None]))
    return out + ((np.maximum(w[order], 0.0) / n,) if variances else ())


class _RowSubset:
    """Some rows of a (possibly memory-mapped) matrix, as a 2-D array-like that reads only the rows
    asked for (by slice or index array), for select_active_set."""

    ndim = 2

    def __init__(self, values, rows):
        self.values, self.rows = values, np.asarray(rows, dtype=int)
        self.shape = (len(self.rows), values.shape[1])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        return np.asarray(self.values[self.rows[key]])


class _ColumnView:
    """Some columns of a (possibly memory-mapped) matrix, read in row chunks."""

    def __init__(self, values, columns):
        self.values, self.columns = values, columns
        self.shape = (len(values), len(columns))

    def __getitem__(self, rows):
        return np.asarray(self.values[rows], dtype=float)[:, self.columns]


def choose_k(feats: np.ndarray, k_cap: int, random_state: int = RANDOM_STATE) -> Tuple[int, Dict[int, float]]:
    """The k of the module docstring's rule, and the silhouette score of each k tried."""
    ks = [k for k in AUTO_K if k <= k_cap and k < len(feats)]
    if not ks:
        return 1, {}
    rng = np.random.default_rng(random_state)
    if len(feats) > AUTO_K_SAMPLE:  # the search runs on a sample; the chosen k is fitted on all rows
        feats = feats[np.sort(rng.choice(len(feats), size=AUTO_K_SAMPLE, replace=False))]
    sample = rng.choice(len(feats), size=min(len(feats), SILHOUETTE_SAMPLE), replace=False)
    scores = {}
    for k in ks:
        _, labels = kmeans(feats, k, n_init=1, random_state=random_state)
        if len(np.unique(labels[sample])) < 2:
            scores[k] = -1.0
            continue
        scores[k] = silhouette(feats[sample], labels[sample])
    best = max(scores.values())
    if best < SILHOUETTE_MIN:
        return 1, scores
    k = min(kk for kk, sc in scores.items() if sc >= best - SILHOUETTE_NEAR)
    return k, scores


def cluster_with_minimum_size(feats: np.ndarray, k: int, min_size: int, random_state: int = RANDOM_STATE):
    """k-means with every cluster holding >= min_size points (the module docstring's merge rule).
    Returns (labels, centers, notes); labels are the nearest centre of each point."""
    merged = []  # sizes of the clusters merged away, in order
    k_asked = k
    k = min(k, max(len(feats) // min_size, 1))
    if len(feats) > AUTO_K_SAMPLE:  # the n_init starts compete on a sample; the best is refined on all rows
        rng = np.random.default_rng(random_state)
        sample = feats[np.sort(rng.choice(len(feats), size=AUTO_K_SAMPLE, replace=False))]
        centers, _ = kmeans(sample, k, n_init=KMEANS_N_INIT, random_state=random_state)
        centers, _ = kmeans(feats, k, init=centers, random_state=random_state)
    else:
        centers, _ = kmeans(feats, k, n_init=KMEANS_N_INIT, random_state=random_state)
    while True:
        labels = _nearest(feats, centers)
        sizes = np.bincount(labels, minlength=len(centers))
        if sizes.min() >= min_size or len(centers) == 1:
            break
        small = int(np.argmin(sizes))
        merged.append(int(sizes[small]))
        centers = np.delete(centers, small, axis=0)
        if len(centers) > 1:
            centers, _ = kmeans(feats, len(centers), init=centers, random_state=random_state)
    labels = _nearest(feats, centers)
    notes = [f"{len(merged)} cluster(s) of fewer than {min_size} atoms (the projections) merged into the nearest "
             f"remaining ones (sizes {', '.join(map(str, merged))}); k {k_asked} -> {len(centers)}"] if merged else []
    return labels, np.ascontiguousarray(centers), notes


def kmeans(X: np.ndarray, k: int, n_init: int = KMEANS_N_INIT, random_state: int = RANDOM_STATE,
           init: Optional[np.ndarray] = None, max_iter: int = 300, tol: float = 1e-4):
    """Lloyd's k-means (what scikit-learn's KMeans computes, without importing scikit-learn, which
    alone takes longer than the clustering): greedy k-means++ starts (2 + log k candidates per
    centre), n_init of them, the run of least inertia wins; or one run from `init`. Stops when
    the centres move by less than tol times the mean feature variance (squared). Returns
    (centers, labels)."""
    X = np.asarray(X, dtype=float)
    rng = np.random.default_rng(random_state)
    stop = tol * float(np.mean(X.var(axis=0)))
    xx = np.einsum("ij,ij->i", X, X)
    best = None
    for _ in range(1 if init is not None else max(n_init, 1)):
        C = np.array(init, dtype=float) if init is not None else _kmeans_pp(X, xx, k, rng)
        for _ in range(max_iter):
            labels, d2 = _assign(X, xx, C)
            counts = np.bincount(labels, minlength=len(C))
            onehot = (labels[None, :] == np.arange(len(C))[:, None]).astype(float)
            new = (onehot @ X) / np.maximum(counts, 1)[:, None]
            for j in np.nonzero(counts == 0)[0]:  # an empty cluster restarts at the farthest point
                far = int(np.argmax(d2))
                new[j] = X[far]
                d2[far] = 0.0
            shift = float(((new - C) ** 2).sum())
            C = new
            if shift <= stop:
                break
        labels, d2 = _assign(X, xx, C)
        inertia = float(d2.sum())
        if best is None or inertia < best[0]:
            best = (inertia, C, labels)
    return best[1], best[2]


def _kmeans_pp(X, xx, k, rng):
    n = len(X)
    trials = 2 + int(np.log(k))
    centers = [X[rng.integers(n)]]
    d2 = np.maximum(xx - 2 * X @ centers[0] + centers[0] @ centers[0], 0.0)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * total)
            cand = np.minimum(cand, n - 1)
        dc = np.maximum(xx[:, None] - 2 * X @ X[cand].T + xx[cand][None, :], 0.0)
        dc = np.minimum(dc, d2[:, None])
        pick = int(np.argmin(dc.sum(axis=0)))
        centers.append(X[cand[pick]])
        d2 = dc[:, pick]
    return np.array(centers)


def _assign(X, xx, C):
    """Nearest centre and squared distance of each row (expanded form; chunked)."""
    labels = np.empty(len(X), dtype=int)
    d2 = np.empty(len(X))
    cc = np.einsum("ij,ij->i", C, C)
    for s in range(0, len(X), _CHUNK):
        d = xx[s: s + _CHUNK, None] - 2 * X[s: s + _CHUNK] @ C.T + cc[None, :]
        labels[s: s + _CHUNK] = d.argmin(axis=1)
        d2[s: s + _CHUNK] = np.maximum(d[np.arange(len(d)), labels[s: s + _CHUNK]], 0.0)
    return labels, d2


def silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (scikit-learn's silhouette_score, Euclidean): (b - a) / max(a, b)
    per point, a the mean distance to the rest of its cluster, b to the nearest other cluster; 0
    for points alone in their cluster."""
    X = np.asarray(X, dtype=float)
    uniq, lab = np.unique(labels, return_inverse=True)
    counts = np.bincount(lab, minlength=len(uniq)).astype(float)
    xx = np.einsum("ij,ij->i", X, X)
    onehot = np.zeros((len(X), len(uniq)))
    onehot[np.arange(len(X)), lab] = 1.0
    sums = np.empty((len(X), len(uniq)))
    for s in range(0, len(X), 1024):
        d = np.sqrt(np.maximum(xx[s: s + 1024, None] - 2 * X[s: s + 1024] @ X.T + xx[None, :], 0.0))
        d[np.arange(len(d)), np.arange(s, s + len(d))] = 0.0
        sums[s: s + 1024] = d @ onehot
    own = counts[lab]
    a = sums[np.arange(len(X)), lab] / np.maximum(own - 1, 1)
    other = sums / counts[None, :]
    other[np.arange(len(X)), lab] = np.inf
    b = other.min(axis=1)
    sil = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(np.mean(sil))


def _nearest(feats, centers):
    # squared differences of the features; the Grader folds the transform and the centres into one
    # product (|T(b)|^2 - 2 T(b).c + |c|^2), so the two can disagree only on an atom whose distances
    # to two centres agree to rounding
    out = np.empty(len(feats), dtype=int)
    for s in range(0, len(feats), 4096):
        f = feats[s: s + 4096]
        out[s: s + 4096] = ((f[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return out
