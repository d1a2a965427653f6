"""Building active sets: `aceuq activeset` against pyace's `pace_activeset -a`, side by side.

What is measured: wall time and peak resident memory (GNU time's maximum resident set size, see
run_measured; interpreter start-up, imports, reading the dataset, projections, clustering and
MaxVol are all included) of each command, run as a subprocess on the same potential and the same
pacemaker dataset (.pkl.gzip, columns ase_atoms / energy_corrected / forces):

    pace_activeset POT -d DATA.pkl.gzip -a      (pyace; global, linear projections; writes POT.asi)
    aceuq activeset POT DATA.pkl.gzip -o X.asi                  (global)
    aceuq activeset POT DATA.pkl.gzip -o X.casi --clusters K    (clustered: K = auto and 4 by default)

The commands alternate (reference, ours, reference, ...) `--repeat` times and each figure is the
minimum over repeats, so machine noise hits both sides alike. Then `aceuq activeset` (global) on
subsets of the dataset (--scaling-atoms) shows how its time and memory grow with the number of
atoms. Dataset generation is not timed.

Targets: global <= 0.3x pace_activeset time at no more memory; clustered <= 0.5x.

    python benchmarks/bench_activeset.py [--functions 150] [--atoms 100000] [--repeat 2]
        [--clusters auto 4] [--scaling-atoms 10000 30000 100000] [--threads 1] [--tol 0.01]

Note: the tools' default MaxVol tolerances differ (aceuq 1e-3, pace_activeset -g 1.01); --tol sets
both alike.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import add_tool_options, cu_potential, subprocess_setup  # noqa: E402


def make_frames(n_atoms, seed=0):
    """Heterogeneous Cu, at least n_atoms in all: rattled, strained, hot and vacancy-containing
    fcc cells (108 and 256 atoms)."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames, total = [], 0
    while total < n_atoms:
        reps = 3 if rng.random() < 0.6 else 4
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps, reps, reps))
        kind = rng.integers(4)
        if kind == 1:  # strained (volumetric and shear)
            strain = np.eye(3) + rng.normal(0, 0.03, (3, 3))
            a.set_cell(a.cell.array @ strain, scale_atoms=True)
        elif kind == 2:  # vacancies
            del a[rng.choice(len(a), size=rng.integers(1, 4), replace=False)]
        amplitude = [0.03, 0.08, 0.05, 0.2][kind]  # kind 3: hot
        a.positions += rng.normal(0, amplitude, a.positions.shape)
        a.wrap()
        frames.append(a)
        total += len(a)
    return frames


def make_dataset(path, n_atoms, seed=0):
    """A pacemaker .pkl.gzip of make_frames with made-up energies and forces (pace_activeset -a
    does not use them); returns (path, atoms, structures)."""
    import pandas as pd

    frames = make_frames(n_atoms, seed)
    rng = np.random.default_rng(seed + 1)
    df = pd.DataFrame({
        "ase_atoms": frames,
        "energy_corrected": [float(-3.5 * len(a) + rng.normal(0, 0.1)) for a in frames],
        "forces": [rng.normal(0, 0.1, (len(a), 3)) for a in frames],
    })
    df.to_pickle(path, compression="gzip")
    return path, sum(len(a) for a in frames), len(frames)


def run_measured(cmd, env, cwd, log):
    """Wall time (s) and peak RSS (MB) of a subprocess; raises with its output on failure.

    The peak RSS is GNU time's ("Maximum resident set size" of /usr/bin/time -v), not os.wait4's
    ru_maxrss of a child forked from this script: Linux carries the peak of the forked copy of
    this script (its frames, hundreds of MB) over the exec into the child's ru_maxrss, which then
    never reads less than this script's size."""
    if not os.access("/usr/bin/time", os.X_OK):
        raise SystemExit("needs /usr/bin/time (GNU time, for the peak memory of each run)")
    rusage = log + ".time"
    with open(log, "w") as out:
        t = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-v", "-o", rusage] + cmd, stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=cwd)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        with open(log) as fh:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{fh.read()[-3000:]}")
    with open(rusage) as fh:
        kb = [line.split(":")[1] for line in fh if "Maximum resident set size" in line]
    return wall, int(kb[0]) / 1024.0


def aceuq_cmd():
    """`aceuq` as the aceuq on PYTHONPATH (a staged build), not necessarily the installed script."""
    return [sys.executable, "-c", "import sys; from aceuq.cli.main import main; sys.exit(main())"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=150, help="basis functions of the Cu potential")
    ap.add_argument("--rcut", type=float, default=5.0)
    ap.add_argument("--atoms", type=int, default=100000, help="atoms in the dataset")
    ap.add_argument("--clusters", nargs="*", default=["auto", "4"], help="clustered runs (K or auto)")
    ap.add_argument("--scaling-atoms", type=int, nargs="*", default=[10000, 30000, 100000])
    add_tool_options(ap, "pace_activeset", repeat=2)
    args = ap.parse_args()

    folder, env = subprocess_setup(args.keep, "aceuq-bench-as-", args.threads)

    pot = cu_potential(folder, n_functions=args.functions, rcut=args.rcut)
    import aceuq

    p = aceuq.Potential(pot)
    print(f"potential: Cu, {p.n_functions('Cu')} functions, {p.ndensity('Cu')} densities, cutoff {p.cutoff} Å; "
          f"{args.threads} thread(s) per process; MaxVol tolerance: "
          + ("each tool's default (aceuq 1e-3, pace_activeset 1.01)" if args.tol is None else f"{args.tol} for both"))
    sizes = sorted(set(args.scaling_atoms) | {args.atoms})
    datasets = {}
    for n in sizes:
        path, total, nframes = make_dataset(os.path.join(folder, f"Cu_{n}.pkl.gzip"), n)
        datasets[n] = (path, total)
        print(f"dataset {n}: {nframes} structures, {total} atoms ({os.path.getsize(path) / 1e6:.1f} MB)")

    data, n_atoms = datasets[args.atoms]
    ours = aceuq_cmd()
    # pace_activeset writes next to the potential (basename.asi); give it its own copy per run folder
    ref_dir = os.path.join(folder, "ref")
    os.makedirs(ref_dir, exist_ok=True)
    ref_pot = os.path.join(ref_dir, os.path.basename(pot))
    shutil.copy(pot, ref_pot)
    ref_tol = [] if args.tol is None else ["-g", repr(1.0 + args.tol)]
    our_tol = [] if args.tol is None else ["--tol", repr(args.tol)]
    cases = [("pace_activeset -a (reference)", ["pace_activeset", ref_pot, "-d", data, "-a"] + ref_tol, ref_dir)]
    cases.append(("aceuq activeset (global)",
                  ours + ["activeset", pot, data, "-o", os.path.join(folder, "g.asi"), "--no-progress"] + our_tol,
                  folder))
    for k in args.clusters:
        cases.append((f"aceuq activeset --clusters {k}",
                      ours + ["activeset", pot, data, "-o", os.path.join(folder, f"c{k}.casi"), "--clusters", k,
                              "--no-progress"] + our_tol, folder))
    best = {name: (np.inf, 0.0) for name, _, _ in cases}
    for r in range(args.repeat):
        for c, (name, cmd, cwd) in enumerate(cases):  # one log per case and round
            wall, rss = run_measured(cmd, env, cwd, os.path.join(folder, f"log_{c}_{r}.txt"))
            t0, m0 = best[name]
            best[name] = (min(t0, wall), max(m0, rss))
            print(f"  [{r}] {name}: {wall:.1f} s, {rss:.0f} MB", flush=True)
    # what the clustered runs chose
    for k in args.clusters:
        c = [name for name, _, _ in cases].index(f"aceuq activeset --clusters {k}")
        with open(os.path.join(folder, f"log_{c}_0.txt")) as fh:
            notes = [ln.strip() for ln in fh if "effective k" in ln or "auto k" in ln]
        for ln in notes[:2]:
            print(f"  clusters {k}: {ln[:160]}")

    ref_t, ref_m = best[cases[0][0]]
    print(f"\nactive set of {n_atoms} atoms, min wall time over {args.repeat} runs, peak RSS (max over runs)")
    print(f"{'command':<36}{'wall s':>9}{'peak MB':>9}{'time ratio':>12}{'mem ratio':>11}{'target':>9}")
    for name, _, _ in cases:
        t, m = best[name]
        target = "" if name == cases[0][0] else ("<=0.30" if "global" in name else "<=0.50")
        print(f"{name:<36}{t:>9.1f}{m:>9.0f}{t / ref_t:>12.2f}{m / ref_m:>11.2f}{target:>9}")

    print(f"\nscaling of `aceuq activeset` (global) with atoms, min of {args.repeat}")
    print(f"{'atoms':>8}{'wall s':>9}{'peak MB':>9}{'µs/atom':>10}")
    for n in sizes:
        path, total = datasets[n]
        if n == args.atoms:
            t, m = best[cases[1][0]]
        else:
            t, m = np.inf, 0.0
            for r in range(args.repeat):
                w, rss = run_measured(ours + ["activeset", pot, path, "-o", os.path.join(folder, f"s{n}.asi"),
                                              "--no-progress"] + our_tol, env, folder,
                                      os.path.join(folder, f"log_s{n}.txt"))
                t, m = min(t, w), max(m, rss)
        print(f"{total:>8}{t:>9.1f}{m:>9.0f}{1e6 * t / total:>10.1f}")
    print(f"(files in {folder})")


if __name__ == "__main__":
    main()
