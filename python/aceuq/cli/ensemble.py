"""``aceuq ensemble DATA... -n N -o DIR``: fit an ensemble of linear ACE potentials."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from .._core import InputError
from ..data import parse_elements, read_structures
from . import number


def build_parser() -> argparse.ArgumentParser:
    from ..ensemble import BASIS_PRESETS

    p = argparse.ArgumentParser(
        prog="aceuq ensemble",
        description="Fit N linear ACE potentials (ridge on the B functions, pyace's linear fit) on resamples "
                    "of the training structures; write pacemaker .yaml members and ensemble.json. "
                    "Needs pyace: pip install 'aceuq[pacemaker]'.",
    )
    p.add_argument("data", nargs="+", help="labelled structures (energy, forces): extxyz or pacemaker .pkl.gzip")
    p.add_argument("-n", "--members", type=number(int, minimum=2), required=True,
                   help="number of members (>= 2)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--basis", default="small",
                   help=f"basis preset ({', '.join(BASIS_PRESETS)}) or a create_multispecies_basis_config YAML "
                        "(embeddings are made linear); default small")
    p.add_argument("--bootstrap", action="store_true",
                   help="bootstrap resampling of structures (default: random subsamples, see --subsample)")
    p.add_argument("--subsample", type=number(float, above=0, maximum=1), default=0.8,
                   help="fraction of structures per member without --bootstrap (default 0.8)")
    p.add_argument("-e", "--elements", nargs="+", metavar='"El1 El2 ..."',
                   help="elements of the potential (default: those in the data); it takes several words, so "
                        "give it after the data files or end it with another option")
    p.add_argument("--cutoff", type=number(float, above=0),
                   help="radial cutoff in Å of a preset basis (default: 2.2x the median nearest-neighbour distance "
                        "over all atoms, within 4-7 Å); a --basis CONFIG.yaml sets its own (its bonds' rcut, as in a pacemaker input) and takes "
                        "no --cutoff")
    p.add_argument("--alpha", type=number(float, minimum=0), default=1e-5,
                   help="ridge regularisation (default 1e-5)")
    p.add_argument("--energy-weight", type=number(float, above=0), default=1.0,
                   help="weight of the per-atom energy rows relative to force rows (default 1, pyace's linear "
                        "fit; a structure has one energy row and 3N force rows, so 10-30 gives better energies "
                        "for slightly worse forces: compare the RMSEs printed)")
    p.add_argument("--holdout", type=number(float, minimum=0, below=1), default=0.1,
                   help="fraction of structures held out to calibrate σ (default 0.1; 0 = no calibration)")
    p.add_argument("--calibration-data", nargs="+", help="separate labelled structures to calibrate σ (no holdout); "
                                                          "give it after the data files")
    p.add_argument("--seed", type=number(int, minimum=0), default=0,
                   help="random seed (resampling, holdout)")
    p.add_argument("--workers", type=number(int, minimum=1), default=2,
                   help="processes for the design matrix")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..ensemble import BASIS_PRESETS, fit_ensemble

    if args.cutoff is not None and args.basis not in BASIS_PRESETS:
        # a pacemaker basis config sets rcut per bond (element pair): one number cannot override it unambiguously
        parser.error(f"--cutoff applies to the basis presets ({', '.join(BASIS_PRESETS)}) only; "
                     f"'{args.basis}' sets its cutoff by its bonds' rcut: edit it there")
    try:
        frames = read_structures(args.data, progress=not args.no_progress)
        calib, note = None, None
        if args.calibration_data:
            calib = read_structures(args.calibration_data, progress=not args.no_progress)
        elif args.holdout > 0:
            n_hold = int(round(args.holdout * len(frames)))
            if n_hold >= len(frames) >= 10:
                raise InputError(f"--holdout {args.holdout:g} of {len(frames)} structures holds out all of them: "
                                 f"none is left to fit (a smaller --holdout, or --calibration-data)")
            if len(frames) < 10 or n_hold < 1:
                note = f"only {len(frames)} structures: σ is not calibrated (use --calibration-data)"
            else:
                perm = np.random.default_rng(args.seed + 7919).permutation(len(frames))
                calib = [frames[i] for i in sorted(perm[:n_hold])]
                frames = [frames[i] for i in sorted(perm[n_hold:])]
        elements = parse_elements(args.elements)  # "Si Ge" quoted, as the other verbs take -e, or Si Ge
        ens = fit_ensemble(frames, args.members, args.output, basis=args.basis, bootstrap=args.bootstrap,
                           elements=elements, cutoff=args.cutoff, seed=args.seed, alpha=args.alpha,
                           energy_weight=args.energy_weight, subsample=args.subsample, calibration_frames=calib,
                           sources=args.data, progress=not args.no_progress, workers=args.workers)
    except InputError as exc:
        print(f"aceuq ensemble: error: {exc}", file=sys.stderr)
        return 1
    if note:
        print(f"aceuq ensemble: {note}", file=sys.stderr)
    fit = ens.manifest["fit"]
    msg = (f"aceuq ensemble: {len(ens)} members, {fit['n_functions']} functions, cutoff {fit['cutoff']} Å, "
           f"{fit['n_structures']} training structures -> {args.output}")
    rmse = fit.get("train_rmse") or {}
    if rmse:
        msg += (f"\n  RMSE of the members' mean, training: energy {1e3 * rmse['energy_per_atom']:.3g} meV/atom"
                + (f", forces {1e3 * rmse['forces']:.3g} meV/Å" if rmse.get("forces") is not None else ""))
    cal = ens.calibration
    if cal.get("fitted"):
        msg += (f"\n  held out ({cal['n_structures']} structures): energy "
                f"{1e3 * cal['rmse_energy_per_atom']:.3g} meV/atom, forces {1e3 * cal['rmse_forces']:.3g} meV/Å; "
                f"σ calibration: energy x{cal['energy']:.3g}, forces x{cal['forces']:.3g}")
    print(msg)
    if cal.get("fitted") and cal["n_structures"] < 10:
        print(f"aceuq ensemble: σ is calibrated on {cal['n_structures']} structures only: its factors are uncertain "
              f"(more held-out structures: --holdout, or --calibration-data)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
