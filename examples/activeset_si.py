"""Global vs clustered (local) extrapolation grade on mlearn-Si.

A linear ACE is fitted (pyace, the optional fitting extra) to the Elastic + Vacancy frames of
../shared/data/mlearn-Si/train.extxyz; active sets are built on the same frames, global (one per
element) and clustered (k chosen automatically); held-out Elastic and Vacancy (test split),
Surface, and AIMD-NVT frames of >= 2530 K and of <= 843 K are graded. Prints per-atom gamma
median, p95, max.

    python examples/activeset_si.py [DATA_DIR] [--clusters auto|K]
"""
import argparse
import os
import re
import tempfile

import ase.io
import numpy as np

import aceuq
from aceuq.activeset import ActiveSet, build_active_set


def fit_linear_si(frames, path):
    import pandas as pd
    from pyace import ACEBBasisSet, create_multispecies_basis_config
    from pyace.linearacefit import LinearACEDataset, LinearACEFit

    cfg = create_multispecies_basis_config({
        "deltaSplineBins": 0.001, "elements": ["Si"],
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled", "fs_parameters": [1, 1], "ndensity": 1}},
        "bonds": {"ALL": {"radbase": "ChebExpCos", "radparameters": [5.25], "rcut": 5.0, "dcut": 0.01,
                          "NameOfCutoffFunction": "cos", "r_in": 1.8, "delta_in": 0.3,
                          "inner_cutoff_type": "distance", "core-repulsion": [0.0, 1.0]}},
        "functions": {"ALL": {"nradmax_by_orders": [8, 4, 3, 2], "lmax_by_orders": [0, 3, 2, 1]}},
    })
    df = pd.DataFrame({"ase_atoms": frames, "energy_corrected": [a.get_potential_energy() for a in frames],
                       "forces": [a.get_forces() for a in frames]})
    fit = LinearACEFit(train_dataset=LinearACEDataset(ACEBBasisSet(cfg), df))
    fit.fit()
    fit.get_bbasis().save(path)
    return path


def temperature(atoms):
    m = re.search(r"at (\d+) K", atoms.info.get("description", ""))
    return int(m.group(1)) if m else None


def stats(aset, frames):
    g = np.concatenate([x for x, _ in aset.gamma(frames)])
    return np.median(g), np.percentile(g, 95), g.max()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("data", nargs="?", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--clusters", default="auto")
    args = ap.parse_args()
    clusters = args.clusters if args.clusters == "auto" else int(args.clusters)
    train_all = ase.io.read(os.path.join(args.data, "mlearn-Si", "train.extxyz"), ":")
    test_all = ase.io.read(os.path.join(args.data, "mlearn-Si", "test.extxyz"), ":")
    train = [a for a in train_all if a.info["config_type"] in ("Elastic", "Vacancy")]
    pool = train_all + test_all
    groups = {
        "Elastic (held-out)": [a for a in test_all if a.info["config_type"] == "Elastic"],
        "Vacancy (held-out)": [a for a in test_all if a.info["config_type"] == "Vacancy"],
        "Surface": [a for a in pool if a.info["config_type"] == "Surface"],
        "AIMD-NVT >= 2530 K": [a for a in pool if a.info["config_type"] == "AIMD-NVT" and (temperature(a) or 0) >= 2530],
        "AIMD-NVT <= 843 K": [a for a in pool if a.info["config_type"] == "AIMD-NVT" and (temperature(a) or 1e9) <= 843],
    }
    with tempfile.TemporaryDirectory() as tmp:
        pot = aceuq.Potential(fit_linear_si(train, os.path.join(tmp, "si.yaml")))
        proj = pot.projections(train)
        sets = {}
        for name, k in (("global", 1), ("local", clusters)):
            built = build_active_set(pot, train, clusters=k, projections=proj)
            print(f"{name}: " + "\n  ".join(built.summary()))
            path = built.save(os.path.join(tmp, f"{name}.casi" if built.clustered else f"{name}.asi"))
            sets[name] = ActiveSet.load(path, pot)
        print(f"\ntrained on {len(train)} Elastic+Vacancy frames, {pot.n_functions('Si')} functions")
        print(f"{'group':<22}{'frames':>7} | {'global median':>13} {'p95':>9} {'max':>9} | "
              f"{'local median':>12} {'p95':>9} {'max':>9}")
        for label, frames in groups.items():
            row = [f"{label:<22}{len(frames):>7} |"]
            for name in ("global", "local"):
                med, p95, mx = stats(sets[name], frames)
                row.append(f"{med:>13.3g} {p95:>9.3g} {mx:>9.3g} |" if name == "global" else
                           f"{med:>12.3g} {p95:>9.3g} {mx:>9.3g}")
            print(" ".join(row))


if __name__ == "__main__":
    main()
