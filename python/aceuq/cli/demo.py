"""``aceuq demo [-o DIR]``: fit, active set and an extrapolation-triggered LAMMPS run, end to end."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="aceuq demo",
        description="Builds EMT Cu training data, fits a linear ACE, builds a clustered active set and heats "
                    "the crystal through melting in LAMMPS (pair_style aceuq + fix aceuq/extrapolation), "
                    "dumping the configurations that need DFT. Needs pyace (pip install 'aceuq[pacemaker]').",
    )
    p.add_argument("-o", "--output", default="aceuq-demo", help="folder for all files (default: ./aceuq-demo)")
    p.add_argument("--steps", type=int, default=3000, help="MD steps of the heating run (2 fs each)")
    p.add_argument("--lower", type=float, default=3.0, help="gamma above which configurations are written")
    p.add_argument("--upper", type=float, default=25.0, help="gamma above which the run stops")
    args = p.parse_args(argv)
    try:
        import pyace  # noqa: F401
    except ImportError:
        print("aceuq demo: error: the demo fits its potential with pyace: pip install 'aceuq[pacemaker]'",
              file=sys.stderr)
        return 1
    from ..demo import run

    run(args.output, steps=args.steps, lower=args.lower, upper=args.upper)
    return 0


if __name__ == "__main__":
    sys.exit(main())
