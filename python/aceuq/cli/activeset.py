"""``aceuq activeset POTENTIAL DATA... -o FILE``: global (.asi) or clustered (.casi) active sets."""
from __future__ import annotations

import argparse
import sys

from .._core import InputError
from . import add_elements_option, number, summary_stream
from ..activeset import build_active_set, check_asi_holds
from ..data import check_output, read_structures
from ..maxvol import DEFAULT_MAX_ITERS, DEFAULT_TOL, parse_memory
from ..potential import Potential


def _clusters(text):
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clusters takes 'auto' or a positive integer, got '{text}'") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--clusters must be at least 1, got {k}")
    return k


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq activeset",
        description="Build the D-optimal (MaxVol) active set of the training atoms: one per element (pacemaker "
                    ".asi), or one per element and cluster (aceuq .casi, local D-optimality).")
    p.add_argument("potential", help="pacemaker potential .yaml")
    p.add_argument("structures", nargs="+", help="training structures: extxyz (or any ASE format) or .pkl.gzip")
    p.add_argument("-o", "--output", required=True, help="output .asi (one cluster) or .casi (written atomically)")
    p.add_argument("--clusters", type=_clusters, default=1, help="clusters per element: K or 'auto' (default 1)")
    p.add_argument("--assign", choices=("nearest", "min"), default="nearest",
                   help="how atoms are assigned to clusters when graded (stored in .casi; default nearest)")
    p.add_argument("--full", action="store_true", help="full projections dE/dc over all densities (pacemaker's "
                                                       ".asi.nonlinear) instead of linear ones")
    p.add_argument("--tol", type=number(float, minimum=0.0), default=DEFAULT_TOL,
                   help=f"MaxVol tolerance: stop when all |coefficients| <= 1 + tol (default {DEFAULT_TOL})")
    p.add_argument("--max-iters", type=number(int, minimum=0), default=DEFAULT_MAX_ITERS,
                   help=f"MaxVol row swaps per run (default {DEFAULT_MAX_ITERS})")
    p.add_argument("--memory-limit", default=None, help="memory for MaxVol, e.g. 2GB, 500MB: sets the batch size "
                                                        "of streaming MaxVol (default: all rows at once)")
    add_elements_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # files may follow options, as in evaluate
    try:
        memory = parse_memory(args.memory_limit)
    except ValueError as exc:
        print(f"aceuq activeset: error: {exc}", file=sys.stderr)
        return 2
    try:
        check_output(args.output, inputs=[args.potential, *args.structures])
        pot = Potential(args.potential)
        if not args.output.endswith(".casi"):  # known before the work: refused after it otherwise
            check_asi_holds(args.output, pot, "full" if args.full else "linear")
            if args.clusters != 1 and args.output.endswith((".asi", ".asi.nonlinear")):
                raise InputError(f"'{args.output}': --clusters {args.clusters} asks for clustered active sets, "
                                 "which are written as .casi, not .asi")
        frames = read_structures(args.structures, args.elements, progress=not args.no_progress)
        built = build_active_set(pot, frames, clusters=args.clusters, mode="full" if args.full else "linear",
                                 assign=args.assign, tol=args.tol, max_iters=args.max_iters, memory_limit=memory,
                                 progress=not args.no_progress)
        path = built.save(args.output)
    except (InputError, ValueError) as exc:
        print(f"aceuq activeset: error: {exc}", file=sys.stderr)
        return 1
    report = summary_stream(args.output)
    for line in built.summary():
        print(line, file=report)
    kind = "clustered .casi" if built.clustered or path.endswith(".casi") else ".asi"
    print(f"aceuq activeset: {len(frames)} structures -> {path} ({kind}, {built.mode} projections)", file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
