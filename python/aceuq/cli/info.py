"""``aceuq info``: where the LAMMPS plugin is and how to load it."""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="aceuq info",
        description="Print the aceuq version, the path of the LAMMPS plugin (pair_style aceuq) "
                    "and how to load it.",
    )


def main(argv=None) -> int:
    build_parser().parse_args(argv)
    from .._core import grader_kernel
    from ..lammps import plugin_path

    print(f"aceuq {__version__}")
    print(f"γ kernel: {grader_kernel()} (ACEUQ_GRADER_KERNEL=generic selects the portable one)")
    forced = os.environ.get("ACEUQ_GRADER_KERNEL")
    if forced is not None and forced != "generic":
        print(f"warning: ACEUQ_GRADER_KERNEL='{forced}' is not recognised and is ignored (the only value is "
              f"'generic'; unset, the kernel follows the CPU)")
    try:
        path = plugin_path()
    except FileNotFoundError as exc:
        print(f"LAMMPS plugin: not installed ({exc})")
        return 1
    print(f"LAMMPS plugin: {path}")
    print("load it in a LAMMPS input script with:")
    print(f"  plugin load {path}")
    print("or load it automatically at LAMMPS start-up with:")
    print(f"  export LAMMPS_PLUGIN_PATH={os.path.dirname(path)}")
    print("then: pair_style aceuq / pair_coeff * * POTENTIAL.yaml [ACTIVESET.asi|.casi] El1 El2 ...")
    print("from Python: `from aceuq.lammps import make_lammps; lmp = make_lammps()` (loads MPI and the plugin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
