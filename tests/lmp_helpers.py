"""Set up LAMMPS systems from ASE structures, and read back what pair_style aceuq computed.

Used in-process by test_lammps.py and by lammps_mpi_driver.py under mpiexec. Atoms are created
one by one with `create_atoms single` from exact float reprs, so LAMMPS and aceuq see the very same
positions (no data-file rounding).
"""
from __future__ import annotations

import json
import os

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import cellpar_to_cell


def _num(x) -> str:
    """Exact text of a float for an input line (repr round-trips)."""
    return repr(float(x))


def to_lammps_frame(atoms: Atoms) -> Atoms:
    """The same structure rotated so its cell is lower triangular, the form LAMMPS stores."""
    a = atoms.copy()
    if a.cell.rank == 3:
        assert np.linalg.det(a.cell.array) > 0, "left-handed cell"
        a.set_cell(cellpar_to_cell(a.cell.cellpar()), scale_atoms=True)
    return a


def create_system(lmp, atoms: Atoms, elements, newton: str = "on", margin: float = 10.0,
                  type_elements=None, origin=(0.0, 0.0, 0.0)) -> None:
    """Box and atoms, one atom type per entry of `elements` (type = index + 1); type_elements
    (default: elements) lists the element of every type, for boxes with more types than used.
    A periodic box starts at `origin` (LAMMPS's boxlo), its atoms moved by the same vector."""
    type_elements = list(type_elements or elements)
    periodic = bool(np.all(atoms.pbc))
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        newton {newton}
        boundary {'p p p' if periodic else 'f f f'}
    """)
    if periodic:
        c = atoms.cell.array
        assert abs(c[0, 1]) < 1e-12 and abs(c[0, 2]) < 1e-12 and abs(c[1, 2]) < 1e-12, "use to_lammps_frame"
        o = np.asarray(origin, dtype=float)
        lmp.command(f"region box prism {_num(o[0])} {_num(o[0] + c[0, 0])} {_num(o[1])} {_num(o[1] + c[1, 1])} "
                    f"{_num(o[2])} {_num(o[2] + c[2, 2])} {_num(c[1, 0])} {_num(c[2, 0])} {_num(c[2, 1])} units box")
        atoms = atoms.copy()
        atoms.positions += o
    else:
        lo = atoms.positions.min(axis=0) - margin
        hi = atoms.positions.max(axis=0) + margin
        lmp.command(f"region box block {_num(lo[0])} {_num(hi[0])} {_num(lo[1])} {_num(hi[1])} {_num(lo[2])} {_num(hi[2])} units box")
    lmp.command(f"create_box {len(type_elements)} box")
    types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    for t, p in zip(types, atoms.positions):
        lmp.command(f"create_atoms {t} single {_num(p[0])} {_num(p[1])} {_num(p[2])} units box remap yes")
    for k, el in enumerate(type_elements):
        lmp.command(f"mass {k + 1} {_num(atomic_masses[atomic_numbers[el]])}")


def set_aceuq(lmp, potential: str, elements, active_set: str | None = None, style_args: str = "") -> None:
    lmp.command(f"pair_style aceuq {style_args}".strip())
    lmp.command(f"pair_coeff * * {potential} {active_set or ''} {' '.join(elements)}")


def evaluate(lmp, natoms: int, runs: int = 1) -> dict:
    """run 0 (`runs` times: what a step leaves behind must not leak into the next); energy, forces,
    per-atom energies (ordered by atom id), virial W = sum r f (eV), and the sum of the per-atom
    virials, of the last."""
    lmp.commands_string("""
        compute aceuq_peatom all pe/atom
        compute aceuq_satom all stress/atom NULL virial
        compute aceuq_vir all pressure NULL virial
        compute aceuq_pesum all reduce sum c_aceuq_peatom
        compute aceuq_ssum all reduce sum c_aceuq_satom[1] c_aceuq_satom[2] c_aceuq_satom[3] c_aceuq_satom[4] c_aceuq_satom[5] c_aceuq_satom[6]
        thermo_style custom step pe c_aceuq_vir[*] c_aceuq_pesum c_aceuq_ssum[*]
    """)
    for _ in range(runs):
        lmp.command("run 0")
    nktv2p = lmp.extract_global("nktv2p")
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    volume = float(np.prod(np.array(boxhi) - np.array(boxlo)))
    press = np.array([lmp.extract_compute("aceuq_vir", 0, 1)[k] for k in range(6)])
    ssum = np.array([lmp.extract_compute("aceuq_ssum", 0, 1)[k] for k in range(6)])
    out = {
        "energy": lmp.get_thermo("pe"),
        "forces": np.array(lmp.gather_atoms("f", 1, 3)[: 3 * natoms]).reshape(natoms, 3),
        "energies": np.array(lmp.gather("c_aceuq_peatom", 1, 1)[:natoms]),
        "pesum": lmp.extract_compute("aceuq_pesum", 0, 0),
        # LAMMPS order xx yy zz xy xz yz
        "virial": press * volume / nktv2p,
        "virial_peratom_sum": -ssum / nktv2p,
        "virial_peratom": -np.array(lmp.gather("c_aceuq_satom", 1, 6)[: 6 * natoms]).reshape(natoms, 6) / nktv2p,
    }
    return out


def aceuq_virial_voigt(virial: np.ndarray) -> np.ndarray:
    """aceuq's dE/dstrain (3x3) as the LAMMPS virial W = sum r f in LAMMPS order."""
    w = -0.5 * (virial + virial.T)
    return np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])


def gather_peratom(lmp, name: str, natoms: int) -> np.ndarray:
    return np.array(lmp.gather(name, 1, 1)[:natoms])


def build_asi(pot, path, frames, mode="linear"):
    """A pacemaker-style .asi: per element the inverse of a well-conditioned square selection of
    training projections (pivoted QR picks the rows; MaxVol is not the point here)."""
    from scipy.linalg import qr

    proj = pot.projections(frames, mode=mode)
    arrays = {}
    for el, p in proj.items():
        n = p.values.shape[1]
        assert p.values.shape[0] >= n, f"not enough {el} atoms for an active set"
        _, _, piv = qr(p.values.T, pivoting=True, mode="economic")
        arrays[el] = np.linalg.inv(p.values[piv[:n]])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return str(path)


def reference_gamma(pot, asi_path, atoms, mode="linear"):
    """gamma_i = max_j |(b_i^T A_inv)_j| with aceuq's projections, in numpy."""
    inv = dict(np.load(asi_path))
    res = pot.evaluate(atoms, forces=False, projections=mode)
    gamma = np.zeros(len(atoms))
    for i, el in enumerate(atoms.get_chemical_symbols()):
        b = res.projections[i, : inv[el].shape[0]]
        gamma[i] = np.abs(b @ inv[el]).max()
    return gamma


def save_structure(path, atoms: Atoms) -> None:
    """A periodic structure handed to an mpiexec driver script (see load_structure)."""
    np.savez(path, cell=atoms.cell.array, positions=atoms.positions, symbols=np.array(atoms.get_chemical_symbols()))


def load_structure(path) -> Atoms:
    data = np.load(path)
    return Atoms(symbols=[str(s) for s in data["symbols"]], positions=data["positions"], cell=data["cell"], pbc=True)


def driver_env() -> dict:
    """Environment for driver scripts under mpiexec: they import aceuq and these helpers."""
    import os

    import aceuq

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(aceuq.__file__)),
                                         os.path.dirname(os.path.abspath(__file__)), env.get("PYTHONPATH", "")])
    return env


def write_casi(path, pot, sets, assign="nearest"):
    arrays = {}
    for el, s in sets.items():
        for c, m in enumerate(s["inv"]):
            arrays[f"{el}/inv/{c}"] = m
        for part in ("centers", "mean", "scale", "components"):
            arrays[f"{el}/{part}"] = s[part]
    meta = {"format": "aceuq.casi", "version": 1, "elements": sorted(sets), "mode": "linear",
            "fingerprint": pot.fingerprint, "assign": assign,
            "clusters": {el: len(s["inv"]) for el, s in sets.items()},
            "n_projections": {el: pot.n_projections(el) for el in sets}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return str(path)


def random_casi(path, pot, seed, k=3, dim=4, assign="nearest"):
    """A .casi of k random (well-conditioned) inverses per element and a random clustering map:
    the grading rules do not depend on how the file was built."""
    rng = np.random.default_rng(seed)
    sets = {}
    for el in pot.elements:
        n = pot.n_functions(el)
        sets[el] = {"inv": [rng.normal(size=(n, n)) / np.sqrt(n) + np.eye(n) for _ in range(k)],
                    "mean": rng.normal(size=n), "scale": rng.uniform(0.5, 2.0, size=n),
                    "components": rng.normal(size=(dim, n)) / np.sqrt(n), "centers": rng.normal(size=(k, dim))}
    return write_casi(path, pot, sets, assign)


def cual_box_with_asi(make_pot, folder):
    """(potential path, Potential, .asi path, atoms): the CuAl_sbessel potential, a QR active set of
    EMT training structures written into ``folder``, and a rattled Cu/Al box with some
    environments outside the training set (the fix tests' common set-up)."""
    import aceuq
    from potentials import emt_training_set
    from structures import rattled_bulk

    path = make_pot("CuAl_sbessel")
    pot = aceuq.Potential(path)
    asi = build_asi(pot, os.path.join(folder, "CuAl.asi"), emt_training_set(["Cu", "Al"], n=12, seed=3))
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21).repeat((2, 1, 1)))
    atoms.rattle(0.25, seed=9)
    return path, pot, asi, atoms
