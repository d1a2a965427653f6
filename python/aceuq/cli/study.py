"""``aceuq study CONFIG.yaml -o DIR``: the paper's UQ protocol on labelled data."""
from __future__ import annotations

import argparse
import sys

from .._core import InputError
from . import number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aceuq study",
        description="Accuracy sweep, homogeneous vs heterogeneous training and novelty detection of held-out "
                    "groups over several random splits, for ensemble σ, global γ and clustering-local γ; writes "
                    "DIR/report.md (tables, PNGs), DIR/metrics.json and the fitted γ→force-error maps "
                    "DIR/error_maps/<model>-seed<seed>/<method>.json (for 'aceuq gamma --error-map'; with "
                    "--keep-models the matching potentials and .asi/.casi files stay in "
                    "DIR/models/<model>-seed<seed>). "
                    "See examples/paper/si.yaml for the config. Needs pyace: pip install 'aceuq[pacemaker]'.",
    )
    p.add_argument("config", help="study config .yaml")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--workers", type=number(int, minimum=1), default=2, help="processes for the design matrices")
    p.add_argument("--keep-models", action="store_true", help="keep the fitted ensembles in DIR/models")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ..study import load_config, run_study

    try:
        cfg = load_config(args.config)
        if args.keep_models:
            cfg["keep_models"] = True
        summary = run_study(cfg, args.output, progress=not args.no_progress, workers=args.workers)
    except InputError as exc:
        print(f"aceuq study: error: {exc}", file=sys.stderr)
        return 1
    for exp, methods in summary.items():
        for method, m in methods.items():
            parts = [f"{k} {m[k]:.3f}" for k in ("spearman", "miscalibration_area", "roc_auc") if m.get(k) is not None]
            print(f"  {exp:<24} {method:<22} " + ", ".join(parts))
    print(f"aceuq study: report -> {args.output}/report.md, metrics -> {args.output}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
