"""Does one setting train as well as another? Paired test AUCs of one regime from two studies.

    mai-aug compare --preset benchmarks/presets/augment-device.yaml --regimes complex --seeds 3 --out A
    mai-aug compare --preset benchmarks/presets/augment-loader.yaml --regimes complex --seeds 3 --out B
    python benchmarks/augment_paths_auc.py --study-a A --label-a device --study-b B --label-b loader \\
        --regime complex --seeds 3

    (``--device-study A --loader-study B`` is the same as the first four flags.)

    mai-aug compare --preset benchmarks/presets/demo-bf16.yaml --regimes complex --seeds 2 --out A
    mai-aug compare --preset demo --regimes complex --seeds 2 --out B
    python benchmarks/augment_paths_auc.py --study-a A --label-a bf16 --study-b B --label-b fp32 --seeds 2

Both studies must share the phantom, the split and the seeds; only the setting under test differs. The difference
(A minus B) is bootstrapped over test patients and seeds, as ``compare`` does for regimes: an interval covering 0
means the two are indistinguishable at this size; it does not prove them equal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mai_aug.analyses.outputs import load_predictions
from mai_aug.reports.compare import headline_table, markdown_table
from mai_aug.stats.paired import score_regimes, summary_table


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study-a", type=Path, help="the study under test (its compare --out folder)")
    p.add_argument("--study-b", type=Path, help="the baseline study")
    p.add_argument("--label-a", default="a", help="A's name in the table (default: %(default)s)")
    p.add_argument("--label-b", default="b", help="B's name in the table, the baseline (default: %(default)s)")
    p.add_argument("--device-study", type=Path, help="as --study-a with --label-a device")
    p.add_argument("--loader-study", type=Path, help="as --study-b with --label-b loader")
    p.add_argument("--regime", default="complex")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()
    if args.device_study is not None:
        args.study_a, args.label_a = args.device_study, "device"
    if args.loader_study is not None:
        args.study_b, args.label_b = args.loader_study, "loader"
    if args.study_a is None or args.study_b is None:
        p.error("name both studies: --study-a and --study-b (or --device-study and --loader-study)")
    if args.label_a == args.label_b:
        p.error(f"--label-a and --label-b are both {args.label_a!r}")
    return args


def main() -> None:
    args = _args()
    names = json.loads((args.study_b / "datalist.json").read_text())["labels"]
    labels, patients, b = load_predictions(args.study_b, [args.regime], range(args.seeds), names)
    labels_a, patients_a, a = load_predictions(args.study_a, [args.regime], range(args.seeds), names)
    if not ((labels == labels_a).all() and (patients == patients_a).all()):
        raise SystemExit("the two studies have different test sets")
    predictions = {args.label_b: b[args.regime], args.label_a: a[args.regime]}
    scores = score_regimes(labels, patients, predictions, n_boot=args.bootstrap)
    summary = summary_table(scores, names, baseline=args.label_b)
    print(f"{args.regime}, {args.seeds} seeds, {len(set(patients))} test patients: "
          f"{args.label_a} ({args.study_a}) against {args.label_b} ({args.study_b})")
    print(markdown_table(headline_table(summary, baseline=args.label_b)))


if __name__ == "__main__":
    main()
