"""``aceuq gamma POTENTIAL ACTIVESET DATA... -o OUT.extxyz``: per-atom extrapolation grade."""
from __future__ import annotations

import argparse
import sys

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .._core import InputError
from . import add_elements_option, summary_stream
from ..activeset import ActiveSet
from ..data import check_structures_output, file_sha256, read_structures, write_extxyz_atomic
from ..maxvol import DEFAULT_TOL
from ..metrics import ErrorMap
from ..potential import Potential


# what counts as extrapolating in the summary: above MaxVol's default tolerance, which training
# atoms may reach (γ <= 1 + tol) and active-set atoms reach up to rounding
EXTRAPOLATING = 1 + DEFAULT_TOL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq gamma",
        description="Grade every atom against an active set (.asi or .casi): writes extended XYZ with per-atom "
                    "'gamma' and 'cluster' arrays and the per-structure 'max_gamma'.")
    p.add_argument("potential", help="pacemaker potential .yaml")
    p.add_argument("active_set", help="active set: pacemaker .asi or aceuq .casi")
    p.add_argument("structures", nargs="+", help="structure files: extxyz (or any ASE format) or .pkl.gzip")
    p.add_argument("-o", "--output", required=True, help="output .extxyz (written atomically)")
    p.add_argument("--assign", choices=("nearest", "min"), default=None,
                   help="cluster assignment (default: what the .casi says)")
    p.add_argument("--error-map", metavar="FILE.json", default=None,
                   help="γ→force-error map (metrics.ErrorMap JSON, e.g. written by 'aceuq study' to "
                        "DIR/error_maps/); adds the per-atom 'force_error_estimate' (eV/Å) and the per-structure "
                        "'max_force_error_estimate'")
    add_elements_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # files may follow options, as in evaluate
    try:
        check_structures_output(args.output, inputs=[args.potential, args.active_set, *args.structures]
                                + ([args.error_map] if args.error_map else []))
        pot = Potential(args.potential)
        aset = ActiveSet.load(args.active_set, pot, assign=args.assign)
        error_map = _load_error_map(args.error_map) if args.error_map else None
        if error_map is not None:
            for line in _map_mismatch(error_map, args.error_map, aset):
                print(f"aceuq gamma: warning: {line}", file=sys.stderr)
        frames = read_structures(args.structures, args.elements, progress=not args.no_progress)
        graded = aset.gamma(frames, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq gamma: error: {exc}", file=sys.stderr)
        return 1
    out = []
    for atoms, (gamma, cluster) in zip(frames, graded):
        a = atoms.copy()
        a.arrays["gamma"] = gamma
        a.arrays["cluster"] = cluster.astype(int)
        a.info["max_gamma"] = float(gamma.max()) if len(gamma) else 0.0
        if error_map is not None:
            est = error_map(gamma)
            a.arrays["force_error_estimate"] = est
            a.info["max_force_error_estimate"] = float(est.max()) if len(est) else 0.0
        if atoms.calc is not None and getattr(atoms.calc, "results", None):
            a.calc = SinglePointCalculator(a, **atoms.calc.results)
        out.append(a)
    try:
        write_extxyz_atomic(args.output, out, progress=not args.no_progress)
    except InputError as exc:
        print(f"aceuq gamma: error: {exc}", file=sys.stderr)
        return 1
    report = summary_stream(args.output)
    all_gamma = np.concatenate([g for g, _ in graded]) if graded else np.zeros(0)
    if not len(all_gamma):  # structures of no atoms
        print(f"aceuq gamma: {len(out)} structures, 0 atoms -> {args.output}", file=report)
        return 0
    if error_map is not None:
        est = np.concatenate([a.arrays["force_error_estimate"] for a in out])
        print(f"aceuq gamma: force error estimate (|dF|, {error_map.units}) median {np.median(est):.3g}, "
              f"max {est.max():.3g}", file=report)
    print(f"aceuq gamma: {len(out)} structures, {len(all_gamma)} atoms; gamma median {np.median(all_gamma):.3g}, "
          f"max {all_gamma.max():.6g}, {int((all_gamma > EXTRAPOLATING).sum())} atoms above {EXTRAPOLATING:g} -> "
          f"{args.output}",
          file=report)
    return 0


def _map_mismatch(emap: ErrorMap, path: str, aset: ActiveSet):
    """Why the map may not apply to this γ: fitted (by `aceuq study`) for another active set or
    cluster assignment. Maps without that record are taken as they are."""
    fitted = emap.fitted_for or {}
    if fitted.get("active_set_sha256") and fitted["active_set_sha256"] != file_sha256(aset.path):
        yield (f"error map '{path}' was fitted for another active set than '{aset.path}': its estimates "
               "do not apply to this gamma")
    elif (fitted.get("assign") and fitted["assign"] != aset.assign
          and any(aset.n_clusters(el) > 1 for el in aset.potential.elements)):
        yield (f"error map '{path}' was fitted for 'assign {fitted['assign']}', this gamma uses "
               f"'assign {aset.assign}' (--assign {fitted['assign']} matches it)")


def _load_error_map(path: str) -> ErrorMap:
    emap = ErrorMap.load(path)  # InputError naming the file when missing or malformed
    if emap.score != "gamma":
        raise InputError(f"error map '{path}': maps '{emap.score}', not gamma")
    return emap


if __name__ == "__main__":
    sys.exit(main())
