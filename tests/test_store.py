"""The image store: decoded once, the same tensors as decoding, reused, published whole, refused loudly."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mai_aug.data.store_build as build
from conftest import write_nih
from mai_aug.core.errors import MaiAugError
from mai_aug.data.loader import build_dataset
from mai_aug.data.store import IMAGES_FILE, INDEX_FILE, open_store
from mai_aug.data.store_build import ensure_store
from mai_aug.transforms.regimes import load_regime

ROOT = Path(__file__).resolve().parents[1]
ROWS = [(f"{i:08d}_000.png", "Effusion" if i % 2 else "No Finding", i, "PA") for i in range(1, 13)]


@pytest.fixture
def nih(tmp_path: Path) -> Path:
    """12 images of random texture (distinct, so a swapped row shows) in NIH's layout."""
    data = write_nih(tmp_path / "nih", ROWS, size=40, images=False)
    rng = np.random.default_rng(0)
    for name, *_ in ROWS:
        Image.fromarray(rng.integers(0, 255, (40, 52), dtype=np.uint8)).save(data / "images" / name)
    return data


def items_of(data: Path) -> list[dict]:
    return [{"image": str(data / "images" / name), "label": [i % 2]} for i, (name, *_) in enumerate(ROWS)]


def built(lines: list[str]) -> int:
    """How many stores the ``say`` lines report decoding."""
    return sum(line.startswith("image store: decoding") for line in lines)


@pytest.mark.parametrize("workers", [1, 2])
def test_stored_items_equal_decoded_ones(nih, tmp_path, workers):
    regime, items = load_regime("basic", 32), items_of(nih)
    stored = build_dataset(items, regime, train=False, cache_dir=tmp_path / "cache", workers=workers, progress=False)
    plain = build_dataset(items, regime, train=False, cache="none")
    for i in range(len(items)):
        a, b = stored[i], plain[i]
        assert a.keys() == b.keys()
        assert torch.equal(a["image"], b["image"]) and a["image"].dtype == b["image"].dtype == torch.float32
        assert torch.equal(a["label"], b["label"]) and a["label"].dtype == b["label"].dtype
    raw = build_dataset(items, regime, train=False, cache_dir=tmp_path / "cache", online=False)
    assert raw[0]["image"].dtype == torch.uint8 and tuple(raw[0]["image"].shape) == (1, 32, 32)


def test_decoded_once_then_reused_by_subsets_and_rebuilt_when_a_file_changes(nih, tmp_path):
    regime, items, lines = load_regime("none", 32), items_of(nih), []
    root = tmp_path / "stores"
    first = ensure_store([it["image"] for it in items], regime, root, workers=1, progress=False, say=lines.append)
    again = ensure_store([it["image"] for it in items[3:7]], regime, root, workers=1, say=lines.append)
    other_regime = ensure_store([it["image"] for it in items], load_regime("complex", 32), root, say=lines.append)
    assert built(lines) == 1 and again.folder == first.folder == other_regime.folder  # one load part: one store
    ensure_store([items[0]["image"]], load_regime("none", 48), root, workers=1, say=lines.append)
    assert built(lines) == 2  # another size: another store
    os.utime(items[5]["image"], ns=(1, 1))  # the file's identity changed: its old pixels are not served
    changed = ensure_store([it["image"] for it in items], regime, root, workers=1, say=lines.append)
    assert built(lines) == 3 and changed.folder != first.folder


def test_the_dataset_pickles_without_its_pixels(nih, tmp_path):
    dataset = build_dataset(items_of(nih), load_regime("none", 32), train=False, cache_dir=tmp_path, online=False)
    base = dataset.data
    base[0]  # the file is open in this process
    assert len(pickle.dumps(base)) < 4000 and torch.equal(pickle.loads(pickle.dumps(base))[3]["image"],
                                                          base[3]["image"])


def test_an_interrupted_build_publishes_nothing_and_the_next_one_restarts(nih, tmp_path, monkeypatch):
    regime, paths, root = load_regime("none", 32), [it["image"] for it in items_of(nih)], tmp_path / "stores"
    real, calls = build._decode, []

    def stop_at_the_sixth(load, path):
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(load, path)

    monkeypatch.setattr(build, "_decode", stop_at_the_sixth)
    with pytest.raises(KeyboardInterrupt):
        ensure_store(paths, regime, root, workers=1, progress=False, say=lambda line: None)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []  # no store for a reader
    monkeypatch.setattr(build, "_decode", real)
    store = ensure_store(paths, regime, root, workers=1, say=lambda line: None)
    assert not list(root.glob(".*.building")) and len(store.paths) == len(paths)


def test_a_damaged_store_is_not_served(nih, tmp_path):
    regime, paths, lines = load_regime("none", 32), [it["image"] for it in items_of(nih)], []
    store = ensure_store(paths, regime, tmp_path, workers=1, say=lines.append)
    with open(store.images_file, "r+b") as f:
        f.truncate(store.images_file.stat().st_size - 10)
    assert open_store(store.folder) is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / INDEX_FILE).write_text("{not json")
    assert open_store(tmp_path / "broken") is None
    (tmp_path / "broken" / IMAGES_FILE).write_bytes(b"")
    assert open_store(tmp_path / "broken") is None
    ensure_store(paths, regime, tmp_path, workers=1, say=lines.append)
    assert built(lines) == 2


def test_a_full_disk_stops_before_decoding_with_the_bytes_needed(nih, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(MaiAugError, match=r"`cache_dir` .*: no space left for the image store \(12\d{3} bytes needed"):
        ensure_store([it["image"] for it in items_of(nih)], load_regime("none", 32), tmp_path, workers=1,
                     say=lambda line: None)


def test_a_disk_filling_while_rows_are_written_is_one_line_and_frees_the_file(nih, tmp_path, monkeypatch):
    # a file system without fallocate: the space runs out at the fourth row's write
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, offset, length: (_ for _ in ()).throw(
        OSError(errno.EOPNOTSUPP, "Operation not supported")))
    real_pwrite, writes = os.pwrite, []

    def filling(fd, data, offset):
        writes.append(offset)
        if len(writes) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", filling)
    opened = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    size = 12 * 32 * 32 + 128  # 12 rows of 32x32 after the .npy header
    with pytest.raises(MaiAugError, match=r"images\.npy: cannot write row \d+ of the image store \(no space left "
                                          r"on the device; it needs \d+ more bytes, \d+ free\)$") as error:
        ensure_store([it["image"] for it in items_of(nih)], load_regime("none", 32), tmp_path / "stores", workers=1,
                     progress=False, say=lambda line: None)
    assert 0 < int(str(error.value).split("it needs ")[1].split()[0]) <= size  # the part not yet on the disk
    assert [p.name for p in (tmp_path / "stores").iterdir() if not p.name.endswith(".lock")] == []  # nothing left
    if opened is not None:
        assert len(os.listdir("/proc/self/fd")) == opened  # the failed build holds no descriptor of its file


def test_rows_written_in_parts_are_stored_whole(nih, tmp_path, monkeypatch):
    """A file system filling up writes part of a row first: the rest follows, and the pixels come back as decoded."""
    real_pwrite, calls = os.pwrite, []

    def partial(fd, data, offset):
        calls.append(len(data))
        return real_pwrite(fd, bytes(data)[:max(1, len(data) // 3)], offset)  # a third at a time

    monkeypatch.setattr(os, "pwrite", partial)
    regime, items = load_regime("basic", 32), items_of(nih)
    stored = build_dataset(items, regime, train=False, cache_dir=tmp_path / "cache", workers=1, progress=False)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    plain = build_dataset(items, regime, train=False, cache="none")
    assert len(calls) >= 3 * len(items)
    assert all(torch.equal(stored[i]["image"], plain[i]["image"]) for i in range(len(items)))


def test_an_unusable_cache_root_is_one_line(nih, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(MaiAugError, match=r"`cache_dir` .*file/stores: cannot write there"):
        ensure_store([items_of(nih)[0]["image"]], load_regime("none", 32), tmp_path / "file" / "stores")


def prepare(data: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mai_aug", "prepare", "--data", str(data), "--image-size", "32",
                             "--cache-dir", str(cache), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_preparing_the_same_store_decode_it_once(nih, tmp_path):
    procs = [prepare(nih, tmp_path / "cache", "--workers", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(err.count("image store: decoding 12 images") for _, err in outputs) == 1, outputs
    stores = [p for p in (tmp_path / "cache" / "images").iterdir() if not p.name.startswith(".")]
    assert len(stores) == 1 and (stores[0] / IMAGES_FILE).is_file()
    assert all(str(stores[0]) in out for out, _ in outputs)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_truncated_image_stops_prepare_with_one_line(nih, tmp_path, workers):
    bad = nih / "images" / ROWS[7][0]
    bad.write_bytes(bad.read_bytes()[:200])
    proc = prepare(nih, tmp_path / "cache", "--workers", workers)
    out, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("image store")]
    assert proc.returncode == 2, err
    assert lines == [f"mai-aug prepare: error: {bad}: cannot decode image (truncated or corrupt PNG)"] or (
        len(lines) == 1 and lines[0].startswith(f"mai-aug prepare: error: {bad}: ")), err
    assert not [p for p in (tmp_path / "cache" / "images").iterdir() if not p.name.startswith(".")]


def test_train_builds_the_store_once_and_evaluate_reads_it(phantom_dir, tmp_path, monkeypatch):
    """Training decodes every split once (evaluation's test images too); evaluate then decodes nothing."""
    from conftest import cut_datalist
    from mai_aug.cli import main

    datalist = cut_datalist(phantom_dir, tmp_path, training=16, validation=8, test=8)
    real, builds = build._build, []
    monkeypatch.setattr(build, "_build", lambda root, name, paths, *rest: builds.append(len(paths))
                        or real(root, name, paths, *rest))
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["train", "--datalist", str(datalist), "--regime", "basic", "--out", str(run), "--image-size", "32",
                 "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "1", "--workers", "0", "--quiet",
                 "--cache-dir", str(cache)]) == 0
    assert builds == [32]
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0
    assert builds == [32] and (run / "eval" / "test_auc.csv").is_file()


def test_cache_none_writes_no_store(nih, tmp_path):
    dataset = build_dataset(items_of(nih), load_regime("none", 32), train=False, cache="none", cache_dir=tmp_path / "c")
    assert dataset[0]["image"].shape == (1, 32, 32) and not (tmp_path / "c").exists()


def _mapped_stores() -> list[str]:
    """The image-store files this process has memory-mapped now (Linux: /proc/self/maps)."""
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(IMAGES_FILE)]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_building_and_reading_a_store_maps_no_page_of_it(nih, tmp_path):
    # a memory map counts every page touched in the process's RSS: 11 GB for one pass over NIH at 320 px
    dataset = build_dataset(items_of(nih), load_regime("none", 32), train=False, cache_dir=tmp_path, workers=1,
                            online=False, progress=False)
    assert _mapped_stores() == []  # the build (in this process, workers=1) wrote with pwrite
    images = [dataset[i]["image"] for i in range(len(dataset))]
    assert _mapped_stores() == [] and len({img.numpy().tobytes() for img in images}) == len(images)
    images[0][...] = 0  # each item owns its pixels: the next read is the store's again
    assert dataset[0]["image"].any()


def test_rows_read_the_same_without_preadv(nih, tmp_path, monkeypatch):
    dataset = build_dataset(items_of(nih), load_regime("none", 32), train=False, cache_dir=tmp_path, workers=1,
                            online=False, progress=False)
    first = [dataset[i]["image"] for i in range(len(dataset))]
    monkeypatch.delattr(os, "preadv")
    assert all(torch.equal(dataset[i]["image"], image) for i, image in enumerate(first))


def test_a_store_cut_short_after_it_was_opened_is_named(nih, tmp_path):
    dataset = build_dataset(items_of(nih), load_regime("none", 32), train=False, cache_dir=tmp_path, workers=1,
                            online=False, progress=False)
    file = dataset.data.file.path
    os.truncate(file, file.stat().st_size - 100)
    with pytest.raises(MaiAugError, match=rf"{file}: row 11 is cut short .*delete its folder"):
        dataset[11]
    assert dataset[10]["image"].shape == (1, 32, 32)
