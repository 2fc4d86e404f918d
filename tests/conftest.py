"""Shared fixtures: tiny NIH-layout folders written on the fly, and one small phantom per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mai_aug.data.nih import HEADER

os.environ.setdefault("MPLBACKEND", "Agg")

#: The variables through which the code under test finds the machine's caches and settings: each points into one
#: temporary home per test run, so a test neither reads a cache a previous run left nor writes into the real home.
HOME_VARIABLES = {"HOME": "", "MAI_AUG_CACHE": ".cache/mai_aug", "XDG_CACHE_HOME": ".cache",
                  "XDG_CONFIG_HOME": ".config", "TORCH_HOME": ".cache/torch", "MPLCONFIGDIR": ".config/matplotlib"}


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """An empty home for the whole test run (and the commands its tests start): what a new machine has.

    ``MAI_AUG_CACHE`` (the phantom cache of ``compare``), torch's and matplotlib's caches and ``HOME`` itself point
    into it; the variables are restored at the end.
    """
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name, relative in HOME_VARIABLES.items():
            patch.setenv(name, str(home / relative))
        yield home

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: one intra-op thread per worker, or N workers fight over cores
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # the same in the subprocesses a test starts (exact-resume tests compare them)
    torch.set_num_threads(1)


def write_nih(
    root: Path,
    rows: list[tuple[str, str, int, str]],
    variant: str = "2020",
    images: bool | list[str] = True,
    size: int = 16,
) -> Path:
    """Write ``root`` in NIH's layout: rows are (image name, finding labels, patient id, view)."""
    root.mkdir(parents=True, exist_ok=True)
    name = "Data_Entry_2017_v2020.csv" if variant == "2020" else "Data_Entry_2017.csv"
    tail = "," if variant == "2017" else ""
    lines = [",".join(HEADER) + tail]
    for i, (img, labels, pid, view) in enumerate(rows):
        age = "58" if variant == "2020" else "058Y"
        lines.append(f"{img},{labels},{i},{pid},{age},M,{view},{size},{size},0.143,0.143{tail}")
    (root / name).write_text("\n".join(lines) + "\n")
    (root / "images").mkdir(exist_ok=True)
    wanted = [r[0] for r in rows] if images is True else (images or [])
    for img in wanted:
        Image.fromarray(np.full((size, size), 128, np.uint8)).save(root / "images" / img)
    return root


@pytest.fixture
def nih_rows() -> list[tuple[str, str, int, str]]:
    return [
        ("00000001_000.png", "No Finding", 1, "PA"),
        ("00000001_001.png", "Cardiomegaly|Effusion", 1, "AP"),
        ("00000002_000.png", "Hernia", 2, "PA"),
        ("00000003_000.png", "Pneumothorax", 3, "PA"),
        ("00000004_000.png", "Infiltration|Nodule|Mass", 4, "AP"),
        ("00000005_000.png", "No Finding", 5, "PA"),
    ]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom (900 images, 64 px) shared by the tests that read or train on it."""
    from mai_aug.data.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("phantom")
    write_phantom(PhantomSpec(out=out, n=900, size=64, seed=3), workers=2)
    return out


def cut_datalist(phantom: Path, folder: Path, **keep: int) -> Path:
    """``mai-aug split`` of ``phantom`` into ``folder``, each split named in ``keep`` cut to its first N items.

    Training tests use it to stay cheap (fewer images to cache and validate) on the real patient split.
    """
    import json

    from mai_aug.cli import main

    assert main(["split", "--data", str(phantom), "--out", str(folder / "full.json")]) == 0
    datalist = json.loads((folder / "full.json").read_text())
    datalist.update({split: datalist[split][:n] for split, n in keep.items()})
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder / "datalist.json"
