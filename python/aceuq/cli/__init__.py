"""Command line interface: one module per verb, each with main(argv)."""
import argparse
import math
import sys


def add_elements_option(parser) -> None:
    """-e/--elements: the elements of LAMMPS atom types 1, 2, ... for dumps that name only types
    (pacemaker's pace_select -e)."""
    parser.add_argument("-e", "--elements", metavar='"El1 El2 ..."', default=None,
                        help="elements of LAMMPS atom types 1, 2, ..., as in pair_coeff: needed to read LAMMPS "
                             "dumps without an 'element' column")


def number(kind=float, minimum=None, above=None, maximum=None, below=None):
    """An argparse type: a finite number of ``kind`` (int or float) within the given bounds
    (``minimum``/``maximum`` inclusive, ``above``/``below`` exclusive)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got '{text}'")
        for bound, ok, words in ((minimum, lambda b: value >= b, "at least"), (above, lambda b: value > b, "above"),
                                 (maximum, lambda b: value <= b, "at most"), (below, lambda b: value < b, "below")):
            if bound is not None and not ok(bound):
                raise argparse.ArgumentTypeError(f"must be {words} {bound}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def summary_stream(output):
    """Where a verb's summary and notes go: standard error when its output file is standard output
    (``-o /dev/stdout``), so that what is written there stays a readable file; standard output
    otherwise."""
    from ..data import names_stdout

    return sys.stderr if names_stdout(output) else sys.stdout
