"""Test structures: rattled bulk, small periodic cells, slabs and clusters."""
import numpy as np
from ase import Atoms
from ase.build import bulk, fcc111
from ase.cluster import Icosahedron

from potentials import LATTICE


def _occupy(atoms, elements, seed):
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(rng.choice(elements, size=len(atoms)).tolist())
    return atoms


def rattled_bulk(elements, seed=0):
    a = bulk(elements[0], "fcc", a=LATTICE[elements[0]], cubic=True).repeat((2, 2, 2))
    a = _occupy(a, elements, seed)
    a.set_cell(a.cell.array @ (np.eye(3) + np.random.default_rng(seed).normal(0, 0.02, (3, 3))), scale_atoms=True)
    a.rattle(0.1, seed=seed)
    return a


def cubic_alloy(elements, cells=3, seed=0):
    """cells^3 cubic fcc cells, sites occupied at random, rattled; the box stays orthogonal."""
    a = _occupy(bulk(elements[0], "fcc", a=LATTICE[elements[0]], cubic=True).repeat((cells, cells, cells)),
                elements, seed)
    a.rattle(0.05, seed=seed)
    return a


def small_cell(elements, seed=1):
    """Primitive cell (1 atom, or 2 for several elements): far smaller than the cutoff."""
    a = bulk(elements[0], "fcc", a=LATTICE[elements[0]])
    if len(elements) > 1:
        a = a.repeat((2, 1, 1))
        a = _occupy(a, elements, seed)
        a.set_chemical_symbols([elements[0], elements[1]])
    a.set_cell(a.cell.array @ (np.eye(3) + np.random.default_rng(seed).normal(0, 0.03, (3, 3))), scale_atoms=True)
    a.rattle(0.05, seed=seed)
    return a


def slab(elements, seed=2, vacuum=8.0, periodic_z=False):
    """fcc(111) slab; periodic_z=True is the same slab as a fully periodic cell with vacuum."""
    a = fcc111(elements[0], size=(2, 2, 3), a=LATTICE[elements[0]], vacuum=vacuum)
    del a.info["adsorbate_info"]  # ase.build's dict, which extxyz cannot hold (ASE warns when writing it)
    a = _occupy(a, elements, seed)
    a.rattle(0.05, seed=seed)
    a.pbc = [True, True, periodic_z]
    return a


def cluster(elements, seed=3):
    a = Icosahedron(elements[0], noshells=2, latticeconstant=LATTICE[elements[0]])
    a = _occupy(a, elements, seed)
    a.rattle(0.05, seed=seed)
    a.pbc = False
    a.cell = np.zeros((3, 3))
    return Atoms(a)


def close_pair(elements, seed=4, distance=1.75):
    """Bulk with one pair pushed inside the inner cutoff / core-repulsion region."""
    a = rattled_bulk(elements, seed=seed)
    d = a.positions[1] - a.positions[0]
    a.positions[1] = a.positions[0] + d / np.linalg.norm(d) * distance
    return a


def all_structures(elements):
    return {
        "bulk": rattled_bulk(elements),
        "close_pair": close_pair(elements),
        "small_cell": small_cell(elements),
        "slab_vacuum": slab(elements, periodic_z=True),
        "cluster": cluster(elements),
    }


def selection_candidates():
    """Cu structures unlike strained bulk (slabs, a cluster, compressed, hot) and one like it:
    candidates for the selection tests."""
    cands = [slab(["Cu"]), cluster(["Cu"]), rattled_bulk(["Cu"], seed=11), slab(["Cu"], seed=5, vacuum=6.0)]
    dense = bulk("Cu", "fcc", a=3.3, cubic=True)
    dense.rattle(0.2, seed=3)
    hot = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    hot.rattle(0.3, seed=4)
    return cands + [dense, hot]
