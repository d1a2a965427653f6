"""Speed of the aceuq evaluator against pyace, measured side by side in one run.

(a) energy + forces through ASE calculators: aceuq.ACECalculator vs pyace.PyACECalculator
(b) the C++ evaluation alone: aceuq's evaluate (neighbour list included) vs pyace's C++
    ACECalculator.compute on atomic environments built beforehand
(c) projections of a >= 10,000-atom dataset vs pyace.activelearning.compute_B_projections
    (which builds its environments itself, and computes energy, forces and virial with the
    projections, as it cannot leave them out): aceuq's projections alone, and aceuq's
    projections with energy and forces (evaluate(forces=True, projections="linear")), the same
    work as pyace's

Single-threaded (OMP_NUM_THREADS=1). Prints ratios aceuq/pyace: below 1 means aceuq is faster.
    python benchmarks/bench_evaluator.py [--functions 200] [--sizes 500 4000]
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import best_of, cu_potential, cu_supercell  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    ap.add_argument("--dataset-atoms", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import aceuq
    from pyace import ACEBBasisSet, PyACECalculator
    from pyace.activelearning import compute_B_projections
    from pyace.asecalc import aseatoms_to_atomicenvironment
    from pyace.calculator import ACECalculator as PyaceCppCalculator
    from pyace.evaluator import ACEBEvaluator

    folder = tempfile.mkdtemp(prefix="aceuq-bench-")
    path = cu_potential(folder, n_functions=args.functions)
    pot = aceuq.Potential(path)
    print(f"potential: Cu, {pot.n_functions('Cu')} functions, {pot.ndensity('Cu')} densities, "
          f"cutoff {pot.cutoff} Å")
    print(f"{'case':<38}{'atoms':>7}{'aceuq µs/atom':>15}{'pyace µs/atom':>15}{'ratio':>8}")

    for n in args.sizes:
        atoms = cu_supercell(n)
        na = len(atoms)
        # (a) through ASE
        ours, ref = atoms.copy(), atoms.copy()
        ours.calc = aceuq.ACECalculator(pot)
        ref.calc = PyACECalculator(path)

        def run_ase(a):
            a.calc.reset()
            a.get_forces()
        t_ours = best_of(lambda: run_ase(ours), args.repeat)
        t_ref = best_of(lambda: run_ase(ref), args.repeat)
        print(f"{'(a) E+F via ASE calculator':<38}{na:>7}{1e6 * t_ours / na:>15.1f}{1e6 * t_ref / na:>15.1f}"
              f"{t_ours / t_ref:>8.2f}")

        # (b) evaluation alone
        bbasis = ACEBBasisSet(path)
        ev = ACEBEvaluator(bbasis)
        calc = PyaceCppCalculator(ev)
        ae = aseatoms_to_atomicenvironment(atoms, cutoff=bbasis.cutoffmax)
        t_ref = best_of(lambda: calc.compute(ae), args.repeat)
        t_ours = best_of(lambda: pot.evaluate(atoms, forces=True), args.repeat)
        print(f"{'(b) C++ E+F (ours incl. neighbours)':<38}{na:>7}{1e6 * t_ours / na:>15.1f}"
              f"{1e6 * t_ref / na:>15.1f}{t_ours / t_ref:>8.2f}")

    # (c) projections of a dataset
    frames = []
    rng = np.random.default_rng(0)
    while sum(len(f) for f in frames) < args.dataset_atoms:
        a = cu_supercell(108, seed=int(rng.integers(1 << 30)))
        a.set_cell(a.cell.array * (1 + rng.normal(0, 0.01)), scale_atoms=True)
        frames.append(a)
    na = sum(len(f) for f in frames)
    bbasis = ACEBBasisSet(path)
    t_ref = best_of(lambda: compute_B_projections(bbasis, frames), args.repeat)
    t_ours = best_of(lambda: pot.projections(frames), args.repeat)
    t_same = best_of(lambda: pot.evaluate(frames, forces=True, projections="linear"), args.repeat)
    print(f"{'(c) dataset projections (ours alone)':<38}{na:>7}{1e6 * t_ours / na:>15.1f}{1e6 * t_ref / na:>15.1f}"
          f"{t_ours / t_ref:>8.2f}")
    print(f"{'(c) dataset projections + E+F (same)':<38}{na:>7}{1e6 * t_same / na:>15.1f}{1e6 * t_ref / na:>15.1f}"
          f"{t_same / t_ref:>8.2f}")


if __name__ == "__main__":
    main()
