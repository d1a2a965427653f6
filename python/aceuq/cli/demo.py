"""``aceuq demo [-o DIR]``: fit, active set and an extrapolation-triggered LAMMPS run, end to end."""
from __future__ import annotations

import argparse
import sys

from .._core import InputError
from . import number


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="aceuq demo",
        description="Builds EMT Cu training data, fits a linear ACE, builds a clustered active set and heats "
                    "the crystal in LAMMPS (pair_style aceuq + fix aceuq/extrapolation) towards melting until it "
                    "extrapolates, dumping the configurations that need DFT. Needs pyace "
                    "(pip install 'aceuq[pacemaker]').",
    )
    p.add_argument("-o", "--output", default="aceuq-demo", help="folder for all files (default: ./aceuq-demo)")
    p.add_argument("--steps", type=number(int, minimum=1), default=3000,
                   help="MD steps of the heating run, 2 fs each (default 3000)")
    p.add_argument("--lower", type=number(float, above=0.0), default=3.0,
                   help="gamma above which configurations are written (default 3)")
    p.add_argument("--upper", type=number(float, above=0.0), default=25.0,
                   help="gamma above which the run stops (default 25)")
    args = p.parse_args(argv)
    if args.upper <= args.lower:
        p.error(f"--upper ({args.upper:g}) must be above --lower ({args.lower:g})")
    try:
        import pyace  # noqa: F401
    except ImportError:
        print("aceuq demo: error: the demo fits its potential with pyace: pip install 'aceuq[pacemaker]'",
              file=sys.stderr)
        return 1
    from ..data import check_output
    from ..demo import run

    try:
        check_output(args.output, folder=True)
        run(args.output, steps=args.steps, lower=args.lower, upper=args.upper)
    except InputError as exc:
        print(f"aceuq demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
