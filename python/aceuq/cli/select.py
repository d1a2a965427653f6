"""``aceuq select POTENTIAL CANDIDATES... --active-set FILE -n N -o selected.extxyz``"""
from __future__ import annotations

import argparse
import sys

from .._core import InputError
from . import add_elements_option
from ..activeset import ActiveSet
from ..data import read_structures, write_extxyz_atomic
from ..maxvol import DEFAULT_MAX_ITERS, DEFAULT_TOL
from ..potential import Potential
from ..select import select_structures, selected_frames


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq select",
        description="Select the N candidate structures that enlarge the active set most (D-optimality, greedy): "
                    "the structures to compute with DFT next.")
    p.add_argument("potential", help="pacemaker potential .yaml")
    p.add_argument("candidates", nargs="+",
                   help="candidate structures: extxyz, LAMMPS dumps (with --elements), .pkl.gzip")
    p.add_argument("--active-set", required=True, help="current active set (.asi or .casi)")
    p.add_argument("-n", type=int, required=True, help="number of structures to select")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    p.add_argument("--assign", choices=("nearest", "min"), default=None, help="cluster assignment of candidates")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL, help="MaxVol tolerance")
    p.add_argument("--max-iters", type=int, default=DEFAULT_MAX_ITERS, help="MaxVol row swaps per run")
    add_elements_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        print("aceuq select: error: -n must be at least 1", file=sys.stderr)
        return 2
    try:
        pot = Potential(args.potential)
        aset = ActiveSet.load(args.active_set, pot, assign=args.assign)
        frames = read_structures(args.candidates, args.elements)
        sel = select_structures(pot, frames, aset, args.n, tol=args.tol, max_iters=args.max_iters,
                                progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq select: error: {exc}", file=sys.stderr)
        return 1
    out = selected_frames(frames, sel)
    write_extxyz_atomic(args.output, out)
    for note in sel.notes:
        print(f"aceuq select: {note}")
    print(f"aceuq select: {len(out)} of {len(frames)} candidates selected -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
