"""``aceuq VERB ...``: dispatch to the verb's module."""
from __future__ import annotations

import importlib
import os
import sys

VERBS = {
    "demo": "the whole workflow end to end: fit, active set, LAMMPS run that dumps extrapolation",
    "evaluate": "energies, forces, stress of structures with an ACE potential",
    "activeset": "D-optimal active set of training atoms: global (.asi) or clustered (.casi)",
    "gamma": "per-atom extrapolation grade gamma (and cluster) against an active set",
    "select": "the N candidate structures most worth computing with DFT (D-optimal)",
    "info": "version, and where the LAMMPS plugin (pair_style aceuq) is and how to load it",
    "ensemble": "fit an ensemble of linear ACE potentials (bootstrap), with calibrated σ",
    "study": "the paper's UQ study (accuracy, heterogeneity, novelty) on labelled data",
    "explore": "MD replicas over MPI ranks, extrapolation-triggered dumps, D-optimal selection for DFT",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: aceuq VERB [options]\n\nverbs:")
        for verb, text in VERBS.items():
            print(f"  {verb:<12} {text}")
        print("\n'aceuq VERB --help' describes a verb.")
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"aceuq: unknown verb '{verb}' (known: {', '.join(VERBS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"aceuq.cli.{verb}")
    try:
        return module.main(rest)
    except KeyboardInterrupt:  # Ctrl-C: outputs are written whole or not at all, so nothing to show
        print(f"aceuq {verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed_by_reader():  # e.g. -o FIFO whose reader left: an error to report
            print(f"aceuq {verb}: error: the reader of the output closed it before the end", file=sys.stderr)
            return 1
        # the reader of stdout went away (`... -o /dev/stdout | head`): stop quietly, as
        # command-line tools do; stdout goes to /dev/null so the interpreter's last flush does
        # not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
        return 1


def _stdout_closed_by_reader() -> bool:
    """Whether this process's standard output is a pipe whose reader has gone: the other broken
    pipes (`-o FIFO` whose reader left) are errors to report."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
