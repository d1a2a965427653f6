"""``aceuq select POTENTIAL CANDIDATES... --active-set FILE -n N -o selected.extxyz``"""
from __future__ import annotations

import argparse
import sys

from .._core import InputError
from . import add_elements_option, number, summary_stream
from ..activeset import ActiveSet
from ..data import check_structures_output, read_structures, write_extxyz_atomic
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
    p.add_argument("-n", type=number(int, minimum=1), required=True, help="number of structures to select")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    p.add_argument("--assign", choices=("nearest", "min"), default=None, help="cluster assignment of candidates")
    p.add_argument("--tol", type=number(float, minimum=0.0), default=DEFAULT_TOL,
                   help=f"MaxVol tolerance (default {DEFAULT_TOL})")
    p.add_argument("--max-iters", type=number(int, minimum=1), default=DEFAULT_MAX_ITERS,
                   help=f"MaxVol row swaps per run (default {DEFAULT_MAX_ITERS})")
    p.add_argument("--one-shot", action="store_true",
                   help="pace_select's rule: one MaxVol over all candidates, then the N structures owning most of "
                        "the rows it takes in; faster for large N, but near-duplicates can be chosen together "
                        "(default: greedy, the active set updated after every pick)")
    add_elements_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # files may follow options, as in evaluate
    try:
        check_structures_output(args.output, inputs=[args.potential, args.active_set, *args.candidates])
        pot = Potential(args.potential)
        aset = ActiveSet.load(args.active_set, pot, assign=args.assign)
        frames = read_structures(args.candidates, args.elements, progress=not args.no_progress)
        sel = select_structures(pot, frames, aset, args.n, tol=args.tol, max_iters=args.max_iters,
                                progress=not args.no_progress, one_shot=args.one_shot)
        out = selected_frames(frames, sel)
        write_extxyz_atomic(args.output, out, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq select: error: {exc}", file=sys.stderr)
        return 1
    report = summary_stream(args.output)
    for note in sel.notes:
        print(f"aceuq select: {note}", file=report)
    print(f"aceuq select: {len(out)} of {len(frames)} candidates selected -> {args.output}", file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
