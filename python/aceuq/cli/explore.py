"""``mpiexec -n N aceuq explore CONFIG.yaml -o DIR``"""
from __future__ import annotations

import argparse
import sys

from .._core import InputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq explore",
        description="Extrapolation-triggered exploration: MD replicas (structure x temperature x seed) with "
                    "pair_style aceuq, spread over the MPI ranks; configurations above the lower γ threshold "
                    "are gathered and the most informative selected (D-optimal) for DFT. "
                    "Run as: mpiexec -n N aceuq explore CONFIG.yaml -o DIR (see the README for the config).")
    p.add_argument("config", help="explore config (YAML)")
    p.add_argument("-o", "--output", required=True, help="output folder (replicas/, candidates.extxyz, "
                                                          "selected.extxyz, summary.json)")
    p.add_argument("--no-progress", action="store_true", help="no per-replica lines or progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..explore import run

    try:
        summary = run(args.config, args.output, progress=not args.no_progress)
    except InputError as exc:  # raised on every rank alike: said once
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"aceuq explore: error: {exc}", file=sys.stderr)
        return 1
    if summary is None:  # ranks other than 0
        return 0
    failed = [r for r in summary["replicas"] if r["error"]]
    stopped = sum(r["halted"] for r in summary["replicas"])
    print(f"aceuq explore: {len(summary['replicas'])} replicas on {summary['ranks']} rank(s), {stopped} stopped "
          f"above the upper threshold; {summary['candidates']} configurations written "
          f"-> {args.output}/candidates.extxyz")
    if summary["selected"] is not None:
        print(f"aceuq explore: {len(summary['selected'])} selected (D-optimal) -> {args.output}/selected.extxyz")
        for note in summary.get("selection_notes", []):
            print(f"aceuq explore: {note}")
    for r in failed:
        print(f"aceuq explore: replica {r['index']} failed: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
