"""Run under mpiexec by test_lammps.py: evaluate one structure with pair_style aceuq on all ranks.

usage: mpiexec -n N python lammps_mpi_driver.py POTENTIAL STRUCTURE.npz OUT.npz El1 El2 ...
  [--active-set FILE] [--newton on|off]
Rank 0 writes energy, forces, per-atom energies, virial (and gamma, cluster with an active set),
ordered by atom id.
"""
import sys

import numpy as np
from mpi4py import MPI

from aceuq.lammps import make_lammps
from lmp_helpers import create_system, evaluate, load_structure, set_aceuq


def main(argv):
    options = {"--active-set": None, "--newton": "on"}
    for key in options:
        if key in argv:
            k = argv.index(key)
            options[key] = argv[k + 1]
            argv = argv[:k] + argv[k + 2:]
    active_set = options["--active-set"]
    potential, structure, out_path, elements = argv[0], argv[1], argv[2], argv[3:]
    atoms = load_structure(structure)
    comm = MPI.COMM_WORLD
    lmp = make_lammps(comm=comm)
    create_system(lmp, atoms, elements, newton=options["--newton"])
    set_aceuq(lmp, potential, elements, active_set)
    if active_set:
        lmp.command("fix aceuq_g all pair 1 aceuq gamma 1 cluster 0")
    res = evaluate(lmp, len(atoms), runs=2)
    if active_set:
        g = np.array(lmp.gather("f_aceuq_g", 1, 2)[: 2 * len(atoms)]).reshape(-1, 2)
        res["gamma"], res["cluster"] = g[:, 0], g[:, 1]
    res["nprocs"] = comm.Get_size()
    res["min_nlocal"] = comm.allreduce(lmp.extract_global("nlocal"), op=MPI.MIN)
    lmp.close()
    if comm.Get_rank() == 0:
        np.savez(out_path, **res)


if __name__ == "__main__":
    main(sys.argv[1:])
