"""Reading datasets (extended XYZ and anything ASE reads; pacemaker pickled DataFrames) and
writing extended XYZ atomically."""
from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols

from ._core import InputError
from .progress import progress as show_progress

PathLike = Union[str, os.PathLike]
_PICKLE_SUFFIXES = (".pkl.gzip", ".pckl.gzip", ".pkl.gz", ".pckl.gz", ".pkl", ".pckl")


def is_pacemaker_pickle(path: PathLike) -> bool:
    return os.fspath(path).endswith(_PICKLE_SUFFIXES)


def read_structures(paths: Union[PathLike, Sequence[PathLike]],
                    elements: Union[str, Sequence[str], None] = None, progress: bool = False) -> List[Atoms]:
    """All structures of the given files, in order.

    Extended XYZ (and every format ASE reads) keeps energies and forces as ASE results;
    pacemaker DataFrames (``.pkl.gzip``) give ``ase_atoms`` with ``energy_corrected`` (or
    ``energy``) and ``forces``. Pickles run code when loaded: only read files you trust.

    LAMMPS dumps name atom types, not elements: ``elements`` gives the element of type 1, 2, ...
    (as in ``pair_coeff``, e.g. ``"Ni Nb"``), as pacemaker's ``pace_select -e`` does. It is needed
    for dumps without an ``element`` column and applies only to them.
    progress: a bar over the frames of each file read (on a terminal).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    type_elements = parse_elements(elements)
    frames: List[Atoms] = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise InputError(f"structure file '{path}': no such file")
        if os.path.isdir(path):
            raise InputError(f"structure file '{path}': is a directory")
        read = _read_pickle(path, progress) if is_pacemaker_pickle(path) else _read_ase(path, type_elements, progress)
        for k, atoms in enumerate(read):
            setattr(atoms, _SOURCE, f"structure file '{path}', frame {k}")
        frames.extend(read)
    return frames


_SOURCE = "_aceuq_source"  # where read_structures found a structure (an attribute: copies drop it)


def structure_label(atoms: Atoms, index: Optional[int] = None) -> str:
    """How errors name a structure: its file and frame when read_structures read it, else its
    position in the list given."""
    return getattr(atoms, _SOURCE, None) or ("structure" if index is None else f"structure {index}")


def parse_elements(elements: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    """Element symbols from "Ni Nb", "Ni,Nb" or ["Ni", "Nb"]."""
    if elements is None:
        return None
    if isinstance(elements, str):
        elements = [elements]
    try:
        elements = list(elements)
    except TypeError:
        elements = [elements]
    if not all(isinstance(item, str) for item in elements):
        raise InputError(f"elements {elements!r}: not element symbols (give them as text, e.g. \"Ni Nb\", "
                         f"the elements of atom types 1, 2, ...)")
    symbols = [s for item in elements for s in item.replace(",", " ").split()]
    unknown = [s for s in symbols if s not in chemical_symbols[1:]]
    if not symbols or unknown:
        raise InputError(f"elements {' '.join(symbols) or '(none)'}: "
                         + (f"not element symbols: {' '.join(unknown)}" if unknown else "none given"))
    return symbols


def _open_maybe_compressed(path: str, mode: str = "rb"):
    """The file, decompressed when it is gzip, bzip2 or xz (as LAMMPS writes dump.gz, and as ASE
    reads .gz/.bz2/.xz), recognised by its first bytes."""
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as fh:
        magic = fh.read(6)
    opener = {b"\x1f\x8b": gzip.open, b"BZ": bz2.open, b"\xfd7": lzma.open}.get(magic[:2], open)
    return opener(path, mode)


# Items that open a frame of a LAMMPS text dump: TIMESTEP, and before it TIME (dump_modify time
# yes, every frame) and UNITS (dump_modify units yes, the first frame)
_DUMP_HEADERS = ("ITEM: TIMESTEP", "ITEM: TIME", "ITEM: UNITS")


def _lammps_dump_columns(path: str) -> Optional[List[str]]:
    """The per-atom columns of a LAMMPS text dump (its first 'ITEM: ATOMS' line), or None when the
    file is not one."""
    try:
        with _open_maybe_compressed(path) as fh:
            head = fh.read(4096).decode("ascii", errors="replace").splitlines()
    except Exception:  # unreadable or damaged (zlib.error, EOFError, ...): ASE's reader reports it
        return None
    if not head or not head[0].startswith(_DUMP_HEADERS):
        return None
    for line in head:
        if line.startswith("ITEM: ATOMS"):
            return line.split()[2:]
    return []


def _read_ase(path: str, type_elements: Optional[List[str]] = None, progress: bool = False) -> List[Atoms]:
    import ase.io

    dump_columns = _lammps_dump_columns(path)
    types_only = dump_columns is not None and "element" not in dump_columns
    if types_only and type_elements is None:
        raise InputError(f"structure file '{path}': a LAMMPS dump with atom types but no element names: "
                         "give the elements of types 1, 2, ... as in pair_coeff (-e/--elements \"Ni Nb\" for "
                         "evaluate, gamma, select and activeset; elements: in an explore config; elements= in "
                         "Python)")
    try:
        if dump_columns is None and _xyz_name(path):
            _check_xyz_counts(path)
        each = _dump_frames(path) if dump_columns is not None else ase.io.iread(path, index=":", parallel=False)
        frames = list(show_progress(each, progress, f"reading {os.path.basename(path)}", unit="frame"))
    except InputError:
        raise
    except Exception as exc:  # ASE raises many kinds; the user needs the file and the reason
        raise InputError(f"structure file '{path}': cannot be read by ASE ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise InputError(f"structure file '{path}': holds no structures")
    if types_only:
        numbers = np.array([atomic_numbers[s] for s in type_elements])
        for k, atoms in enumerate(frames):
            types = atoms.arrays.get("type", atoms.numbers)
            bad = types[(types < 1) | (types > len(numbers))]
            if len(bad):
                raise InputError(f"structure file '{path}': frame {k} has atom type {int(bad[0])}, "
                                 f"but elements are given for types 1-{len(numbers)} only ({' '.join(type_elements)})")
            atoms.numbers = numbers[types - 1]
            if atoms.calc is not None:  # its results were for these atoms: still current
                atoms.calc = SinglePointCalculator(atoms, **atoms.calc.results)
    return frames


def _xyz_name(path: str) -> bool:
    """Whether ASE reads ``path`` as (extended) XYZ: by its name, as ASE decides."""
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name.endswith((".xyz", ".extxyz"))


def _check_xyz_counts(path: str) -> None:
    """InputError when a frame of an XYZ file announces more atoms than lines follow (a file cut
    short, or a corrupted count): ASE then reads past the end, a line at a time, for as many
    atoms as announced, which a count of 10^12 makes a hang."""
    with _open_maybe_compressed(path, "rt") as fh:
        k, skip, announced, start = 0, 0, 0, 0
        for number, line in enumerate(fh, 1):
            if skip:
                skip -= 1
                continue
            if not line.strip():  # where a count belongs, a blank line ends the frames (as ASE reads them)
                return
            try:
                announced = int(line.split()[0])
            except ValueError:
                return  # not a count: ASE's reader says what is wrong
            if announced < 0:
                raise InputError(f"structure file '{path}': frame {k} (line {number}) announces {announced} atoms")
            skip, start, k = announced + 1, number, k + 1
        if skip:
            raise InputError(f"structure file '{path}': frame {k - 1} (line {start}) announces {announced} atoms, but "
                             f"the file ends {announced + 1 - skip} lines later (comment line included): cut short?")


def _dump_frames(path: str) -> Iterator[Atoms]:
    """The frames of a LAMMPS text dump, one at a time, each parsed by ASE on its own. ASE's
    reader of a whole dump returns nothing before the last frame is parsed, and on a compressed
    dump it seeks back for every frame, which decompresses the file again from its start."""
    import io

    import ase.io

    def parse(lines, k):
        # ASE takes the count of ITEM: NUMBER OF ATOMS on trust: a dump cut short (a killed job, a
        # frame still being written) would be read as a smaller structure, and a corrupted count
        # would have it read lines, past the end, for as many atoms
        heads = [i for i, line in enumerate(lines) if line.startswith(("ITEM: NUMBER OF ATOMS", "ITEM: ATOMS"))]
        if len(heads) == 2 and lines[heads[0]].startswith("ITEM: NUMBER OF ATOMS") and heads[0] + 1 < len(lines):
            try:
                announced = int(lines[heads[0] + 1])
            except ValueError:
                announced = None
            held = sum(1 for line in lines[heads[1] + 1:] if line.strip())
            if announced is not None and announced != held:
                raise InputError(f"structure file '{path}': frame {k} announces {announced} atoms (ITEM: NUMBER OF "
                                 f"ATOMS) but holds {held} atom lines" + (": cut short?" if held < announced else ""))
        atoms = ase.io.read(io.StringIO("".join(lines)), format="lammps-dump-text", index=-1, parallel=False)
        # ASE gives dumped forces an energy of 0.0 beside them; a dump holds no energy, and the
        # placeholder would pass for a label downstream
        results = {k: v for k, v in getattr(atoms.calc, "results", {}).items() if k not in ("energy", "free_energy")}
        atoms.calc = SinglePointCalculator(atoms, **results) if results else None
        return atoms

    with _open_maybe_compressed(path, "rt") as fh:
        frame: List[str] = []
        k = 0
        atoms_seen = False  # the frame's ITEM: ATOMS: a header item after it opens the next frame
        for line in fh:
            if atoms_seen and line.startswith(_DUMP_HEADERS):
                yield parse(frame, k)
                frame, atoms_seen, k = [], False, k + 1
            atoms_seen = atoms_seen or line.startswith("ITEM: ATOMS")
            frame.append(line)
        if frame:
            yield parse(frame, k)


def _read_pickle(path: str, progress: bool = False) -> List[Atoms]:
    try:
        import pandas as pd
    except ImportError:
        raise InputError(f"'{path}': reading pacemaker DataFrames needs pandas (pip install 'aceuq[pacemaker]')") from None
    try:
        df = pd.read_pickle(path, compression="gzip" if path.endswith(("gzip", ".gz")) else None)
    except Exception as exc:
        raise InputError(f"'{path}': not a readable pacemaker DataFrame pickle ({type(exc).__name__}: {exc})") from None
    if "ase_atoms" not in getattr(df, "columns", []):
        raise InputError(f"'{path}': DataFrame has no 'ase_atoms' column")
    ecol = "energy_corrected" if "energy_corrected" in df.columns else ("energy" if "energy" in df.columns else None)

    def label(row, col):
        """row[col], or None where the column is absent or the value missing (None, NaN: what
        pd.concat of labelled and unlabelled frames leaves)."""
        v = row[col] if col is not None and col in df.columns else None
        return None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else v

    frames = []
    rows = show_progress(df.iterrows(), progress, f"reading {os.path.basename(path)}", unit="frame", total=len(df))
    for k, (_, row) in enumerate(rows):
        where = f"'{path}', row {k}"
        if not isinstance(row["ase_atoms"], Atoms):
            raise InputError(f"{where}: 'ase_atoms' is not an ASE Atoms object ({type(row['ase_atoms']).__name__})")
        atoms = row["ase_atoms"].copy()
        results = {}
        for key, col in (("energy", ecol), ("forces", "forces"), ("stress", "stress")):
            v = label(row, col)
            try:
                if v is not None:
                    results[key] = float(v) if key == "energy" else np.asarray(v, dtype=float)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{where}: '{col}' is not numeric ({exc})") from None
        if "forces" in results and results["forces"].shape != (len(atoms), 3):
            raise InputError(f"{where}: 'forces' has shape {results['forces'].shape}, the structure "
                             f"has {len(atoms)} atoms (needs {len(atoms)} x 3)")
        if "stress" in results and results["stress"].shape not in ((6,), (3, 3)):
            raise InputError(f"{where}: 'stress' has shape {results['stress'].shape} (needs 6 Voigt components "
                             f"or 3 x 3)")
        if results:  # the columns are the labels
            set_results(atoms, results)
        frames.append(atoms)
    if not frames:
        raise InputError(f"'{path}': the DataFrame holds no structures")
    return frames


def set_results(atoms: Atoms, results: Dict) -> None:
    """``results`` (energy, forces, stress, ...) as the atoms' calculator results. Keys of the same
    names in their info and arrays would clash with them when the frames are written (ASE
    refuses both): removed."""
    for key in results:
        atoms.info.pop(key, None)
        atoms.arrays.pop(key, None)
    atoms.calc = SinglePointCalculator(atoms, **results)


def read_yaml_config(path: PathLike, what: str) -> dict:
    """A user's YAML config (safe loader) as a mapping; one clear InputError otherwise."""
    import yaml

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{what} '{path}': no such file")
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise InputError(f"{what} '{path}': not valid YAML ({exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} '{path}': not a text file (a YAML config was expected)") from None
    except OSError as exc:  # a folder, unreadable
        raise InputError(f"{what} '{path}': cannot be read ({exc.strerror or exc})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{what} '{path}': expected a mapping")
    return cfg


def is_number(v) -> bool:
    """A finite int or float (numpy's too), not a bool: what a config or argument may give as a number."""
    return isinstance(v, (int, float, np.integer, np.floating)) and config_number(v) is not None


def config_number(v) -> Optional[float]:
    """A config value as a finite number, else None: ints and floats (not bools), and numbers
    written as text (PyYAML reads '1e-5' as a string: only '1.0e-5' is a float to it)."""
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if np.isfinite(x) else None


def is_integer(v) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_version(doc: Dict, where: str, supported: int = 1) -> None:
    """InputError unless the JSON document ``doc`` (a manifest, an error map) is of the layout
    version this aceuq reads (absent: the first); a later layout may mean something else by the
    same keys."""
    if doc.get("version", 1) != supported:
        raise InputError(f"{where}: version {doc.get('version')!r}; this aceuq reads version {supported} "
                         f"(upgrade aceuq)")


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes (which active set an error map was fitted for)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_structures_output(path: PathLike, inputs: Sequence[PathLike] = ()) -> str:
    """check_output for a file of structures, which aceuq writes as extended XYZ text: a name that
    says another format (pace_select's selected.pkl.gz, a .gz) would be taken for it by readers,
    aceuq's and pacemaker's included, which then fail on the text."""
    name = os.path.basename(os.fspath(path)).lower()
    for suffixes, what in (((".pkl", ".pckl", ".pkl.gz", ".pkl.gzip", ".pckl.gz", ".pckl.gzip"),
                            "a pacemaker DataFrame pickle"),
                           ((".gz", ".gzip", ".bz2", ".xz", ".zip"), "a compressed file")):
        if name.endswith(suffixes):
            raise InputError(f"output '{os.fspath(path)}': aceuq writes extended XYZ text, but the name says {what}, "
                             f"which readers (aceuq's and pacemaker's too) would take it for: name it .extxyz")
    return check_output(path, inputs=inputs)


def check_output(path: PathLike, folder: bool = False, inputs: Sequence[PathLike] = ()) -> str:
    """Fail before any work, with one InputError, when ``path`` (a file, or with ``folder`` a
    folder) cannot be written, or is one of the ``inputs`` (the run would replace a file it
    reads: -o given the candidates, the potential or the active set): a long run should not end
    in a traceback, nor in a lost input. Folders made for the check are removed again; the run
    makes them when it writes."""
    path = os.fspath(path)
    kind = "output folder" if folder else "output"
    if not path:
        raise InputError(f"{kind}: the name is empty")
    for source in inputs:
        try:
            same = os.path.samefile(path, source)
        except OSError:  # either not there: no clash
            same = False
        if same:
            raise InputError(f"{kind} '{path}': is the input '{os.fspath(source)}', which writing it would replace "
                             f"(name another file)")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{kind} '{path}': exists and is not a folder")
    if not folder:
        _check_file_name(path)
    if folder:
        probe_in = path
    else:
        target, in_place = _output_target(path)
        if in_place:
            if not os.access(target, os.W_OK):
                raise InputError(f"{kind} '{path}': cannot be written (permission denied)")
            return path
        probe_in = os.path.dirname(target)
    made = _missing_folders(probe_in)
    try:
        fd, probe = _temp_in(probe_in, ".probe", f"{kind} '{path}'")
        os.close(fd)
        os.unlink(probe)
    finally:
        for created in made:  # deepest first: a run that fails later leaves no empty folders behind;
            try:              # writing the output makes them again
                os.rmdir(created)
            except OSError:   # not made after all, or something else has been put there: keep it
                pass
    return path


def _missing_folders(folder: str) -> List[str]:
    """The folders that do not exist yet on the way to ``folder``, deepest first."""
    missing, here = [], os.path.abspath(folder)
    while here and not os.path.lexists(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return missing


def _check_file_name(path: str) -> None:
    """InputError unless the output ``path`` can name a file: not a folder, nor a name ending in
    a separator (a folder to be, which a rename would otherwise turn into a file)."""
    if os.path.isdir(path):
        raise InputError(f"output '{path}': is a folder (give a file name)")
    if path.endswith((os.sep, "/")):
        raise InputError(f"output '{path}': ends in '/', a folder (give a file name)")


def _output_target(path: str):
    """(target, in_place): where writing ``path`` goes and whether in place. An existing file that
    is not a regular one (a device such as /dev/null, a FIFO) and a name of an open descriptor
    (/dev/stdout, /dev/fd/N: a shell's redirection) must not be replaced by a rename: they are
    written in place, through ``path`` itself. Otherwise symbolic links are followed, so a link
    keeps pointing where it did and its target gets the content."""
    try:
        mode = os.stat(path).st_mode  # follows links, also /proc's links to open descriptors
    except OSError:  # not there (yet), or not reachable: writing it will tell
        return os.path.realpath(path), False
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or _descriptor(path) is not None:
        return path, True
    return os.path.realpath(path), False


_DESCRIPTOR = re.compile(r"^/(?:proc/(self|\d+)|dev)/fd/(\d+)$")


def _descriptor(path: str) -> Optional[int]:
    """The open file descriptor of this process that ``path``, or a symbolic link it leads
    through, names (/dev/stdout -> /proc/self/fd/1: 1), else None."""
    p = os.path.abspath(path)
    for _ in range(40):  # a chain of links, not a loop
        m = _DESCRIPTOR.match(p)
        if m:
            return int(m.group(2)) if m.group(1) in (None, "self", str(os.getpid())) else None
        if not os.path.islink(p):
            return None
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return None


def names_stdout(path: PathLike) -> bool:
    """Whether ``path`` names this process's standard output (``/dev/stdout``, ``/dev/fd/1``, a
    link to them)."""
    return _descriptor(os.fspath(path)) == 1


def _temp_in(folder: str, suffix: str, what: str):
    """(fd, path) of a new temporary file in ``folder`` (created if need be); an InputError
    naming ``what`` when that is not possible."""
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkstemp(prefix=".aceuq-", suffix=suffix, dir=folder)
    except OSError as exc:
        raise InputError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None


@contextmanager
def _full_disk_named(path: str) -> Iterator[None]:
    """A write that fails for want of room (disk full, quota, file size limit) is an InputError
    naming the output, not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise InputError(f"output '{path}': cannot be written ({exc.strerror or exc})") from None
        raise


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends
    without error (readers never see half a file), removed otherwise, also on SIGTERM. The file
    gets the permissions of the file it replaces, or the usual ones (umask), not mkstemp's
    private 0600. An unwritable place is an InputError. A symbolic link is followed (the file it
    names is replaced; the link stays); a device or FIFO (``-o /dev/null``) is written in place."""
    path = os.fspath(path)
    _check_file_name(path)
    target, in_place = _output_target(path)
    if in_place:
        with _full_disk_named(path):
            yield target
        return
    with sigterm_as_exit(), _full_disk_named(path):
        fd, tmp = _temp_in(os.path.dirname(target), suffix, f"output '{path}'")
        try:
            try:  # a file replaced keeps its permissions
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except OSError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.fchmod(fd, mode)
            os.close(fd)
            yield tmp
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise InputError(f"output '{path}': cannot be written ({exc.strerror or exc})") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While an output is written, or temporary files are held: SIGTERM (`timeout`, a batch
    system's time limit, `kill`) ends the process as an exception does, so the temporary files are
    removed, instead of killing it on the spot. Only then (a long LAMMPS run must stay killable at
    once), only in the main thread (where handlers are set), and only where nothing else handles
    SIGTERM."""
    import signal
    import threading

    def terminated(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def atomic_output(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """An open file whose content replaces ``path`` atomically when the block ends. A path naming
    one of this process's open descriptors (``-o /dev/stdout``) is written through that
    descriptor, where it stands (as ``>`` or ``>>`` left it), not reopened from the start."""
    fd = _descriptor(os.fspath(path))
    if fd is not None:
        with _full_disk_named(os.fspath(path)), os.fdopen(os.dup(fd), mode) as fh:
            yield fh
        return
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def write_extxyz_atomic(path: PathLike, frames: Iterable[Atoms], progress: bool = False) -> None:
    """Write extended XYZ through a temporary file and a rename: readers never see half a file.
    progress: a bar over the frames written (on a terminal)."""
    import ase.io

    frames = list(frames)
    with atomic_output(path) as fh:
        for atoms in show_progress(frames, progress, f"writing {os.path.basename(os.fspath(path))}", unit="frame"):
            ase.io.write(fh, atoms, format="extxyz", parallel=False)
