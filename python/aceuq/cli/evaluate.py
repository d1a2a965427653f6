"""``aceuq evaluate POTENTIAL STRUCTURES... -o OUT.extxyz``"""
from __future__ import annotations

import argparse
import sys

from ase.calculators.singlepoint import SinglePointCalculator

from .._core import InputError
from ..data import read_structures, write_extxyz_atomic
from ..potential import Potential


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq evaluate",
        description="Evaluate structures with a pacemaker ACE potential; write extended XYZ with "
                    "energy, forces, stress (periodic cells) and per-atom energies.",
    )
    p.add_argument("potential", help="pacemaker potential .yaml")
    p.add_argument("structures", nargs="+", help="structure files: extxyz or any ASE format, or pacemaker .pkl.gzip")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pot = Potential(args.potential)
        frames = read_structures(args.structures)
        results = pot.evaluate(frames, forces=True, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq evaluate: error: {exc}", file=sys.stderr)
        return 1
    out = []
    for atoms, res in zip(frames, results):
        a = atoms.copy()
        props = {"energy": res.energy, "free_energy": res.energy, "forces": res.forces, "energies": res.energies}
        if res.stress is not None:
            props["stress"] = res.stress
        a.calc = SinglePointCalculator(a, **props)
        out.append(a)
    write_extxyz_atomic(args.output, out)
    n_atoms = sum(len(a) for a in out)
    print(f"aceuq evaluate: {len(out)} structures, {n_atoms} atoms -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
