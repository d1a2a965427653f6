"""Command line interface: one module per verb, each with main(argv)."""
import argparse
import math


def add_elements_option(parser) -> None:
    """-e/--elements: the elements of LAMMPS atom types 1, 2, ... for dumps that name only types
    (pacemaker's pace_select -e)."""
    parser.add_argument("-e", "--elements", metavar='"El1 El2 ..."', default=None,
                        help="elements of LAMMPS atom types 1, 2, ..., as in pair_coeff: needed to read LAMMPS "
                             "dumps without an 'element' column")


def number(kind=float, minimum=None, above=None):
    """An argparse type: a finite number of ``kind``, at least ``minimum`` or above ``above``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got '{text}'")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above}, got {text}")
        return value
    return parse
