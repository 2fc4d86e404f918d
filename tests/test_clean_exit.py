"""A command that stops on a user error exits with status 2 and one line, its threads and workers shut down first.

A truncated PNG met while MONAI's memory cache was filled used to abort the process (``terminate called without an
active exception``, status 134) when its caching thread pool was torn down without joining threads that were
still inside torch. The image store decodes in processes (or in this one with ``--threads 1``); the wrapper below
keeps the other images busy in a torch operation while the bad one stops the command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import cut_datalist

ROOT = Path(__file__).resolve().parents[1]

BUSY_ITEMS = textwrap.dedent("""
    import sys
    import torch
    import mai_aug.data.store_build as build
    original = build._decode
    def busy(load, path):
        if not path.endswith("truncated.png"):  # the others are inside torch when the bad one stops the command
            a = torch.ones(600, 600)
            for _ in range(3):
                a @ a
        return original(load, path)
    build._decode = busy
    from mai_aug.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def truncated_datalist(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom's split cut to 16 training images, the second one a truncated PNG."""
    folder = tmp_path_factory.mktemp("clean-exit")
    path = cut_datalist(phantom_dir, folder, training=16, validation=4, test=4)
    datalist = json.loads(path.read_text())
    bad = folder / "truncated.png"
    bad.write_bytes(Path(datalist["training"][1]["image"]).read_bytes()[:300])
    datalist["training"][1]["image"] = str(bad)
    path.write_text(json.dumps(datalist))
    return path


@pytest.mark.parametrize("threads", ["1", "2"])
def test_truncated_png_while_the_store_is_built_exits_2_with_one_line(truncated_datalist, tmp_path, threads):
    argv = ["train", "--datalist", str(truncated_datalist), "--regime", "basic", "--out", str(tmp_path / "run"),
            "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2",
            "--cache", "store", "--threads", threads, "--workers", "0", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", BUSY_ITEMS, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("mai-aug train: error: ") and "truncated.png: cannot decode image" in lines[0]
