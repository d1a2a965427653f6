"""Cost of the extrapolation grade inside LAMMPS: pair_style aceuq with and without γ every step.

What is measured: µs per atom per MD step (wall time of `run N pre no post no` on rank 0, between
MPI barriers, divided by atoms × N; also the largest process CPU time of any rank, which other jobs
on a shared machine disturb less) on the same rattled fcc Cu box, for two pair-style set-ups:

    global      pair_coeff * * POT.yaml G.asi Cu
    casi k=8    pair_coeff * * POT.yaml C8.casi Cu

each timed twice in the same pair-style instance: E+F alone (no fix asks for γ, so none is
computed) and E+F+γ every step (`fix g all pair 1 aceuq gamma 1`). Comparing within one instance
keeps out what re-creating the pair style changes (where its arrays and the neighbour lists land
in memory): E+F alone of two instances has differed by up to 8 %, more than the effect measured.
On a shared machine single ratios still move by a few per cent from run to run. Reported ratios: glob/EF and casi/EF (γ every step over E+F of the same
instance) and casi/glob = (casi/EF) / (glob/EF), the cost of clustered over global grading, both
as ratios of the minima over rounds and as medians over rounds of the back-to-back pairs (E+F and
E+F+γ of one set-up timed one right after the other), which cancel slow drifts of the machine.
Each median is printed with its 90 % bootstrap interval (resampling the rounds, or the triples
below): how far the machine's noise leaves it uncertain, to read a target against.

For every combination of potential (--functions, default ~80 and ~300 functions, 2 densities,
--rcut), box size (--sizes, default 500 and 4000 atoms) and MPI ranks (--ranks, default 1 and 2;
more than one rank runs this same script under the mpich wheel's mpiexec as a driver), one LAMMPS
process alternates the set-ups and, within each, the two timings (orders reversed every round),
`--repeat` rounds; each figure is the minimum over rounds. Atoms do not move (no integrator: every
step recomputes forces on the same positions), so random-coefficient potentials cannot blow up and
every step costs the same. Neighbour lists are built once per block.

The active sets are built by aceuq's build_active_set on rattled/strained/hot Cu cells (not
timed): global, and clustered with clusters=8. If fewer than 8 clusters survive (every cluster
needs at least n_functions atoms), a k=8 .casi is written by hand in the documented layout
(k-means centres in the PCA space, the global inverse in every cluster): the cost of grading
does not depend on the values of the inverses.

Single steps are timed too (rank 0's wall time from one step's forces to the next's, through a
`fix external` callback), with γ on every third step (`fix pair 3`): per triple, a step with γ
(G), the E+F step after it (E1, which pays for whatever grading evicted from the caches) and a
clean E+F step (E2); with γ every step every step would cost G + E1 - E2, and the median over
triples of (G + E1 - E2) / E2 is a whole-step ratio from steps tens of ms apart. The pair style's
timers (below), read at each step, split it: grading, what the γ step's E+F part costs more than a
clean one (the projections written, caches), the rest of the γ step, and the step after.

The pair style also times itself (extract_pair "pair_seconds" and "gamma_seconds": wall seconds in
its compute and, of those, in grading, per rank): on the E+F+γ blocks the ratio pair time / (pair
time - grading time) splits the same steps into E+F and γ, so changes of the machine's speed
during a block cancel. It leaves out what grading does to the rest of a step (evicted caches),
which the whole-step ratios include; on a quiet machine the two agree to about a per cent.

Last, the Grader by itself (aceuq.ActiveSet.grade, no LAMMPS) is timed on the projections of a
box like the benchmark's, and the ratios it implies, 1 + Grader / (E+F per atom and rank), are
printed: the part of the γ cost that is arithmetic (the batched products run close to the FMA
peak of a core), below which the LAMMPS ratios cannot go, whatever the machine's noise does.

Targets: γ every step <= 1.05x E+F alone; clustered <= 1.03x global.

    python benchmarks/bench_lammps.py [--functions 80 300] [--sizes 500 4000] [--ranks 1 2]
        [--rcut 7.0] [--repeat 16] [--block-seconds 0.5]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_activeset import make_frames  # noqa: E402
from common import best_of, cu_potential  # noqa: E402

SETUPS = ("global", "casi")
VARIANTS = ("ef_global", "gamma_global", "ef_casi", "gamma_casi")  # (E+F, E+F+γ) per set-up


# ----------------------------------------------------------------- inside LAMMPS (any rank count)

def setup_box(lmp, n_atoms, seed=1):
    """Rattled fcc Cu, cubic box of (n/4)^(1/3) cells a side."""
    reps = max(1, round((n_atoms / 4) ** (1 / 3)))
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary p p p
        lattice fcc 3.61
        region box block 0 {reps} 0 {reps} 0 {reps}
        create_box 1 box
        create_atoms 1 box
        mass 1 63.546
        displace_atoms all random 0.08 0.08 0.08 {seed} units box
        thermo 1000000
        thermo_style custom step pe
    """)
    return int(lmp.get_natoms())


def use_setup(lmp, setup, pot, asi, casi):
    """A fresh pair-style instance with the global or the clustered active set; γ not asked for."""
    if lmp.has_id("fix", "g"):
        lmp.command("unfix g")
    lmp.command("pair_style aceuq")
    lmp.command(f"pair_coeff * * {pot} {asi if setup == 'global' else casi} Cu")
    lmp.command("run 0")


def ask_gamma(lmp, on):
    """Ask for γ every step (LAMMPS's fix pair protocol), or stop asking. `run 0` sets the run up
    again: the timed `run N pre no` relies on an unchanged set of fixes."""
    if on and not lmp.has_id("fix", "g"):
        lmp.command("fix g all pair 1 aceuq gamma 1")
    elif not on and lmp.has_id("fix", "g"):
        lmp.command("unfix g")
    lmp.command("run 0")


def timed_run(lmp, comm, steps):
    """(wall, cpu) seconds of `run steps`: wall on rank 0 between barriers, cpu the largest
    process CPU time of any rank (less sensitive to other jobs on a shared machine)."""
    comm.Barrier()
    t, c = time.perf_counter(), time.process_time()
    lmp.command(f"run {steps} pre no post no")
    c = time.process_time() - c
    comm.Barrier()
    return time.perf_counter() - t, comm.allreduce(c, op=MAX_OP[0])


MAX_OP = [None]


def pair_timers(lmp, comm):
    """(seconds in pair_style aceuq's compute, of which grading), summed over the ranks."""
    return comm.allreduce(np.array([lmp.extract_pair("pair_seconds"), lmp.extract_pair("gamma_seconds")]))


def measure(cfg, comm):
    """Min over rounds of seconds per step for each variant, on one box; rank 0's result."""
    from mpi4py import MPI

    from aceuq.lammps import make_lammps

    MAX_OP[0] = MPI.MAX
    lmp = make_lammps(comm=comm)
    n = setup_box(lmp, cfg["atoms"])
    # steps per block from a first E+F estimate, so a block lasts about block_seconds
    use_setup(lmp, "global", cfg["pot"], cfg["asi"], cfg["casi"])
    est = min(timed_run(lmp, comm, 2)[1] for _ in range(2)) / 2
    steps = comm.bcast(max(2, int(round(cfg["block_seconds"] / max(est, 1e-6)))), root=0)
    best = {v: np.inf for v in VARIANTS}
    best_cpu = {v: np.inf for v in VARIANTS}
    paired = {setup: [] for setup in SETUPS}  # per round: E+F+γ / E+F, timed back to back
    inside = {setup: [] for setup in SETUPS}  # per round: pair time / (pair time - γ time), same steps
    gmax = {}
    for r in range(cfg["repeat"]):
        for setup in SETUPS if r % 2 == 0 else SETUPS[::-1]:
            use_setup(lmp, setup, cfg["pot"], cfg["asi"], cfg["casi"])
            this_round = {}
            for on in (False, True) if r % 2 == 0 else (True, False):
                v = ("gamma_" if on else "ef_") + setup
                ask_gamma(lmp, on)
                before = pair_timers(lmp, comm)
                wall, cpu = timed_run(lmp, comm, steps)
                if on:
                    pair, gamma = np.subtract(pair_timers(lmp, comm), before)
                    inside[setup].append(pair / (pair - gamma))
                this_round[on] = wall
                best[v] = min(best[v], wall / steps)
                best_cpu[v] = min(best_cpu[v], cpu / steps)
                if on and v not in gmax:  # γ really was computed on the timed steps
                    lmp.command("compute gmax all reduce max f_g")
                    gmax[v] = lmp.extract_compute("gmax", 0, 0)
                    lmp.command("uncompute gmax")
            paired[setup].append(this_round[True] / this_round[False])
    triples = {setup: step_triples(lmp, comm, setup, cfg, max(30, 3 * cfg["repeat"] * steps)) for setup in SETUPS}
    lmp.close()
    return {"atoms": n, "steps": steps, "sec_per_step": best, "cpu_per_step": best_cpu, "gamma_max": gmax,
            "paired": paired, "inside": inside, "per_step": {k: v[0] for k, v in triples.items()},
            "per_step_parts": {k: v[1] for k, v in triples.items()}, "ranks": comm.Get_size()}


def step_triples(lmp, comm, setup, cfg, nsteps):
    """Per triple of steps (γ on the first of every three: `fix pair 3`), (G + E1 - E2) / E2,
    from the wall time of single steps on rank 0: G is a step with γ, E1 the E+F step after it
    (which pays for what grading evicted from the caches), E2 a clean E+F step. With γ every step,
    every step would cost G + (E1 - E2). Steps a few tens of ms apart share the machine's speed, so
    its changes cancel in each triple."""
    use_setup(lmp, setup, cfg["pot"], cfg["asi"], cfg["casi"])
    stamps = []  # per step: wall clock, and the pair style's timers (this rank)

    def clock(*args):
        stamps.append((time.perf_counter(), lmp.extract_pair("pair_seconds"), lmp.extract_pair("gamma_seconds")))

    lmp.command("fix clock all external pf/callback 1 1")
    lmp.set_fix_external_callback("clock", clock, None)
    lmp.command("fix g all pair 3 aceuq gamma 1")
    lmp.command("run 0")
    first = lmp.extract_global("ntimestep")
    stamps.clear()
    comm.Barrier()
    lmp.command(f"run {nsteps} pre no post no")
    lmp.command("unfix g")
    lmp.command("unfix clock")
    # row i: step first + i + 2, from the end of the previous step's forces to the end of its own
    dt, pair, grading = np.diff(np.array(stamps), axis=0).T
    steps = first + 2 + np.arange(len(dt))
    g = np.nonzero((steps % 3 == 0) & (np.arange(len(dt)) + 2 < len(dt)))[0]
    G, E1, E2 = dt[g], dt[g + 1], dt[g + 2]
    # where (G + E1 - E2) / E2 - 1 comes from, split by the pair style's timers
    parts = {"grading": grading[g] / E2,
             "E+F part": (pair[g] - grading[g] - pair[g + 2]) / E2,  # projections written, caches
             "rest of step": ((G - pair[g]) - (E2 - pair[g + 2])) / E2,
             "next step": (E1 - E2) / E2}
    return ((G + E1 - E2) / E2).tolist(), {k: v.tolist() for k, v in parts.items()}


def driver(cfg_path, out_path):
    from mpi4py import MPI

    with open(cfg_path) as fh:
        cfg = json.load(fh)
    res = measure(cfg, MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(out_path, "w") as fh:
            json.dump(res, fh)


# ----------------------------------------------------------------- orchestration

def build_active_sets(pot_path, folder, n_atoms, k=8):
    """(asi, casi, note): global and k-cluster active sets of the potential."""
    import aceuq
    from aceuq.activeset import build_active_set

    pot = aceuq.Potential(pot_path)
    frames = make_frames(n_atoms)
    proj = pot.projections(frames)
    base = os.path.splitext(pot_path)[0]
    glob = build_active_set(pot, frames, clusters=1, projections=proj)
    asi = glob.save(base + ".asi")
    built = build_active_set(pot, frames, clusters=k, projections=proj)
    s = built.elements["Cu"]
    if s.k == k:
        note = f"built by build_active_set(clusters={k}) on {s.n_atoms} atoms, sizes {s.cluster_sizes}"
    else:
        # hand-made k=8 .casi (documented layout): the library's clustering transform and k-means
        # centres, the global inverse in every cluster -- grading costs the same whatever the
        # inverse holds
        from aceuq.activeset import MAX_PCA_DIM, cluster_transform, feature_columns, kmeans

        values = proj["Cu"].values
        cols = feature_columns(pot, "Cu")
        mean, scale, comps = cluster_transform(values, min(MAX_PCA_DIM, len(cols)), cols)
        centers, _ = kmeans(((values - mean) / scale) @ comps.T, k)
        s.mean, s.scale, s.components, s.centers = mean, scale, comps, centers
        s.inverses = [glob.elements["Cu"].inverses[0]] * k
        note = (f"build_active_set(clusters={k}) kept k={len(built.elements['Cu'].cluster_sizes)} on {s.n_atoms} "
                f"atoms; .casi with k={k} written by hand (global inverse in every cluster)")
    casi = built.save(base + f".k{k}.casi")
    return asi, casi, note


def lammps_box(n_atoms):
    """setup_box's box as ASE Atoms (the same positions, from LAMMPS)."""
    from mpi4py import MPI

    from ase import Atoms

    from aceuq.lammps import make_lammps

    lmp = make_lammps(comm=MPI.COMM_SELF)
    setup_box(lmp, n_atoms)
    n = lmp.get_natoms()
    x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3), shape=(n * 3,)).reshape(n, 3).copy()
    boxlo, boxhi = lmp.extract_box()[:2]
    lmp.close()
    return Atoms("Cu" * n, positions=x - np.array(boxlo), cell=np.diag(np.subtract(boxhi, boxlo)), pbc=True)


def grader_alone(pot_path, asi, casi, n_atoms, repeat):
    """µs per atom of the Grader by itself (min over `repeat` calls, warm caches) on the
    projections of setup_box's box (the same atoms, so the same spread over the clusters), for
    the global and the clustered active set: the cost of γ without LAMMPS around it."""
    import aceuq
    from aceuq.activeset import ActiveSet

    atoms = lammps_box(n_atoms)
    pot = aceuq.Potential(pot_path)
    b = np.ascontiguousarray(pot.projections([atoms])["Cu"].values)
    return {setup: 1e6 * best_of(lambda a=ActiveSet.load(path, pot): a.grade("Cu", b), repeat) / len(b)
            for setup, path in (("global", asi), ("casi", casi))}


def run_config(cfg, ranks, folder, mpiexec):
    if ranks == 1:
        from mpi4py import MPI

        return measure(cfg, MPI.COMM_SELF)
    tag = f"{os.path.basename(cfg['pot'])}_{cfg['atoms']}_{ranks}"
    cfg_path, out_path = os.path.join(folder, f"cfg_{tag}.json"), os.path.join(folder, f"out_{tag}.json")
    with open(cfg_path, "w") as fh:
        json.dump(cfg, fh)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [HERE, env.get("PYTHONPATH", "")] if p)
    cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--driver", cfg_path, out_path]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with open(out_path) as fh:
        return json.load(fh)


def median_interval(samples, stat=np.median, n_boot=2000, level=0.9, seed=0):
    """stat(*samples) and its bootstrap interval: the percentiles of stat over n_boot resamplings,
    each array of `samples` resampled (with replacement) on its own."""
    rng = np.random.default_rng(seed)
    boot = [stat(*(x[rng.integers(0, len(x), len(x))] for x in samples)) for _ in range(n_boot)]
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return stat(*samples), lo, hi


def ratio_table(title, rows, key, paired):
    """glob/EF, casi/EF and casi/glob from res[key] (per set-up, a list of ratios: their median),
    each with its 90 % bootstrap interval: how far the machine's noise leaves the median uncertain.
    paired: the two set-ups' lists are of the same rounds, so casi/glob is the median of their
    per-round quotients; otherwise it is the quotient of their medians."""
    print(f"\n{title}")
    print(f"{'funcs':>6}{'atoms':>7}{'ranks':>6}{'glob/EF':>22}{'casi/EF':>22}{'casi/glob':>22}")
    fmt = lambda m, lo, hi: f"{m:.3f} [{lo:.3f}, {hi:.3f}]".rjust(22)  # noqa: E731
    for nf, res in rows:
        g, c = np.asarray(res[key]["global"]), np.asarray(res[key]["casi"])
        if paired:
            both = median_interval([c / g])
        else:
            both = median_interval([c, g], stat=lambda a, b: np.median(a) / np.median(b))
        print(f"{nf:>6}{res['atoms']:>7}{res['ranks']:>6}{fmt(*median_interval([g]))}{fmt(*median_interval([c]))}"
              f"{fmt(*both)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, nargs="+", default=[80, 300])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 4000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rcut", type=float, default=7.0, help="cutoff of the generated potentials (pacemaker's default 7 Å)")
    ap.add_argument("--repeat", type=int, default=16, help="rounds over the set-ups; min over rounds")
    ap.add_argument("--block-seconds", type=float, default=0.5, help="about how long one timed run lasts")
    ap.add_argument("--training-atoms", type=int, default=30000, help="atoms the active sets are built on")
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--driver", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        return driver(*args.driver)

    folder = tempfile.mkdtemp(prefix="aceuq-bench-lmp-")
    from aceuq.lammps import mpiexec_path

    mpiexec = mpiexec_path()
    if any(r > 1 for r in args.ranks) and not mpiexec:
        sys.exit("mpiexec not found (pip install mpich)")
    import aceuq

    rows, alone = [], {}
    for nf in args.functions:
        pot = cu_potential(folder, n_functions=nf, rcut=args.rcut)
        p = aceuq.Potential(pot)
        t = time.perf_counter()
        asi, casi, note = build_active_sets(pot, folder, args.training_atoms, args.clusters)
        print(f"potential Cu {p.n_functions('Cu')} functions, {p.ndensity('Cu')} densities, cutoff {p.cutoff} Å; "
              f"active sets in {time.perf_counter() - t:.0f} s: {note}", flush=True)
        for n in args.sizes:
            alone[(p.n_functions("Cu"), n)] = grader_alone(pot, asi, casi, n, 4 * args.repeat)
            for ranks in args.ranks:
                cfg = {"pot": pot, "asi": asi, "casi": casi, "atoms": n, "repeat": args.repeat,
                       "block_seconds": args.block_seconds}
                res = run_config(cfg, ranks, folder, mpiexec)
                rows.append((p.n_functions("Cu"), res))
                sps = res["sec_per_step"]
                print(f"  {nf} functions, {res['atoms']} atoms, {ranks} rank(s): {res['steps']} steps/block, "
                      + ", ".join(f"{v} {1e3 * sps[v]:.2f} ms/step" for v in VARIANTS)
                      + f"; max γ {', '.join(f'{v} {g:.3g}' for v, g in res['gamma_max'].items())}", flush=True)

    header = (f"{'funcs':>6}{'atoms':>7}{'ranks':>6}{'E+F':>9}{'+γ glob':>9}{'+γ casi':>9}"
              f"{'glob/EF':>9}{'casi/EF':>9}{'casi/glob':>10}")
    for key, title in (("sec_per_step", "wall time"), ("cpu_per_step", "CPU time of the busiest rank")):
        print(f"\nµs per atom per step, {title}; ratios of the minima over {args.repeat} rounds")
        print(header)
        for nf, res in rows:
            s = res[key]
            us = {v: 1e6 * s[v] / res["atoms"] for v in VARIANTS}
            glob, casi = s["gamma_global"] / s["ef_global"], s["gamma_casi"] / s["ef_casi"]
            print(f"{nf:>6}{res['atoms']:>7}{res['ranks']:>6}{us['ef_global']:>9.2f}{us['gamma_global']:>9.2f}"
                  f"{us['gamma_casi']:>9.2f}{glob:>9.3f}{casi:>9.3f}{casi / glob:>10.3f}")
    # each round's E+F+γ over the E+F timed just before or after it cancels drifts of the machine's
    # speed that are slower than a block; the median over rounds ignores single disturbed blocks
    ratio_table(f"ratios, median over {args.repeat} rounds of back-to-back pairs (wall time) [90 % bootstrap "
                "interval]", rows, "paired", paired=True)
    ratio_table("ratios from single steps: E+F+γ every step over E+F as (G + E1 - E2) / E2, median over triples "
                "(G: step with γ, E1: the step after it, E2: the next; fix pair 3)", rows, "per_step", paired=False)
    print("\nwhere the single-step figure comes from: per step with γ, in % of a clean E+F step (median over "
          "triples; the parts' medians need not add up to the figure's)")
    names = list(rows[0][1]["per_step_parts"]["global"]) if rows else []
    print(f"{'funcs':>6}{'atoms':>7}{'ranks':>6}{'set-up':>8}" + "".join(f"{k:>14}" for k in names))
    for nf, res in rows:
        for setup in SETUPS:
            parts = res["per_step_parts"][setup]
            print(f"{nf:>6}{res['atoms']:>7}{res['ranks']:>6}{setup:>8}"
                  + "".join(f"{100 * np.median(parts[k]):>14.2f}" for k in names))
    # the pair style's own timers split each E+F+γ step into E+F and γ: both parts are timed on the
    # same steps, so the machine's speed changes cancel; what γ does to the rest of the step (caches)
    # is not in this figure, but is in the ones above
    ratio_table("ratios inside the pair style (extract_pair 'pair_seconds', 'gamma_seconds'): pair time over "
                f"pair time less grading on the same steps, median over {args.repeat} rounds", rows, "inside",
                paired=True)
    # what γ costs without LAMMPS around it: the Grader alone on the same kind of box, over the
    # E+F time per atom and rank; the ratios above cannot go below these
    print("\nthe Grader alone (warm caches, min over calls), µs per atom, and the ratios it implies "
          "(1 + Grader / (E+F x ranks), E+F as above)")
    print(f"{'funcs':>6}{'atoms':>7}{'ranks':>6}{'γ glob':>9}{'γ casi':>9}{'glob/EF':>9}{'casi/EF':>9}")
    for nf, res in rows:
        a, ef = alone[(nf, res["atoms"])], 1e6 * res["sec_per_step"]["ef_global"] / res["atoms"] * res["ranks"]
        print(f"{nf:>6}{res['atoms']:>7}{res['ranks']:>6}{a['global']:>9.2f}{a['casi']:>9.2f}"
              f"{1 + a['global'] / ef:>9.3f}{1 + a['casi'] / ef:>9.3f}")
    print("targets: glob/EF <= 1.05, casi/glob <= 1.03")


if __name__ == "__main__":
    main()
