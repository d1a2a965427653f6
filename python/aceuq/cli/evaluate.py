"""``aceuq evaluate POTENTIAL STRUCTURES... -o OUT.extxyz``
``aceuq evaluate --ensemble DIR STRUCTURES... -o OUT.extxyz``"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress

from .._core import InputError
from . import add_elements_option, summary_stream
from ..data import check_structures_output, read_structures, set_results, structure_label, write_extxyz_atomic
from ..potential import Potential
from ..progress import progress as show_progress


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq evaluate",
        usage="aceuq evaluate [-h] (POTENTIAL | --ensemble DIR) STRUCTURES... -o OUTPUT [options]",
        description="Evaluate structures with a pacemaker ACE potential (or an ensemble of them); write "
                    "extended XYZ with energy, forces, stress (periodic cells) and per-atom energies. With "
                    "--ensemble: the members' mean, and their spread as energy_std (info), energies_std, "
                    "forces_std and force_uncertainty (per atom).",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE",
                   help="pacemaker potential .yaml (omit with --ensemble), then structure files: extxyz or any "
                        "ASE format, or pacemaker .pkl.gzip")
    p.add_argument("--ensemble", metavar="DIR", help="ensemble folder written by 'aceuq ensemble' (ensemble.json)")
    p.add_argument("--uncalibrated", action="store_true", help="with --ensemble: raw member spread, no calibration")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    add_elements_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    # options may stand between the files (-e before the dumps), as in gamma, select and activeset
    args = build_parser().parse_intermixed_args(argv)
    if args.uncalibrated and args.ensemble is None:
        print("aceuq evaluate: error: --uncalibrated applies to --ensemble only", file=sys.stderr)
        return 2
    if args.ensemble is not None and args.inputs[0].endswith((".yaml", ".yace")):
        print(f"aceuq evaluate: error: give a potential ('{args.inputs[0]}') or --ensemble, not both",
              file=sys.stderr)
        return 2
    if args.ensemble is None and len(args.inputs) < 2:
        print("aceuq evaluate: error: give a potential and at least one structure file", file=sys.stderr)
        return 2
    structure_files = args.inputs if args.ensemble else args.inputs[1:]
    out = []
    try:
        if args.ensemble:
            from ..ensemble import MANIFEST, Ensemble

            ens = Ensemble.load(args.ensemble)  # (reads small files only: its manifest and members)
            manifest = os.path.join(args.ensemble, MANIFEST) if os.path.isdir(args.ensemble) else args.ensemble
            check_structures_output(args.output, inputs=[*args.inputs, manifest, *ens.paths])
            frames = read_structures(structure_files, args.elements, progress=not args.no_progress)
            for atoms in show_progress(frames, not args.no_progress, "evaluate", unit="struct"):
                r = ens.evaluate(atoms, forces=True, calibrated=not args.uncalibrated)
                a = atoms.copy()
                props = {"energy": r.energy, "free_energy": r.energy, "forces": r.forces, "energies": r.energies}
                if r.stress is not None:
                    props["stress"] = r.stress
                _keep_reference(atoms, a)
                set_results(a, props)  # (labels the input held there are kept as ref_*)
                a.info["energy_std"] = r.energy_std
                if r.stress_std is not None:
                    a.info["stress_std"] = r.stress_std  # (ASE's Voigt order; not calibrated)
                a.arrays["energies_std"] = r.energies_std
                a.arrays["forces_std"] = r.forces_std
                a.arrays["force_uncertainty"] = r.force_uncertainty
                out.append(a)
        else:
            check_structures_output(args.output, inputs=args.inputs)
            pot = Potential(args.inputs[0])
            frames = read_structures(structure_files, args.elements, progress=not args.no_progress)
            for atoms, res in zip(frames, pot.evaluate(frames, forces=True, progress=not args.no_progress)):
                a = atoms.copy()
                props = {"energy": res.energy, "free_energy": res.energy, "forces": res.forces,
                         "energies": res.energies}
                if res.stress is not None:
                    props["stress"] = res.stress
                _keep_reference(atoms, a)
                set_results(a, props)  # (labels the input held there are kept as ref_*)
                out.append(a)
        write_extxyz_atomic(args.output, out, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq evaluate: error: {exc}", file=sys.stderr)
        return 1
    n_atoms = sum(len(a) for a in out)
    print(f"aceuq evaluate: {len(out)} structures, {n_atoms} atoms -> {args.output}",
          file=summary_stream(args.output))
    return 0


def _keep_reference(source, out) -> None:
    """The input's own energy, forces and stress (e.g. DFT labels) kept beside the predictions, as
    ref_energy, ref_stress (info; stress in ASE's Voigt order and sign) and ref_forces (per atom),
    so the output compares the two. Labels may also sit in the structure's info (energy, stress)
    and arrays (forces), as in some DataFrames' ase_atoms."""
    results = dict(getattr(source.calc, "results", None) or {})
    for key, where in (("energy", source.info), ("stress", source.info), ("forces", source.arrays)):
        if key not in results and key in where:
            results[key] = where[key]
    try:
        if "energy" in results:
            out.info["ref_energy"] = float(results["energy"])
        if "forces" in results:
            out.arrays["ref_forces"] = np.asarray(results["forces"], dtype=float).copy()
        if results.get("stress") is not None:
            stress = np.asarray(results["stress"], dtype=float)
            out.info["ref_stress"] = full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress.copy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{structure_label(source)}: its own energy, forces or stress cannot be read as "
                         f"numbers ({exc})") from None


if __name__ == "__main__":
    sys.exit(main())
