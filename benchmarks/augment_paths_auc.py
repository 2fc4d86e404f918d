"""Do the two augmentation paths train equally well? Paired test AUCs of one regime trained both ways.

    mai-aug compare --preset benchmarks/presets/augment-device.yaml --regimes complex --seeds 3 --out A
    mai-aug compare --preset benchmarks/presets/augment-loader.yaml --regimes complex --seeds 3 --out B
    python benchmarks/augment_paths_auc.py --device-study A --loader-study B --regime complex --seeds 3

Both studies share the phantom, the split and the seeds; only ``augment_on`` differs. The difference (device minus
loader) is bootstrapped over test patients and seeds, as ``compare`` does for regimes: an interval covering 0 means
the paths are indistinguishable at this size; it does not prove them equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mai_aug.reports.compare import headline_table, markdown_table
from mai_aug.stats.paired import score_regimes, summary_table
from mai_aug.study.report import load_predictions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device-study", type=Path, required=True)
    p.add_argument("--loader-study", type=Path, required=True)
    p.add_argument("--regime", default="complex")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()
    names = json.loads((args.loader_study / "datalist.json").read_text())["labels"]
    labels, patients, loader = load_predictions(args.loader_study, [args.regime], args.seeds, names)
    labels_d, patients_d, device = load_predictions(args.device_study, [args.regime], args.seeds, names)
    if not ((labels == labels_d).all() and (patients == patients_d).all()):
        raise SystemExit("the two studies have different test sets")
    predictions = {"loader": loader[args.regime], "device": device[args.regime]}
    scores = score_regimes(labels, patients, predictions, n_boot=args.bootstrap)
    summary = summary_table(scores, names, baseline="loader")
    print(f"{args.regime}, {args.seeds} seeds, {len(set(patients))} test patients")
    print(markdown_table(headline_table(summary, baseline="loader")))


if __name__ == "__main__":
    main()
