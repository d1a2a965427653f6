"""``mpiexec -n N aceuq explore CONFIG.yaml -o DIR``: extrapolation-triggered exploration.

Many independent MD replicas (every starting structure x temperature x seed) run with
``pair_style aceuq`` and ``fix aceuq/extrapolation``: every ``every`` steps the fix grades the
atoms, appends the configuration (or cut-outs around the extrapolating atoms) once the largest γ
exceeds ``lower`` and stops the replica once it exceeds ``upper``. With ``mode: replicas`` (the
default) the replicas are dealt out to the MPI ranks (replica i on rank i mod N, each in its own
single-rank LAMMPS), so a replica's trajectory does not depend on how many ranks run the job;
with ``mode: domain`` every replica in turn runs on all ranks, domain-decomposed (for systems too
large for one rank; the fix gathers frames and cut-outs to one writer). Rank 0 then gathers what
every replica wrote, in replica order, into ``candidates.extxyz`` and removes near-duplicates by
D-optimal selection against the active set (as ``aceuq select``): ``selected.extxyz`` holds the
configurations worth computing with DFT. ``summary.json`` lists every replica (steps run, whether
it stopped, frames written, last max γ, error). A run replaces the outputs of an earlier run into
the same folder.

Config (YAML; paths relative to the config file)::

    potential: Cu.yaml          # pacemaker potential
    active_set: Cu.casi         # .asi or .casi of that potential
    structures: [start.extxyz]  # starting configurations: every frame of every file
    elements: null              # elements of LAMMPS atom types 1, 2, ... (structures that are LAMMPS dumps)
    temperatures: [600, 1500]   # K: NVT (Nose-Hoover) at each
    seeds: [1]                  # velocity seeds: one replica per structure, temperature and seed
    steps: 5000
    timestep: 0.002             # ps (metal units)
    every: 20                   # grade every N steps
    lower: 3.0                  # write configurations above this max γ
    upper: 25.0                 # stop a replica above this max γ
    cutout: null                # a radius (Å): write cut-outs around each atom above lower instead
    select: 20                  # configurations to select from all written (0: keep all, no selection)
    select_rule: greedy         # or one-shot: pace_select's rule (aceuq select --one-shot)
    mode: replicas              # or domain: each replica on all ranks
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from ._core import InputError
from .data import (atomic_output, check_output, config_number, is_integer, parse_elements, read_structures,
                   read_yaml_config, structure_label, write_extxyz_atomic)
from .lammps import lammps_quote

DEFAULTS = {"seeds": [1], "timestep": 0.002, "every": 20, "cutout": None, "select": 0, "select_rule": "greedy",
            "assign": None, "mode": "replicas", "elements": None}
REQUIRED = ("potential", "active_set", "structures", "temperatures", "steps", "lower", "upper")


@dataclass
class Replica:
    index: int
    structure: int        # index into all starting frames
    temperature: float
    seed: int


@dataclass
class ReplicaResult:
    index: int
    structure: int
    temperature: float
    seed: int
    rank: int             # the rank that ran it; -1: all ranks together (mode: domain)
    steps_run: int = 0
    halted: bool = False
    frames_written: int = 0
    last_max_gamma: float = 0.0
    seconds: float = 0.0
    error: Optional[str] = None


def load_config(path) -> Dict:
    """Read and check an explore config; paths become absolute (relative to the config file)."""
    path = os.fspath(path)
    raw = read_yaml_config(path, "explore config")
    where = f"explore config '{path}'"
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    unknown = set(raw) - set(REQUIRED) - set(DEFAULTS) - {"name", "description"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **raw}
    base = os.path.dirname(os.path.abspath(path))

    def file(p):
        full = p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
        if not os.path.exists(full):
            raise InputError(f"{where}: no such file '{p}' (looked for {full})")
        return full

    def check_kind(key, v, kind):
        x = config_number(v)
        if x is None or (kind is int and not x.is_integer()):
            raise InputError(f"{where}: '{key}' must be {'an integer' if kind is int else 'a finite number'}, "
                             f"got {v!r}")
        return int(v) if kind is int and is_integer(v) else kind(x)

    def number_list(key, kind):
        v = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        if not v:
            raise InputError(f"{where}: '{key}' is empty")
        v = [check_kind(key, x, kind) for x in v]
        if len(set(v)) < len(v):
            raise InputError(f"{where}: '{key}' lists a value twice (its replicas would be identical): {cfg[key]!r}")
        return v

    def number(key, kind, low, strict=True):
        v = check_kind(key, cfg[key], kind)
        if v < low or (strict and v == low):
            raise InputError(f"{where}: '{key}' must be {'>' if strict else '>='} {low}, got {v}")
        return v

    for key in ("potential", "active_set"):
        if not isinstance(cfg[key], str):
            raise InputError(f"{where}: '{key}' must be a file name, got {cfg[key]!r}")
    cfg["potential"] = file(cfg["potential"])
    cfg["active_set"] = file(cfg["active_set"])
    structures = cfg["structures"] if isinstance(cfg["structures"], list) else [cfg["structures"]]
    cfg["structures"] = [file(str(s)) for s in structures]
    cfg["temperatures"] = number_list("temperatures", float)
    if min(cfg["temperatures"]) <= 0:
        raise InputError(f"{where}: temperatures must be positive, got {cfg['temperatures']}")
    cfg["seeds"] = number_list("seeds", int)
    if min(cfg["seeds"]) <= 0 or max(cfg["seeds"]) > 2**31 - 1:
        raise InputError(f"{where}: seeds must be integers from 1 to 2147483647 (LAMMPS velocity seeds), "
                         f"got {cfg['seeds']}")
    cfg["steps"] = number("steps", int, 0)
    if cfg["steps"] > 2**31 - 1:  # LAMMPS's run takes a 32-bit step count
        raise InputError(f"{where}: steps must be at most 2147483647 (a LAMMPS run), got {cfg['steps']}")
    cfg["every"] = number("every", int, 0)
    cfg["timestep"] = number("timestep", float, 0.0)
    cfg["lower"] = number("lower", float, 0.0)
    cfg["upper"] = number("upper", float, 0.0)
    if cfg["upper"] <= cfg["lower"]:
        raise InputError(f"{where}: 'upper' ({cfg['upper']}) must be above 'lower' ({cfg['lower']})")
    if cfg["cutout"] is not None:
        cfg["cutout"] = number("cutout", float, 0.0)
    cfg["select"] = number("select", int, 0, strict=False)
    if cfg["select_rule"] not in ("greedy", "one-shot"):
        raise InputError(f"{where}: 'select_rule' must be greedy or one-shot, got {cfg['select_rule']!r}")
    if cfg["mode"] not in ("replicas", "domain"):
        raise InputError(f"{where}: 'mode' must be replicas or domain, got {cfg['mode']!r}")
    if cfg["assign"] not in (None, "nearest", "min"):
        raise InputError(f"{where}: 'assign' must be nearest or min, got {cfg['assign']!r}")
    if cfg["elements"] is not None:
        try:
            cfg["elements"] = parse_elements(cfg["elements"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return cfg


def plan(cfg: Dict, n_structures: int) -> List[Replica]:
    """Every starting structure x temperature x seed, in that nesting order."""
    out = []
    for s in range(n_structures):
        for t in cfg["temperatures"]:
            for seed in cfg["seeds"]:
                out.append(Replica(len(out), s, t, seed))
    return out


def lammps_commands(cfg: Dict, data_file: str, elements: Sequence[str], pbc, out_file: str,
                    rep: Replica) -> List[str]:
    """The LAMMPS input of one replica."""
    # open axes shrink-wrap with lammps_start's box as the minimum ('m'): with 's' the box of a
    # flat structure (a dimer, one layer) would have no thickness, too thin for neighbour bins
    boundary = " ".join("p" if p else "m" for p in pbc)
    dt = cfg["timestep"]
    extract = (f"fix x all aceuq/extrapolation {cfg['every']} lower {cfg['lower']} upper {cfg['upper']} "
               f"file {lammps_quote(out_file)}" + (f" cutout {cfg['cutout']}" if cfg["cutout"] else ""))
    return [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        f"boundary {boundary}",
        f"read_data {lammps_quote(data_file)}",
        "pair_style aceuq" + (f" assign {cfg['assign']}" if cfg["assign"] else ""),
        f"pair_coeff * * {lammps_quote(cfg['potential'])} {lammps_quote(cfg['active_set'])} {' '.join(elements)}",
        f"velocity all create {rep.temperature} {rep.seed} mom yes rot no dist gaussian loop geom",
        f"timestep {dt}",
        f"fix md all nvt temp {rep.temperature} {rep.temperature} {100 * dt}",
        extract,
        "thermo_style custom step temp pe f_x[1] f_x[2]",
        # thermo prints f_x: only on grading steps (multiples of every), about 10 times per run
        f"thermo {cfg['every'] * max(1, cfg['steps'] // (10 * cfg['every']))}",
        f"run {cfg['steps']}",
    ]


def lammps_start(atoms, label: str, cutoff: float):
    """The starting structure as the LAMMPS data file gets it: without the atom types a LAMMPS dump
    brought (ASE's writer would use them instead of the potential's element order), and an open
    structure without a cell put in a box (its boundaries shrink-wrap); InputError naming ``label``
    for what cannot run."""
    if len(atoms) < 2:
        raise InputError(f"{label}: {len(atoms)} atom(s); MD at a temperature needs at least 2")
    a = atoms.copy()
    a.arrays.pop("type", None)
    open_axes = [k for k in range(3) if not a.pbc[k]]
    if open_axes:  # the cell along them need not hold the atoms (or exist): LAMMPS needs it to
        a.center(vacuum=cutoff, axis=open_axes)
    # (rank counts the non-zero vectors: three coplanar ones pass it, and LAMMPS then fails on the
    # cell's NaN tilts)
    lengths = np.prod(np.linalg.norm(a.cell.array, axis=1))
    if a.cell.rank < 3 or abs(np.linalg.det(a.cell.array)) <= 1e-9 * lengths:
        raise InputError(f"{label}: periodic along {''.join('xyz'[k] for k in range(3) if a.pbc[k])} "
                         f"but its cell has no volume")
    return a


def _write_error(stem: str, msg: str) -> None:
    """A failed replica's reason, in its stem.error (best effort: the summary has it too)."""
    try:
        with atomic_output(stem + ".error") as fh:
            fh.write(msg + "\n")
    except InputError:
        pass


def run_replica(cfg: Dict, rep: Replica, atoms, elements: Sequence[str], folder: str, comm,
                domain: bool = False, cutoff: float = 10.0) -> ReplicaResult:
    """One replica in a LAMMPS on ``comm`` (one rank, or all of them for mode: domain: every rank
    of comm calls this); never raises (errors are recorded, with what the replica did before)."""
    import ase.io
    from mpi4py import MPI

    from .lammps import make_lammps

    alone = comm.Get_size() == 1
    res = ReplicaResult(rep.index, rep.structure, rep.temperature, rep.seed,
                        -1 if domain else MPI.COMM_WORLD.Get_rank())
    t0 = time.perf_counter()
    stem = os.path.join(folder, f"replica_{rep.index:04d}")
    out_file = stem + ".extxyz"
    label = f"starting structure {rep.structure} ({structure_label(atoms, rep.structure)})"
    lmp = None
    try:
        present = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if present:
            raise InputError(f"{label} has element(s) {', '.join(present)} that the potential lacks")
        start = lammps_start(atoms, label, cutoff)
        failed = None
        if comm.Get_rank() == 0:  # one writer; the other ranks of a domain run wait for it
            try:
                # parallel=False: under MPI, ASE would otherwise write on world rank 0 only
                ase.io.write(stem + ".data", start, format="lammps-data", specorder=list(elements),
                             masses=True, units="metal", atom_style="atomic", parallel=False)
            except Exception as exc:  # noqa: BLE001 -- shared with the other ranks below
                failed = f"cannot write {stem}.data: {type(exc).__name__}: {exc}"
        failed = comm.bcast(failed, root=0)
        if failed:
            raise OSError(failed)
        lmp = make_lammps(cmdargs=["-log", stem + ".log", "-screen", "none", "-nocite"], comm=comm)
        for c in lammps_commands(cfg, stem + ".data", elements, start.pbc, out_file, rep):
            lmp.command(c)
    except Exception as exc:  # noqa: BLE001 -- recorded, reported by rank 0, exit code 1
        res.error = f"{type(exc).__name__}: {exc}"
        if not alone and type(exc).__name__ == "MPIAbortException":
            # LAMMPS failed on this rank only (error->one, e.g. atoms too close): the other ranks
            # are inside a collective of the same run and cannot be released, so end the job. The
            # message also goes to a file: mpiexec may drop what an aborting rank last printed.
            msg = (f"explore: replica {rep.index} (structure {rep.structure}, {rep.temperature:g} K, seed "
                   f"{rep.seed}) failed on rank {MPI.COMM_WORLD.Get_rank()} alone, which stops a domain run: "
                   f"{res.error}")
            _write_error(stem, msg)
            print(f"{msg} (also in {stem}.error)", file=sys.stderr, flush=True)
            time.sleep(1.0)  # let mpiexec forward it before the abort tears the job down
            MPI.COMM_WORLD.Abort(1)
            os._exit(1)  # MPICH's Abort can return before mpiexec ends this rank: run nothing more
        elif comm.Get_rank() == 0:  # (every rank of a domain run got the same error)
            _write_error(stem, f"explore: replica {rep.index} (structure {rep.structure}, {rep.temperature:g} K, "
                               f"seed {rep.seed}) failed: {res.error}")
    if lmp is not None:
        try:  # also after an error in the run: what the replica did until then
            res.steps_run = int(lmp.extract_global("ntimestep"))
            if lmp.has_id("fix", "x"):
                vec = [lmp.extract_fix("x", 0, 1, k) for k in range(4)]
                res.last_max_gamma = float(vec[0])
                res.frames_written = int(vec[3] if cfg["cutout"] else vec[2])
                # the fix stops the run at the first check above upper (also one at the last step)
                res.halted = res.last_max_gamma > cfg["upper"]
        except Exception as exc:  # noqa: BLE001 -- a LAMMPS left unusable by its error
            res.error = res.error or f"{type(exc).__name__}: {exc}"
        finally:
            lmp.close()
    res.seconds = time.perf_counter() - t0
    return res


OUTPUTS = ("candidates.extxyz", "selected.extxyz", "summary.json")
REPLICA_SUFFIXES = (".extxyz", ".data", ".log", ".error")


def remove_earlier_outputs(folder: str) -> None:
    """What an earlier run into ``folder`` wrote (and this one writes anew): its outputs and
    replica files, so that none of them is read, or left, as if this run had written it. A
    replica file's name taken by a folder is refused before anything is removed."""
    replicas = os.path.join(folder, "replicas")
    theirs = [os.path.join(replicas, name) for name in sorted(os.listdir(replicas))
              if name.startswith("replica_") and name.endswith(REPLICA_SUFFIXES)]
    for path in theirs:
        if os.path.isdir(path):
            raise InputError(f"output '{path}': is a folder, where a replica's file goes")
    for name in OUTPUTS:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):  # a link is written through, as any output
            os.unlink(path)
    for path in theirs:
        os.unlink(path)


def gather_frames(folder: str, results: Sequence[ReplicaResult]):
    """What every replica wrote, in replica order, labelled with its replica."""
    import ase.io

    frames = []
    for r in sorted(results, key=lambda r: r.index):
        path = os.path.join(folder, f"replica_{r.index:04d}.extxyz")
        if not os.path.exists(path):
            continue
        for a in ase.io.read(path, index=":", format="extxyz", parallel=False):
            a.info.update(replica=r.index, structure=r.structure, temperature=r.temperature, seed=r.seed)
            frames.append(a)
    return frames


def interior_atoms(cutouts: Sequence[Atoms], cutoff: float) -> List[np.ndarray]:
    """Per cut-out, the atoms whose whole environment (every neighbour within ``cutoff``) is in
    it: those within its radius less the cutoff of its centre atom, and the centre always. The
    atoms near a cut-out's surface have lost neighbours: graded, they look novel to any active
    set, though no simulation has such environments."""
    masks = []
    for a in cutouts:
        centre = np.flatnonzero(a.arrays["id"] == a.info["centre_id"])
        if len(centre) != 1:
            raise InputError(f"cut-out of step {a.info.get('step')}: centre atom {a.info.get('centre_id')} "
                             "not found once among its atoms")
        d = np.linalg.norm(a.positions - a.positions[centre[0]], axis=1)
        masks.append(d <= float(a.info["cutout_radius"]) - cutoff + 1e-9)
        masks[-1][centre[0]] = True
    return masks


def run(config, output_dir: str, progress: bool = True, comm=None) -> Optional[Dict]:
    """Run the exploration on every rank of ``comm`` (default MPI.COMM_WORLD); rank 0 returns the
    summary (also written to output_dir/summary.json), the other ranks None."""
    from .activeset import ActiveSet
    from .lammps import load_mpi
    from .potential import Potential

    load_mpi()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    # on every rank: a bad config or input file fails everywhere, with the same message
    cfg = load_config(config)
    try:
        pot = Potential(cfg["potential"])
    except InputError as exc:
        raise InputError(f"explore config '{config}', 'potential': {exc}") from None
    try:
        aset = ActiveSet.load(cfg["active_set"], pot, assign=cfg["assign"])
    except InputError as exc:
        raise InputError(f"explore config '{config}', 'active_set': {exc}") from None
    if cfg["cutout"] and cfg["cutout"] < pot.cutoff:
        raise InputError(f"explore config '{config}': cutout {cfg['cutout']:g} Å is below the potential's cutoff "
                         f"{pot.cutoff:g} Å: a cut-out's centre atom would lack neighbours it has in the simulation, "
                         f"so its environment, the one to send to DFT, would be another (use cutout >= {pot.cutoff:g})")
    starts = read_structures(cfg["structures"], cfg["elements"])
    if not starts:
        raise InputError(f"explore config '{config}': the structure files hold no configuration")
    replicas = plan(cfg, len(starts))
    folder = os.path.abspath(output_dir)
    replica_dir = os.path.join(folder, "replicas")
    failed = None
    if rank == 0:
        try:
            check_output(folder, folder=True)  # found unwritable now, not after all the MD (nor after
            for name in OUTPUTS:                # removing an earlier run's outputs)
                check_output(os.path.join(folder, name))
            os.makedirs(replica_dir, exist_ok=True)
            remove_earlier_outputs(folder)
        except OSError as exc:
            failed = f"explore: cannot prepare the output folder {replica_dir}: {exc.strerror or exc}"
        except InputError as exc:
            failed = f"explore: {exc}"
    failed = comm.bcast(failed, root=0)
    if failed:
        raise InputError(failed)

    domain = cfg["mode"] == "domain"
    mine = replicas if domain else replicas[rank::size]
    results = []
    for rep in mine:
        r = run_replica(cfg, rep, starts[rep.structure], pot.elements, replica_dir,
                        comm if domain else MPI.COMM_SELF, domain=domain, cutoff=pot.cutoff)
        if domain and rank != 0:
            continue  # the same result on every rank: rank 0 reports it
        results.append(r)
        if progress:
            state = (f"error: {r.error}" if r.error else
                     f"{'stopped' if r.halted else 'finished'} at step {r.steps_run}, {r.frames_written} written, "
                     f"last max γ {r.last_max_gamma:.3g}")
            who = f"{size} ranks" if domain else f"rank {rank}"
            # numbered as in summary.json and replicas/replica_NNNN.*
            print(f"[{who}] replica {rep.index} of 0-{len(replicas) - 1} (structure {rep.structure}, "
                  f"{rep.temperature:g} K, seed {rep.seed}): {state} ({r.seconds:.1f} s)", flush=True)
    gathered = comm.gather(results, root=0)
    if rank != 0:
        comm.Barrier()
        return None
    try:
        results = sorted((r for part in gathered for r in part), key=lambda r: r.index)
        frames = gather_frames(replica_dir, results)
        write_extxyz_atomic(os.path.join(folder, "candidates.extxyz"), frames, progress=progress)
        summary = {"replicas": [asdict(r) for r in results], "candidates": len(frames), "ranks": size,
                   "selected": None}
        if cfg["select"] and frames:
            from .select import select_structures, selected_frames

            counted = interior_atoms(frames, pot.cutoff) if cfg["cutout"] else None
            # the other ranks wait in the barrier below, each polling a core at full load: BLAS
            # threads beyond one would fight them for those cores (the demo's selection on two
            # ranks took 2.2 s instead of 0.15 s)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1 if size > 1 else None, user_api="blas"):
                sel = select_structures(pot, frames, aset, cfg["select"], progress=progress, counted=counted,
                                        one_shot=cfg["select_rule"] == "one-shot")
            write_extxyz_atomic(os.path.join(folder, "selected.extxyz"), selected_frames(frames, sel),
                                progress=progress)
            summary["selected"] = [int(i) for i in sel.indices]
            summary["selection_notes"] = sel.notes
        elif cfg["select"]:
            summary["selected"] = []
            summary["selection_notes"] = ["no replica wrote a configuration: nothing to select"]
            write_extxyz_atomic(os.path.join(folder, "selected.extxyz"), [])  # (an earlier run's is gone)
        with atomic_output(os.path.join(folder, "summary.json")) as fh:
            json.dump(summary, fh, indent=1)
    finally:
        comm.Barrier()
    return summary
