"""ACE potentials in the pacemaker ``.yaml`` format, evaluated by the C++ core."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from . import _core
from ._core import InputError
from .data import structure_label
from .progress import progress as show_progress

_MODES = (None, "linear", "full")


@dataclass
class EvaluationResult:
    """What the potential says about one structure (ASE units: eV, eV/Å, eV/Å³)."""

    energy: float
    energies: np.ndarray                  # (n_atoms,)
    forces: Optional[np.ndarray] = None   # (n_atoms, 3)
    stress: Optional[np.ndarray] = None   # Voigt (xx, yy, zz, yz, xz, xy), ASE sign; None if not periodic
    virial: Optional[np.ndarray] = None   # (3, 3) dE/dstrain
    projections: Optional[np.ndarray] = None  # (n_atoms, width); rows of each element padded with zeros


def as_frames(structures, what: str = "structures") -> List[Atoms]:
    """The structures of an argument that takes one ase.Atoms or several (a list of one for a
    single one); a file name, or anything else, is refused with a TypeError that says what to do."""
    if isinstance(structures, Atoms):
        return [structures]
    if isinstance(structures, (str, bytes, os.PathLike)):
        raise TypeError(f"{what}: ase.Atoms or a list of them, not the file name {os.fspath(structures)!r}: read "
                        f"it first (aceuq.data.read_structures, or ase.io.read(path, ':'))")
    frames = list(structures)
    for i, a in enumerate(frames):
        if not isinstance(a, Atoms):
            raise TypeError(f"{what}: item {i} is a {type(a).__name__}, not an ase.Atoms")
    return frames


class Potential:
    """A pacemaker B-basis ACE potential.

    >>> pot = Potential("output_potential.yaml")
    >>> res = pot.evaluate(atoms)             # energy, energies, forces, stress
    >>> proj = pot.projections(list_of_atoms) # {element: (n_atoms_of_element, n_functions)}
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        if "\0" in self.path:  # C++ would read the name up to the NUL: another file
            raise InputError(f"potential {self.path!r}: a file name cannot hold a NUL character")
        self._pot = _core.Potential(self.path)
        self._threads = threading.local()
        self._coefficients_version = 0  # set_coefficients() calls so far (the fingerprints' cache key)
        self._fingerprints: Dict[tuple, str] = {}

    @property
    def _ev(self):
        """This thread's evaluator: an evaluator holds scratch space, and the bindings let threads
        evaluate at once (the GIL released), so each thread has its own."""
        ev = getattr(self._threads, "evaluator", None)
        if ev is None:
            ev = self._threads.evaluator = _core.Evaluator(self._pot)
        return ev

    # ---- basis facts ----
    @property
    def elements(self) -> List[str]:
        """The elements, in the potential's order (the element indices of types_of)."""
        return list(self._pot.elements)

    @property
    def cutoff(self) -> float:
        """The largest bond cutoff (Å): neighbours beyond it never contribute."""
        return self._pot.cutoff

    @property
    def fingerprint(self) -> str:
        """Identifies everything but the coefficients: linear active sets record it."""
        return self._pot.fingerprint

    def active_set_fingerprint(self, mode: str) -> str:
        """What an active set of ``mode`` records and is checked against: the fingerprint for
        linear projections (the B functions, whatever the coefficients), the fingerprint with the
        coefficients for full ones (dE/dc changes with them). Kept until set_coefficients."""
        key = (mode == "full", self._coefficients_version)
        if key not in self._fingerprints:
            self._fingerprints[key] = self._pot.fingerprint_with(mode == "full")
        return self._fingerprints[key]

    def n_functions(self, element: str) -> int:
        """Number of B functions of the element (rank 1 and higher), its linear projection width."""
        return self._pot.n_functions(self._element_index(element))

    def ndensity(self, element: str) -> int:
        """Number of densities of the element's embedding (coefficients per B function)."""
        return self._pot.ndensity(self._element_index(element))

    def n_projections(self, element: str, mode: str = "linear") -> int:
        """Width of the element's projections: n_functions for "linear" (pacemaker's default
        active sets), n_functions * ndensity for "full" (dE/dc)."""
        return self._pot.n_projections(self._element_index(element), mode == "full")

    def function_ranks(self, element: str) -> np.ndarray:
        """Rank (number of neighbours coupled: body order - 1) of each of the element's B functions,
        projection order."""
        return np.array([f[0] for f in self._pot.functions(self._element_index(element))], dtype=int)

    def coefficients(self, element: str) -> np.ndarray:
        """(n_functions, ndensity) coefficients of the element's B functions, projection order."""
        return self._pot.coefficients(self._element_index(element))

    def set_coefficients(self, element: str, coefficients: np.ndarray) -> None:
        """Replace the element's coefficients: (n_functions, ndensity) values, projection order, as
        coefficients() returns them (any array of that many values; finite). The basis, and so the
        linear projections and linear active sets, stay the same; energies, forces and full
        projections (dE/dc) change, and a full-mode active set built for the earlier
        coefficients no longer grades them (it says so). Not while another thread evaluates this
        potential."""
        values = np.asarray(coefficients, dtype=float)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"coefficients of {element}: not all finite")
        self._pot.set_coefficients(self._element_index(element), values)
        self._coefficients_version += 1

    def _element_index(self, element: str) -> int:
        mu = self._pot.element_index(element)
        if mu < 0:
            raise InputError(f"element '{element}' is not in potential '{self.path}' (elements: {', '.join(self.elements)})")
        return mu

    def types_of(self, atoms: Atoms) -> np.ndarray:
        """The potential's element index of each atom (its order in `elements`); InputError for an
        element the potential does not describe."""
        bad = atoms.numbers[(atoms.numbers < 0) | (atoms.numbers >= len(chemical_symbols))]
        if len(bad):
            raise InputError(f"atomic number {int(bad[0])} is no element (potential '{self.path}' describes "
                             f"{', '.join(self.elements)})")
        symbols = atoms.get_chemical_symbols()
        lookup = {el: self._pot.element_index(el) for el in set(symbols)}
        missing = sorted(el for el, mu in lookup.items() if mu < 0)
        if missing:
            raise InputError(
                f"element(s) {', '.join(missing)} that potential '{self.path}' does not describe "
                f"(elements: {', '.join(self.elements)})"
                + ("; X is what fix aceuq/extrapolation writes for atom types pair_coeff maps to NULL (another "
                   "pair style's atoms, which pair_style aceuq leaves out of the environments): leave them out to "
                   "grade the frame with this potential" if "X" in missing else "")
            )
        return np.array([lookup[s] for s in symbols], dtype=np.int32)

    # ---- evaluation ----
    def evaluate(self, atoms: Union[Atoms, Sequence[Atoms]], forces: bool = True,
                 projections: Optional[str] = None, progress: bool = False):
        """Evaluate one structure (returns an EvaluationResult) or a list (returns a list)."""
        if projections not in _MODES:
            raise ValueError(f"projections must be one of {_MODES}, got {projections!r}")
        if isinstance(atoms, Atoms):
            return self._evaluate_one(atoms, forces, projections)
        frames = as_frames(atoms, "Potential.evaluate")
        return [self._evaluate_one(a, forces, projections, index=i)
                for i, a in enumerate(show_progress(frames, progress, "evaluate", unit="struct"))]

    def _evaluate_one(self, atoms: Atoms, forces: bool, projections: Optional[str],
                      index: Optional[int] = None) -> EvaluationResult:
        with _naming(atoms, index):
            positions = _positions(atoms)
            out = self._ev.evaluate(
                positions, np.ascontiguousarray(atoms.cell.array, dtype=float), [bool(p) for p in atoms.pbc],
                self.types_of(atoms), forces, projections or "none",
            )
        res = EvaluationResult(energy=float(out["energy"]), energies=out["energies"])
        if forces:
            res.forces = out["forces"]
            res.virial = out["virial"]
            res.stress = stress_from_virial(atoms, out["virial"])
        if projections:
            res.projections = out["projections"]
        return res

    def evaluate_ensemble(self, atoms: Atoms, members: Sequence[Dict[str, np.ndarray]], forces: bool = True
                          ) -> Dict[str, np.ndarray]:
        """Evaluate several coefficient sets that share this potential's basis (ensemble members).

        members: one {element: (n_functions, ndensity) coefficients} per member. Neighbours, the
        atomic base A and the basis values B are computed once for all members.
        Returns {"energy": (M,), "energies": (M, n_atoms), "forces": (M, n_atoms, 3), "virial": (M, 3, 3)}.
        """
        coeffs = []
        for k, member in enumerate(members):
            row = []
            for el in self.elements:
                if el not in member:
                    raise InputError(f"ensemble member {k} has no coefficients for element {el}")
                c = np.asarray(member[el], dtype=float)
                expected = (self.n_functions(el), self.ndensity(el))
                if c.shape != expected:
                    raise InputError(f"ensemble member {k}, element {el}: coefficients of shape {c.shape}, "
                                     f"the basis of '{self.path}' needs {expected}")
                row.append(c.ravel())
            coeffs.append(row)
        with _naming(atoms, None):
            return self._ev.evaluate_members(
                _positions(atoms), np.ascontiguousarray(atoms.cell.array, dtype=float),
                [bool(p) for p in atoms.pbc], self.types_of(atoms), coeffs, forces,
            )

    def projections(self, structures: Iterable[Atoms], mode: str = "linear", progress: bool = False,
                    memmap_dir: Optional[str] = None, first_index: int = 0,
                    atoms: Optional[Sequence[np.ndarray]] = None) -> Dict[str, "ElementProjections"]:
        """Projections of every atom of every structure, grouped by element.

        Returns {element: ElementProjections(values (n, n_proj), structure (n,), atom (n,))}.
        memmap_dir: write the values to memory-mapped files there instead of holding them in
        memory (for datasets whose projection matrix does not fit).
        first_index: the number errors give the first structure when it has no file and frame (the
        structures are a slice of a longer list); `structure` counts from 0 all the same.
        atoms: per structure, a boolean mask of the atoms wanted (default: all); the others are
        not computed (their neighbours still count), e.g. the surface of a cut-out.
        """
        if mode not in ("linear", "full"):
            raise ValueError("mode must be 'linear' or 'full'")
        frames = as_frames(structures, "Potential.projections")  # one structure, or many
        wanted = [np.arange(len(a)) for a in frames] if atoms is None else \
            [np.flatnonzero(m) for m in atom_masks(atoms, frames)]
        types = []
        for i, a in enumerate(frames):
            with _naming(a, first_index + i):
                types.append(self.types_of(a))
        counts = {el: sum(int(np.count_nonzero(t[w] == mu)) for t, w in zip(types, wanted))
                  for mu, el in enumerate(self.elements)}
        values, loc, filled = {}, {}, {}
        for el, n in counts.items():
            shape = (n, self.n_projections(el, mode))
            if memmap_dir is not None and n:
                values[el] = np.lib.format.open_memmap(os.path.join(memmap_dir, f"{el}.npy"), mode="w+",
                                                       dtype=np.float64, shape=shape)
            else:
                values[el] = np.zeros(shape)
            loc[el] = np.zeros((n, 2), dtype=int)
            filled[el] = 0
        for s_idx, frame in enumerate(show_progress(frames, progress, "projections", unit="struct")):
            listed = wanted[s_idx]
            with _naming(frame, first_index + s_idx):
                rows = self._ev.projections(_positions(frame), np.ascontiguousarray(frame.cell.array, dtype=float),
                                            [bool(p) for p in frame.pbc], types[s_idx], mode, listed)
            listed_types = types[s_idx][listed]
            for mu, el in enumerate(self.elements):
                pick = np.nonzero(listed_types == mu)[0]
                if pick.size:
                    k = filled[el]
                    values[el][k:k + pick.size] = rows[pick, : values[el].shape[1]]
                    loc[el][k:k + pick.size, 0] = s_idx
                    loc[el][k:k + pick.size, 1] = listed[pick]
                    filled[el] += pick.size
        for v in values.values():
            if isinstance(v, np.memmap):
                v.flush()
        return {el: ElementProjections(values[el], loc[el][:, 0], loc[el][:, 1], mode) for el in self.elements}


def atom_masks(masks: Sequence, frames: Sequence[Atoms], name: str = "atoms", item: str = "structure"
               ) -> List[np.ndarray]:
    """One boolean mask per structure, one entry per atom, as boolean arrays: booleans, or 0/1
    integers; ValueError naming ``name`` (the caller's parameter) and the ``item`` that does not
    fit otherwise."""
    if len(masks) != len(frames):
        raise ValueError(f"{name}: {len(masks)} masks for {len(frames)} {item}s")
    out = []
    for i, (m, a) in enumerate(zip(masks, frames)):
        m = np.asarray(m)
        if m.shape != (len(a),):
            raise ValueError(f"{name}: {item} {i} has {len(a)} atoms, its mask {m.shape}")
        if m.size and m.dtype != bool and not (m.dtype.kind in "iu" and np.isin(m, (0, 1)).all()):
            raise ValueError(f"{name}: the mask of {item} {i} holds {m.dtype} values, not booleans (or 0/1)")
        out.append(m.astype(bool))
    return out


def stress_from_virial(atoms: Atoms, virial: np.ndarray) -> Optional[np.ndarray]:
    """ASE's stress (Voigt xx yy zz yz xz xy, eV/Å³, positive under tension) from the core's
    virial W = Σ r ⊗ dE/dr, divided by the cell's volume: for any cell of three lattice vectors,
    periodic or not (a slab's includes its vacuum), as pyace, ASE's EMT and LAMMPS; None without
    one (or with three coplanar vectors, which ASE's rank counts but which enclose no volume)."""
    if atoms.cell.rank < 3 or not abs(atoms.cell.volume) > 0:
        return None
    s = np.asarray(virial) / atoms.cell.volume
    s = 0.5 * (s + s.T)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _positions(atoms: Atoms) -> np.ndarray:
    positions = np.ascontiguousarray(atoms.get_positions(), dtype=float)
    if not np.all(np.isfinite(positions)):
        raise InputError("non-finite (NaN or inf) positions")
    return positions


@contextmanager
def _naming(atoms: Atoms, index: Optional[int]):
    """Errors about a structure (bad elements, positions, geometry) name it: its file and frame."""
    try:
        yield
    except ValueError as exc:  # InputError, and the core's geometry errors (atoms too close, ...)
        raise InputError(f"{structure_label(atoms, index)}: {exc}") from None


@dataclass
class ElementProjections:
    values: np.ndarray     # (n_atoms_of_element, n_projections)
    structure: np.ndarray  # index of the structure of each row
    atom: np.ndarray       # index of the atom within its structure
    mode: str = ""         # "linear" or "full" (as Potential.projections computed them; "" unknown)
