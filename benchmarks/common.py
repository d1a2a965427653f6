"""Shared set-up for the benchmarks: a pacemaker-style Cu potential and Cu structures."""
import os
import tempfile
import time

import numpy as np
from ase.build import bulk


def cu_potential(folder, n_functions=200, rcut=7.0, ndensity=2, seed=0):
    """A Cu B-basis potential (FinnisSinclairShiftedScaled, `ndensity` densities) with random
    but smooth coefficients, written by pyace; returns its path."""
    from pyace import ACEBBasisSet, create_multispecies_basis_config

    path = os.path.join(folder, f"Cu_{n_functions}f_{ndensity}d.yaml")
    if os.path.exists(path):
        return path
    cfg = {
        "deltaSplineBins": 0.001,
        "elements": ["Cu"],
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled",
                               "fs_parameters": [1, 1, 1, 0.5][: 2 * ndensity], "ndensity": ndensity}},
        "bonds": {"ALL": {"radbase": "SBessel", "radparameters": [5.25], "rcut": rcut, "dcut": 0.01,
                          "NameOfCutoffFunction": "cos"}},
        "functions": {"number_of_functions_per_element": n_functions,
                      "ALL": {"nradmax_by_orders": [15, 6, 4, 3, 2, 2], "lmax_by_orders": [0, 4, 3, 2, 2, 1]}},
    }
    bb = ACEBBasisSet(create_multispecies_basis_config(cfg))
    rng = np.random.default_rng(seed)
    c = np.array(bb.basis_coeffs)
    bb.basis_coeffs = list(rng.normal(0, 0.1, c.size))
    bb.save(path)
    return path


def cu_supercell(n_target, seed=0):
    """Rattled fcc Cu with about n_target atoms."""
    reps = max(1, round((n_target / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps, reps, reps))
    atoms.rattle(0.05, seed=seed)
    return atoms


def best_of(fn, repeat=3):
    """Minimum wall time of `repeat` calls (seconds): the least noisy figure on a shared machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def subprocess_setup(keep, prefix, threads):
    """(folder, env): the benchmark's folder (``keep`` if given, else a new temporary one) and the
    environment of the tools it runs as subprocesses, each with ``threads`` OpenMP/BLAS threads."""
    folder = keep or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return folder, env


def add_tool_options(ap, reference, repeat):
    """The options of a benchmark that runs aceuq and a pyace tool (`reference`) as subprocesses:
    --repeat, --threads, --tol (MaxVol's, given to both), --keep."""
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--threads", type=int, default=1, help="OMP/BLAS threads of every subprocess")
    ap.add_argument("--tol", type=float, default=None,
                    help=f"MaxVol tolerance for both (aceuq --tol T, {reference} -g 1+T); default: each tool's "
                         f"own default (aceuq 1e-3, {reference} 1.01)")
    ap.add_argument("--keep", default=None, help="folder for the potential, data and outputs (default: temp)")
