"""Cost of ensemble uncertainty: N members sharing one basis, evaluated together by aceuq.

What is measured (single-threaded, min over --repeat calls, on rattled fcc Cu boxes of --sizes):

(a) energies + energy σ: aceuq Ensemble.evaluate(atoms, forces=False) over N members, against
    ONE member alone (aceuq Potential.evaluate(atoms, forces=False)).      target <= 1.3x
(b) energies, forces + their σ: aceuq Ensemble.evaluate(atoms, forces=True), against pyace's
    PyACEEnsembleCalculator on the same member files (get_forces; it evaluates the members one
    after another, with stress; its member calculators are reset before every call, as they
    would otherwise return cached results for unchanged positions).                                          target <= 0.5x
(c) the same as (b) through ASE calculators on both sides: aceuq.ensemble.EnsembleCalculator
    vs PyACEEnsembleCalculator (calculator reset before every call).       target <= 0.5x
(d) for scale: (b) against one aceuq member with forces (what N separate evaluations cost is
    about N times that).

Members: --members N copies of a random-coefficient Cu potential (pyace-written .yaml, --density
densities, FinnisSinclairShiftedScaled) with every coefficient perturbed by 5% relative noise —
the same basis, different coefficients, as a bootstrap ensemble would have. The calls alternate
(ours, reference, ours, ...) so machine noise hits both.

    python benchmarks/bench_ensemble.py [--members 8] [--functions 200] [--sizes 500 4000] [--repeat 5]
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import cu_potential, cu_supercell  # noqa: E402


def write_members(folder, n_members, n_functions, rcut, ndensity, seed=0):
    """n_members .yaml files: one basis, base coefficients × (1 + 0.05 noise) per member."""
    from pyace import ACEBBasisSet

    base = cu_potential(folder, n_functions=n_functions, rcut=rcut, ndensity=ndensity)
    bb = ACEBBasisSet(base)
    c0 = np.array(bb.basis_coeffs)
    rng = np.random.default_rng(seed)
    paths = []
    for m in range(n_members):
        bb.basis_coeffs = list(c0 * (1 + 0.05 * rng.normal(size=c0.size)))
        path = os.path.join(folder, f"member{m}.yaml")
        bb.save(path)
        paths.append(path)
    return paths


def alternate_min(fns, repeat):
    """Min wall time of each function, calls interleaved round by round."""
    best = [np.inf] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--density", type=int, default=2, help="densities of the embedding (1: linear-like)")
    ap.add_argument("--rcut", type=float, default=6.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import aceuq
    from aceuq.ensemble import Ensemble, EnsembleCalculator
    from pyace.asecalc import PyACEEnsembleCalculator

    folder = tempfile.mkdtemp(prefix="aceuq-bench-ens-")
    paths = write_members(folder, args.members, args.functions, args.rcut, args.density)
    ens = Ensemble.load(paths)
    one = aceuq.Potential(paths[0])
    assert ens.shared_basis, "members should share one basis"
    print(f"{len(ens)} members sharing one basis: Cu, {one.n_functions('Cu')} functions, {one.ndensity('Cu')} "
          f"densities, cutoff {one.cutoff} Å")

    rows = []
    for n in args.sizes:
        atoms = cu_supercell(n)
        na = len(atoms)
        # sanity: same σ as pyace
        ref_atoms = atoms.copy()
        ref_atoms.calc = PyACEEnsembleCalculator(paths)
        ref_atoms.get_forces()
        r = ens.evaluate(atoms, forces=True, calibrated=False)
        dev = max(abs(r.energy_std - ref_atoms.calc.results["energy_std"]),
                  float(np.abs(r.forces_std - ref_atoms.calc.results["forces_std"]).max()))

        # (a) energies + σ vs one model
        t_ens, t_one = alternate_min([lambda: ens.evaluate(atoms, forces=False, calibrated=False),
                                      lambda: one.evaluate(atoms, forces=False)], args.repeat)
        rows.append(("(a) E + σ(E): ensemble vs 1 model", na, t_ens, t_one, "<=1.3"))

        # (b) forces + σ vs pyace's ensemble calculator; (d) vs one aceuq model with forces
        def ref_call():
            # the member PyACECalculators cache their results for unchanged atoms: reset them too
            ref_atoms.calc.reset()
            for c in ref_atoms.calc.calcs:
                c.reset()
            ref_atoms.get_forces()

        t_ens, t_ref, t_one_f = alternate_min([lambda: ens.evaluate(atoms, forces=True, calibrated=False), ref_call,
                                               lambda: one.evaluate(atoms, forces=True)], args.repeat)
        rows.append(("(b) E,F + σ: Ensemble vs PyACEEnsemble", na, t_ens, t_ref, "<=0.5"))

        # (c) both through ASE
        ours_atoms = atoms.copy()
        ours_atoms.calc = EnsembleCalculator(ens, calibrated=False)

        def ours_call():
            ours_atoms.calc.reset()
            ours_atoms.get_forces()

        t_ours, t_ref2 = alternate_min([ours_call, ref_call], args.repeat)
        rows.append(("(c) same via ASE calculators", na, t_ours, t_ref2, "<=0.5"))  # both min of --repeat
        rows.append(("(d) E,F + σ: ensemble vs 1 model", na, t_ens, t_one_f, ""))
        print(f"  {na} atoms: max |σ aceuq - σ pyace| = {dev:.2e}", flush=True)

    print(f"\n{'case':<42}{'atoms':>7}{'aceuq µs/atom':>15}{'ref µs/atom':>13}{'ratio':>8}{'target':>8}")
    for name, na, t_o, t_r, target in rows:
        print(f"{name:<42}{na:>7}{1e6 * t_o / na:>15.1f}{1e6 * t_r / na:>13.1f}{t_o / t_r:>8.2f}{target:>8}")


if __name__ == "__main__":
    main()
