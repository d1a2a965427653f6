"""``aceuq gamma POTENTIAL ACTIVESET DATA... -o OUT.extxyz``: per-atom extrapolation grade."""
from __future__ import annotations

import argparse
import sys

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .._core import InputError
from ..activeset import ActiveSet
from ..data import read_structures, write_extxyz_atomic
from ..potential import Potential


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq gamma",
        description="Grade every atom against an active set (.asi or .casi): writes extended XYZ with per-atom "
                    "'gamma' and 'cluster' arrays and the per-structure 'max_gamma'.")
    p.add_argument("potential", help="pacemaker potential .yaml")
    p.add_argument("active_set", help="active set: pacemaker .asi or aceuq .casi")
    p.add_argument("structures", nargs="+", help="structure files: extxyz (or any ASE format) or .pkl.gzip")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    p.add_argument("--assign", choices=("nearest", "min"), default=None,
                   help="cluster assignment (default: what the .casi says)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pot = Potential(args.potential)
        aset = ActiveSet.load(args.active_set, pot, assign=args.assign)
        frames = read_structures(args.structures)
        graded = aset.gamma(frames, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq gamma: error: {exc}", file=sys.stderr)
        return 1
    out = []
    for atoms, (gamma, cluster) in zip(frames, graded):
        a = atoms.copy()
        a.arrays["gamma"] = gamma
        a.arrays["cluster"] = cluster.astype(int)
        a.info["max_gamma"] = float(gamma.max()) if len(gamma) else 0.0
        if atoms.calc is not None and getattr(atoms.calc, "results", None):
            a.calc = SinglePointCalculator(a, **atoms.calc.results)
        out.append(a)
    write_extxyz_atomic(args.output, out)
    all_gamma = np.concatenate([g for g, _ in graded]) if graded else np.zeros(0)
    print(f"aceuq gamma: {len(out)} structures, {len(all_gamma)} atoms; gamma median {np.median(all_gamma):.3g}, "
          f"max {all_gamma.max():.3g}, {int((all_gamma > 1).sum())} atoms above 1 -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
