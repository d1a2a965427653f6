"""``aceuq demo``: the whole workflow on a small real system, in well under a minute.

1. training data: strained and lightly rattled fcc Cu supercells labelled by ASE's EMT;
2. a linear ACE potential fitted to them (pyace's ridge model);
3. a clustered active set (local D-optimality) built from the training atoms;
4. LAMMPS with pair_style aceuq heats the crystal through melting while
   fix aceuq/extrapolation writes the configurations and cut-outs whose extrapolation grade
   crosses the lower threshold, and stops the run when it crosses the upper one.
"""
from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ._core import InputError
from .lammps import lammps_quote


@dataclass
class DemoResult:
    folder: str
    steps_run: int
    steps_requested: int
    max_gamma: float
    frames_written: int
    cutouts_written: int
    halted: bool
    seconds: float


def training_set(n_frames: int = 24, seed: int = 0):
    """Strained, lightly rattled fcc Cu (32 atoms each) with EMT energies and forces."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.02 + 0.06 * rng.random(), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    return frames


def lammps_input(potential: str, active_set: str, folder: str, steps: int, lower: float, upper: float,
                 cutout_lower: float, cutout: float, t_start: float = 300.0, t_stop: float = 2500.0) -> List[str]:
    """The LAMMPS commands of the heating run (also written to folder/in.heat.lmp)."""
    return [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "lattice fcc 3.61",
        "region box block 0 4 0 4 0 4",
        "create_box 1 box",
        "create_atoms 1 box",
        "mass 1 63.546",
        "pair_style aceuq",
        f"pair_coeff * * {lammps_quote(potential)} {lammps_quote(active_set)} Cu",
        f"velocity all create {t_start} 4928459 loop geom",
        "timestep 0.002",
        f"fix heat all nvt temp {t_start} {t_stop} 0.1",
        f"fix dft all aceuq/extrapolation 20 lower {lower} upper {upper} "
        f"file {lammps_quote(os.path.join(folder, 'extrapolative.extxyz'))}",
        f"fix cut all aceuq/extrapolation 20 lower {cutout_lower} upper {upper * 10} "
        f"file {lammps_quote(os.path.join(folder, 'cutouts.extxyz'))} cutout {cutout}",
        "thermo_style custom step temp pe etotal f_dft[1] f_dft[2]",
        "thermo_modify format float %12.5g",
        "thermo 100",
        f"run {steps}",
    ]


EXPLORE_CONFIG = """# Exploration of the demo's model: mpiexec -n 2 aceuq explore explore.yaml -o explore
# (paths are relative to this file; see the README, "Exploration over MPI ranks")
potential: Cu.yaml
active_set: {active_set}
structures: start.extxyz     # the 256-atom fcc crystal of the heating run
temperatures: [800, 1600, 2400]
seeds: [1]
steps: 500
timestep: 0.002
every: 20
lower: {lower}
upper: {upper}
select: 5
"""


def write_explore_config(folder: str, active_set: str, lower: float, upper: float) -> str:
    """start.extxyz and explore.yaml in folder: a ready `aceuq explore` run of the demo's model."""
    from ase.build import bulk

    from .data import atomic_output, write_extxyz_atomic

    write_extxyz_atomic(os.path.join(folder, "start.extxyz"), [bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))])
    path = os.path.join(folder, "explore.yaml")
    with atomic_output(path) as fh:
        fh.write(EXPLORE_CONFIG.format(active_set=os.path.basename(active_set), lower=lower, upper=upper))
    return path


def run(folder: str = "aceuq-demo", steps: int = 3000, lower: float = 3.0, upper: float = 25.0,
        cutout_lower: float = 8.0, cutout: Optional[float] = None, clusters="auto",
        verbose: bool = True) -> DemoResult:
    """The demo (README quick start) in ``folder``. cutout: the cut-outs' radius, by default the
    potential's cutoff (the least that keeps each centre's environment whole)."""
    from .activeset import build_active_set
    from .data import atomic_output, write_extxyz_atomic
    from .ensemble import fit_linear_potential
    from .lammps import make_lammps
    from .potential import Potential

    if not 0 < lower < upper:  # as aceuq explore asks of the explore.yaml written below
        raise InputError(f"demo: need 0 < lower < upper (got lower {lower}, upper {upper})")
    # cut-outs of atoms above cutout_lower, before the run stops at upper
    cutout_lower = min(cutout_lower, upper)
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)

    frames = training_set()
    write_extxyz_atomic(os.path.join(folder, "train.extxyz"), frames)
    say(f"[1/4] training data: {len(frames)} strained fcc Cu cells (EMT), {sum(map(len, frames))} atoms "
        f"-> train.extxyz")

    pot_path = os.path.join(folder, "Cu.yaml")
    fit_linear_potential(frames, pot_path, basis="small", cutoff=5.0)
    pot = Potential(pot_path)
    say(f"[2/4] linear ACE: {pot.n_functions('Cu')} functions, cutoff {pot.cutoff} Å -> Cu.yaml")

    built = build_active_set(pot, frames, clusters=clusters)
    as_path = built.save(os.path.join(folder, "Cu.casi" if built.clustered else "Cu.asi"))
    cu = built.elements["Cu"]
    say(f"[3/4] active set: {cu.n_atoms} training atoms, effective k = {cu.k} cluster(s) "
        f"-> {os.path.basename(as_path)}")

    cutout = pot.cutoff if cutout is None else cutout
    commands = lammps_input(pot_path, as_path, folder, steps, lower, upper, cutout_lower, cutout)
    with atomic_output(os.path.join(folder, "in.heat.lmp")) as fh:
        fh.write("# plugin load <path printed by 'aceuq info'>\n" + "\n".join(commands) + "\n")
    say(f"[4/4] LAMMPS: 256 Cu atoms heated 300 K -> 2500 K over {steps} steps (2 fs); gamma every 20 steps, "
        f"frames above {lower}, cut-outs above {cutout_lower}, stop above {upper}")
    lmp = make_lammps(cmdargs=["-log", os.path.join(folder, "log.lammps"), "-screen", "none", "-nocite"])
    try:
        for c in commands:
            lmp.command(c)
        steps_run = int(lmp.extract_global("ntimestep"))
        vec = [lmp.extract_fix("dft", 0, 1, k) for k in range(4)]
        vcut = [lmp.extract_fix("cut", 0, 1, k) for k in range(4)]
        temp = lmp.get_thermo("temp")
    finally:
        lmp.close()

    res = DemoResult(folder=folder, steps_run=steps_run, steps_requested=steps, max_gamma=float(vec[0]),
                     frames_written=int(vec[2]), cutouts_written=int(vcut[3]), halted=steps_run < steps,
                     seconds=time.perf_counter() - t0)
    say("")
    if res.halted:
        say(f"stopped at step {res.steps_run} of {steps} (T = {temp:.0f} K): max gamma {res.max_gamma:.3g} > {upper}")
    else:
        say(f"ran all {steps} steps (T = {temp:.0f} K); last max gamma {res.max_gamma:.3g}")
    say(f"configurations to send to DFT: {res.frames_written} frames (gamma > {lower}) in extrapolative.extxyz, "
        f"{res.cutouts_written} cut-outs of radius {cutout} Å (gamma > {cutout_lower}) in cutouts.extxyz")
    explore = write_explore_config(folder, as_path, lower, upper)
    say(f"files in {folder} ({res.seconds:.0f} s)")
    say(f"next, MD replicas over MPI ranks with D-optimal selection: "
        f"mpiexec -n 2 aceuq explore {shlex.quote(os.path.relpath(explore))} "
        f"-o {shlex.quote(os.path.relpath(os.path.join(folder, 'explore')))}")
    return res
