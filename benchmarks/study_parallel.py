"""Wall time of a 4-run tiny study with ``--executor local`` and with Ray at 2 runs at once, on this machine.

    python benchmarks/study_parallel.py [--image-size 64] [--epochs 2] [--steps 150] [--runs-per-regime 2]

Both studies train the same runs (2 regimes x 2 seeds of a small DenseNet on the embedded phantom, one torch
thread per run, the same image store, built once before either is timed) into fresh folders; their summary.csv
must be byte-identical. Expected: close to 2x on 2 cores (Ray: 2 tasks of 1 CPU). Printed: each wall time, the
ratio, and whether the answers agree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = """description: small DenseNet for timing the executors
data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}
phantom: {n: 1200, size: 128, seed: 0}
train: {batch_size: 16, lr: 1.0e-3, pretrained: none, in_channels: 1, workers: 0, cache: store, network: densenet,
        network_args: {init_features: 16, growth_rate: 8, block_config: [3, 3, 3]}}
"""


def study(out: Path, preset: Path, args: argparse.Namespace, *extra: str) -> float:
    """Run one ``compare`` into ``out``; its wall time in seconds."""
    cmd = [sys.executable, "-m", "mai_aug", "compare", "--preset", str(preset), "--regimes", "none", "basic",
           "--seeds", str(args.runs_per_regime), "--image-size", str(args.image_size), "--epochs", str(args.epochs),
           "--steps-per-epoch", str(args.steps), "--threads", "1", "--bootstrap", "200", "--quiet", "--out", str(out),
           *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--runs-per-regime", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MAI_AUG_CACHE"] = str(root / "cache")  # one phantom and image store for both, built untimed
        preset = root / "preset.yaml"
        preset.write_text(PRESET)
        warm = argparse.Namespace(**{**vars(args), "epochs": 1, "steps": 1, "runs_per_regime": 1})
        study(root / "warm", preset, warm)
        local = study(root / "local", preset, args)
        ray = study(root / "ray", preset, args, "--executor", "ray", "--cpus-per-run", "1")
        same = (root / "local" / "summary.csv").read_bytes() == (root / "ray" / "summary.csv").read_bytes()
    runs = 2 * args.runs_per_regime
    print(f"{runs} runs ({args.image_size} px, {args.epochs} epochs x {args.steps} steps, 1 thread each) on "
          f"{os.cpu_count()} cores: local {local:.1f} s, ray (2 at once) {ray:.1f} s: {local / ray:.2f}x; "
          f"summary.csv {'byte-identical' if same else 'DIFFERS'}")


if __name__ == "__main__":
    main()
