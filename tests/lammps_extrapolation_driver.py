"""Run under mpiexec by test_lammps_extrapolation.py: `run 0` of one structure with
fix aceuq/extrapolation, writing frames (or cut-outs) to OUT.

usage: mpiexec -n N python lammps_extrapolation_driver.py POTENTIAL ACTIVESET STRUCTURE.npz OUT LOWER [CUTOUT]
Prints rank 0's `VECTOR [max γ, atoms above lower, frames, cut-outs]` (the fix's global vector)
and `SAME True` when every rank holds the same vector (an input script's `if` on it runs on all).
"""
import json
import sys

from mpi4py import MPI

from aceuq.lammps import make_lammps
from lmp_helpers import create_system, load_structure, set_aceuq


def main(argv):
    potential, active_set, structure, out, lower = argv[:5]
    cutout = f" cutout {argv[5]}" if len(argv) > 5 else ""
    atoms = load_structure(structure)
    elements = sorted(set(atoms.get_chemical_symbols()))
    lmp = make_lammps(comm=MPI.COMM_WORLD)
    create_system(lmp, atoms, elements)
    set_aceuq(lmp, potential, elements, active_set)
    lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e9 file {out}{cutout}")
    try:
        lmp.command("run 0")
    except Exception as exc:  # an error->all: every rank's own exception, with its message
        text = " ".join(str(exc).split())  # one line (the message holds LAMMPS's "Last input line")
        print(f"ERROR rank {MPI.COMM_WORLD.Get_rank()}: {text}\n", end="", flush=True)
        lmp.close()
        return
    vector = [lmp.extract_fix("x", 0, 1, k) for k in range(4)]  # max γ, atoms above lower, frames, cut-outs
    every = MPI.COMM_WORLD.gather(vector, root=0)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("VECTOR", json.dumps(vector))
        print("SAME", all(v == vector for v in every))
    lmp.close()


if __name__ == "__main__":
    main(sys.argv[1:])
