"""Selecting structures: `aceuq select` against pyace's `pace_select`, side by side.

What is measured: wall time and peak resident memory ("Maximum resident set size" of
`/usr/bin/time -v`) of each command, run as a subprocess on the same potential, the same global
active set and the same candidate pool; interpreter start-up, imports, reading the candidates,
computing their projections and the selection itself are all included:

    pace_select -p POT -a G.asi -m N CAND.pkl.gz -o OUT.pkl.gz     (pyace: one MaxVol over the
        active set plus all candidate atoms, then the N structures owning most of the rows swapped in)
    aceuq select POT CAND.pkl.gz --active-set G.asi -n N -o OUT.extxyz --no-progress
        (greedy D-optimality: one structure at a time, the active set updated after every pick)
    aceuq select ... --one-shot   (pace_select's rule: one MaxVol, the N structures owning most rows)

Both read the same pacemaker DataFrame (.pkl.gz, columns ase_atoms / energy_corrected / forces;
pace_select accepts only names ending .pkl.gz or .pckl.gzip). For every pool size (--atoms) and
every N (--n), the two commands run `--repeat` times, their order reversed from one run to the
next, so machine noise hits both sides alike; each time is the minimum over repeats, each memory
figure the maximum. Ratios are aceuq / pace_select. Also printed: how many structures each tool
selected, how many of them both selected (the two algorithms differ, so a partial overlap is
expected), and how many of each tool's picks are among the deliberately novel candidates.

Set-up, not timed: a Cu potential with random coefficients (common.cu_potential, --functions);
a global active set built by aceuq.activeset.build_active_set on a training pool (make_frames of
bench_activeset, --train-atoms, seed 0); candidate pools from make_frames with seed 1 (108- and
256-atom rattled, strained, hot and vacancy-containing fcc cells), in which every third structure
is rattled by an extra 0.15 Å of normal noise, so that selection has something to find.

Peak memory comes from /usr/bin/time (bench_activeset.run_measured says why). pace_select is run
as the script next to this Python (not through a pyenv shim), like `python -m aceuq`.

Note: the tools' default MaxVol tolerances differ (aceuq 1e-3, pace_select -g 1.01); --tol sets
both alike. The subprocesses import the aceuq on PYTHONPATH (set it to python/ for a staged
build), as in bench_activeset.

    python benchmarks/bench_select.py [--functions 300] [--atoms 30000 100000] [--n 5 20]
        [--train-atoms 20000] [--repeat 1] [--threads 1] [--tol T] [--keep FOLDER]
"""
import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_activeset import aceuq_cmd, make_frames, run_measured  # noqa: E402
from common import add_tool_options, cu_potential, subprocess_setup  # noqa: E402

VARIANTS = {"aceuq select": "", "aceuq select --one-shot": "--one-shot"}  # name: extra flag
NOVEL_EVERY = 3      # every third candidate is made novel ...
NOVEL_RATTLE = 0.15  # ... by this much extra normal noise on its positions (Å)


def make_candidates(path, n_atoms, seed=1):
    """A pacemaker .pkl.gz of make_frames(n_atoms, seed), every NOVEL_EVERY-th structure rattled by
    another NOVEL_RATTLE Å, with made-up energies and forces (neither tool uses them); returns
    (atoms, structures, indices of the novel structures)."""
    import pandas as pd

    frames = make_frames(n_atoms, seed)
    rng = np.random.default_rng(seed + 100)
    novel = np.arange(0, len(frames), NOVEL_EVERY)
    for i in novel:
        frames[i].positions += rng.normal(0, NOVEL_RATTLE, frames[i].positions.shape)
        frames[i].wrap()
    df = pd.DataFrame({
        "ase_atoms": frames,
        "energy_corrected": [float(-3.5 * len(a) + rng.normal(0, 0.1)) for a in frames],
        "forces": [rng.normal(0, 0.1, (len(a), 3)) for a in frames],
    })
    df.to_pickle(path, compression="gzip")
    return sum(len(a) for a in frames), len(frames), set(int(i) for i in novel)


def pace_select_cmd():
    """pace_select's entry-point script run by this Python (skipping any pyenv shim in PATH)."""
    here = os.path.join(os.path.dirname(sys.executable), "pace_select")
    if os.path.isfile(here):
        return [sys.executable, here]
    found = shutil.which("pace_select")
    if found is None:
        raise SystemExit("pace_select (python-ace) not found")
    return [found]


def aceuq_picks(path):
    """Candidate indices in aceuq select's output, in the order chosen."""
    from ase.io import read

    return [int(a.info["candidate_index"]) for a in read(path, index=":")]


def pace_picks(path):
    """Candidate indices in pace_select's output (the DataFrame keeps the candidates' index)."""
    import pandas as pd

    return [int(i) for i in pd.read_pickle(path, compression="gzip").index]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=300, help="basis functions of the Cu potential")
    ap.add_argument("--rcut", type=float, default=5.0)
    ap.add_argument("--atoms", type=int, nargs="+", default=[30000, 100000], help="atoms in the candidate pools")
    ap.add_argument("--n", type=int, nargs="+", default=[5, 20], help="structures to select")
    ap.add_argument("--train-atoms", type=int, default=20000, help="atoms of the active set's training pool")
    add_tool_options(ap, "pace_select", repeat=1)
    args = ap.parse_args()

    folder, env = subprocess_setup(args.keep, "aceuq-bench-sel-", args.threads)

    pot = cu_potential(folder, n_functions=args.functions, rcut=args.rcut)
    import aceuq
    from aceuq.activeset import build_active_set

    p = aceuq.Potential(pot)
    print(f"aceuq from {os.path.dirname(aceuq.__file__)}")
    print(f"potential: Cu, {p.n_functions('Cu')} functions, {p.ndensity('Cu')} densities, cutoff {p.cutoff} Å; "
          f"{args.threads} thread(s) per process; MaxVol tolerance: "
          + ("each tool's default (aceuq 1e-3, pace_select 1.01)" if args.tol is None else f"{args.tol} for both"))
    train = make_frames(args.train_atoms, seed=0)
    asi = os.path.join(folder, "train.asi")
    build_active_set(p, train).save(asi)
    print(f"active set: global, from {len(train)} structures, {sum(len(a) for a in train)} atoms (seed 0)")
    pools = {}
    for n in args.atoms:
        path = os.path.join(folder, f"cand_{n}.pkl.gz")
        total, nframes, novel = make_candidates(path, n)
        pools[n] = (path, total, nframes, novel)
        print(f"candidates {n}: {nframes} structures, {total} atoms, {len(novel)} of them rattled by another "
              f"{NOVEL_RATTLE} Å ({os.path.getsize(path) / 1e6:.1f} MB)")

    ref_tol = [] if args.tol is None else ["-g", repr(1.0 + args.tol)]
    our_tol = [] if args.tol is None else ["--tol", repr(args.tol)]
    rows = []
    flip = 0
    for n_atoms in args.atoms:
        cand, total, nframes, novel = pools[n_atoms]
        for n in args.n:
            ref_out = os.path.join(folder, f"pace_{n_atoms}_{n}.pkl.gz")
            outs = {v: os.path.join(folder, f"aceuq{flag.replace('-', '_')}_{n_atoms}_{n}.extxyz")
                    for v, flag in VARIANTS.items()}
            cases = {"pace_select": pace_select_cmd() + ["-p", pot, "-a", asi, "-m", str(n), cand, "-o", ref_out]
                     + ref_tol}
            for v, flag in VARIANTS.items():
                cases[v] = aceuq_cmd() + ["select", pot, cand, "--active-set", asi, "-n", str(n), "-o", outs[v],
                                          "--no-progress"] + ([flag] if flag else []) + our_tol
            best = {name: (np.inf, 0.0) for name in cases}
            for r in range(args.repeat):
                order = list(cases) if flip % 2 == 0 else list(cases)[::-1]
                flip += 1
                for name in order:
                    log = os.path.join(folder, f"log_{name.replace(' ', '_')}_{n_atoms}_{n}_{r}.txt")
                    wall, rss = run_measured(cases[name], env, folder, log)
                    t0, m0 = best[name]
                    best[name] = (min(t0, wall), max(m0, rss))
                    print(f"  [{n_atoms} atoms, N={n}, {r}] {name}: {wall:.1f} s, {rss:.0f} MB", flush=True)
            ref = pace_picks(ref_out)
            print(f"  picks pace_select {ref}", flush=True)
            for v in VARIANTS:
                ours = aceuq_picks(outs[v])
                rows.append((total, nframes, n, v, best[v], best["pace_select"], ours, ref,
                             len(set(ours) & set(ref)), len(set(ours) & novel), len(set(ref) & novel)))
                print(f"  picks {v} {ours}", flush=True)

    print(f"\nselection, min wall time over {args.repeat} run(s), peak RSS (max over runs); times include "
          f"start-up, reading the candidates and their projections; ratios aceuq / pace_select")
    print(f"{'atoms':>7}{'structs':>8}{'N':>4}  {'aceuq':<24}{'aceuq s':>8}{'pace s':>8}{'time ratio':>11}"
          f"{'aceuq MB':>9}{'pace MB':>8}{'mem ratio':>10}{'picked a/p':>11}{'common':>7}{'novel a/p':>10}")
    for total, nframes, n, v, (ta, ma), (tp, mp), ours, ref, common, nov_a, nov_p in rows:
        print(f"{total:>7}{nframes:>8}{n:>4}  {v:<24}{ta:>8.1f}{tp:>8.1f}{ta / tp:>11.2f}{ma:>9.0f}{mp:>8.0f}"
              f"{ma / mp:>10.2f}{f'{len(ours)}/{len(ref)}':>11}{common:>7}{f'{nov_a}/{nov_p}':>10}")
    print("picked: structures each tool selected (fewer than N when no more add rows); common: selected by both; "
          f"novel: picks among the rattled candidates (one in {NOVEL_EVERY})")
    print(f"(files in {folder})")


if __name__ == "__main__":
    main()
