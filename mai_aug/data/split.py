"""Patient-wise splits of a :class:`DatasetTable` (or an :class:`NIHTable`) into a MONAI datalist.

The patient split is an iterative stratification over patients (after Sechidis et al., 2011): findings are
visited from rarest to commonest, and each finding's still unassigned patients are dealt out to the split whose
share of that finding lags its target most, with the first positive patient of every finding going to validation
and test when they have none yet. Patients without findings then fill each split up to its target image count.
All draws come from one seeded generator, so the same seed gives the same split.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import output_file, write_text_atomic
from mai_aug.data.datasets.nih import from_nih
from mai_aug.data.datasets.table import POOL, TEST, DatasetTable
from mai_aug.data.images import file_problem
from mai_aug.data.nih import FINDINGS, NIHTable, read_name_list

SPLITS: tuple[str, ...] = ("training", "validation", "test")
# A finding needs this many positive patients before validation and test are each promised one.
MIN_PATIENTS_TO_SEED_SPLITS = 3


def stratified_patient_split(
    patients: np.ndarray, labels: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> np.ndarray:
    """Assign every image to a split so that no patient is in two splits.

    Args:
        patients: (n,) patient id per image.
        labels: (n, k) 0/1 findings per image.
        fractions: target fraction of images per split (sums to 1).
        seed: seed of the generator that orders patients.

    Returns:
        (n,) split index per image.
    """
    fractions = np.asarray(fractions, dtype=float)
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(patients, return_inverse=True)
    n_pat = len(uniq)
    counts = np.bincount(inverse, minlength=n_pat).astype(float)
    pat_pos = np.zeros((n_pat, labels.shape[1]), dtype=np.int64)
    np.add.at(pat_pos, inverse, labels.astype(np.int64))
    pat_has = pat_pos > 0
    order = rng.permutation(n_pat)
    assigned = np.full(n_pat, -1, dtype=np.int64)
    split_pos = np.zeros((len(fractions), labels.shape[1]))
    split_images = np.zeros(len(fractions))

    def assign(p: int, s: int) -> None:
        assigned[p] = s
        split_pos[s] += pat_has[p]
        split_images[s] += counts[p]

    for j in np.argsort(pat_has.sum(0), kind="stable"):
        members = [p for p in order[pat_has[order, j]] if assigned[p] < 0]
        total = pat_has[:, j].sum()
        if total >= MIN_PATIENTS_TO_SEED_SPLITS:
            for s in range(1, len(fractions)):
                if fractions[s] > 0 and split_pos[s, j] == 0 and members:
                    assign(members.pop(0), s)
        for p in members:
            deficit = fractions * total - split_pos[:, j]
            deficit[fractions == 0] = -np.inf
            assign(p, int(np.argmax(deficit)))
    target = fractions * counts.sum()
    for p in order:
        if assigned[p] < 0:
            deficit = target - split_images
            deficit[fractions == 0] = -np.inf
            assign(p, int(np.argmax(deficit)))
    return assigned[inverse]


def check_no_overlap(patients: np.ndarray, split: np.ndarray) -> None:
    """Raise if any patient has images in two splits."""
    frame = pd.DataFrame({"p": patients, "s": split})
    n_splits = frame.groupby("p")["s"].nunique()
    leaked = n_splits[n_splits > 1]
    if len(leaked):
        raise MaiAugError(f"patient leakage: {len(leaked)} patient(s) in more than one split, e.g. {leaked.index[0]}")


def nih_official(table: DatasetTable, data_dir: Path) -> np.ndarray:
    """NIH's lists in ``data_dir`` as split codes: ``TEST`` for ``test_list.txt``, ``POOL`` for ``train_val_list.txt``."""
    test_names = read_name_list(data_dir / "test_list.txt")
    train_val_names = read_name_list(data_dir / "train_val_list.txt")
    names = pd.Series(table.names, dtype=object)
    is_test = names.isin(test_names).to_numpy()
    is_train_val = names.isin(train_val_names).to_numpy()
    unlisted = names[~(is_test | is_train_val)]
    if len(unlisted):
        raise MaiAugError(
            f"{len(unlisted)} images are in neither train_val_list.txt nor test_list.txt, e.g. {unlisted.iloc[0]}"
        )
    return np.where(is_test, TEST, POOL)


def official_split(table: NIHTable | DatasetTable, data_dir: Path | None, val_frac: float, seed: int) -> np.ndarray:
    """The dataset's own test set (CheXpert's valid.csv, else NIH's ``test_list.txt`` in ``data_dir``); validation
    carved by patient from the rest."""
    table = as_dataset_table(table)
    if table.official is not None:
        codes = table.official
    elif data_dir is not None:
        codes = nih_official(table, Path(data_dir))
    else:
        raise MaiAugError("`split` official needs the data folder with train_val_list.txt and test_list.txt")
    split = np.where(codes == TEST, 2, 0)
    idx = np.flatnonzero(codes != TEST)
    sub = stratified_patient_split(table.patients[idx], known_positives(table.labels[idx]), [1 - val_frac, val_frac], seed)
    split[idx[sub == 1]] = 1
    return split


def known_positives(labels: np.ndarray) -> np.ndarray:
    """0/1 labels for stratification: an unknown (NaN) label counts as not positive."""
    return np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0).astype(np.int64)


def as_dataset_table(table: NIHTable | DatasetTable) -> DatasetTable:
    """The common table of ``table`` (an :class:`NIHTable` from :func:`read_nih` is converted)."""
    return from_nih(table) if isinstance(table, NIHTable) else table


def site_shifted_patients(data_dir: Path) -> set[int] | None:
    """The patients a phantom imaged at a shifted site (``phantom.json``), or None for any other dataset.

    None too for a CheXpert-layout phantom: it is imaged at one site as a whole, its test set is valid.csv.
    """
    path = Path(data_dir) / "phantom.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        nih_site = record.get("test_shift") == "site" and record.get("layout", "nih") == "nih"
        shifted = {int(p) for p in record.get("shifted_patients", [])} if nih_site else None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise MaiAugError(f"{path}: not a phantom record ({e})") from None
    return shifted


def resolve_split(split: str, data_dir: Path | None, report: Callable[[str], Any] | None = None) -> str:
    """``official`` for a phantom made with ``--test-shift site`` (its test list is the shifted site), else ``split``."""
    if split != "patient" or data_dir is None or site_shifted_patients(data_dir) is None:
        return split
    if report is not None:
        report(f"{data_dir} is a phantom made with `test_shift` site: using its official lists instead of "
               "`split` patient, so that the shifted patients are exactly the test set")
    return "official"


def check_shift_in_test(datalist: dict, shifted: set[int], data_dir: Path) -> None:
    """Raise unless the site-shifted patients are exactly the test set's."""
    for key in ("training", "validation"):
        wrong = sorted({it["patient"] for it in datalist[key]} & shifted)
        if wrong:
            raise MaiAugError(f"{data_dir}: {len(wrong)} site-shifted patient(s) in {key}, e.g. {wrong[0]}")


def make_datalist(
    table: NIHTable | DatasetTable,
    split: str = "patient",
    val_frac: float = 0.1,
    test_frac: float = 0.2,
    seed: int = 0,
    data_dir: Path | None = None,
) -> dict:
    """Split ``table`` by patient and return a MONAI datalist.

    Returns:
        ``{"labels": names, "training": [...], "validation": [...], "test": [...]}``; each item holds
        ``image`` (absolute path), ``label`` (one 0/1 per name, NaN where unknown), ``patient``, ``view``, ``name``.
    """
    table = as_dataset_table(table)
    if not 0 <= val_frac < 1 or not 0 <= test_frac < 1 or val_frac + test_frac >= 1:
        raise MaiAugError(f"`val_frac` {val_frac} and `test_frac` {test_frac} must be in [0, 1) and sum below 1")
    if len(table) == 0:
        raise MaiAugError(f"{table.source}: no images left to split (check the image folder and `views`)")
    _check_table_duplicates(table)
    patients = table.patients
    if split == "patient":
        assignment = stratified_patient_split(patients, known_positives(table.labels),
                                              [1 - val_frac - test_frac, val_frac, test_frac], seed)
    elif split == "official":
        assignment = official_split(table, data_dir, val_frac, seed)
    else:
        raise MaiAugError(f"`split`: unknown split {split!r} (expected patient or official)")
    check_no_overlap(patients, assignment)
    items = [
        {"image": table.images[i], "label": table.item_label(i), "patient": _plain(patients[i]),
         "view": table.views[i], "name": table.names[i]}
        for i in range(len(table))
    ]
    datalist: dict = {"labels": list(table.label_names)}
    for s, key in enumerate(SPLITS):
        datalist[key] = [items[i] for i in np.flatnonzero(assignment == s)]
    shifted = site_shifted_patients(data_dir) if data_dir is not None else None
    if shifted is not None:
        check_shift_in_test(datalist, shifted, Path(data_dir))
    return datalist


def _plain(patient: Any) -> int | str:
    """A patient id as JSON keeps it: numpy integers become int, anything else str."""
    return int(patient) if isinstance(patient, int | np.integer) else str(patient)


def write_datalist(datalist: dict, out: str | Path) -> Path:
    """Write ``datalist`` as JSON, creating the parent folder; all-or-nothing, never over a non-regular file.

    The JSON goes through :func:`mai_aug.core.files.atomic_write` (a uniquely named temporary file renamed over
    ``out``, or over a symlink's target), so two processes cannot race on one temporary name and a FIFO or
    device named as ``out`` is refused rather than replaced.
    """
    out = Path(out)
    output_file(out, "`out`")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {out}: cannot write ({e.strerror})") from None
    # an unknown label (NaN in memory) is written as JSON's null; load_datalist reads it back as NaN
    write_text_atomic(out, json.dumps(_nan_to_null(datalist), indent=1, allow_nan=False))
    return out


def _nan_to_null(datalist: dict) -> dict:
    """``datalist`` with every NaN label value as None (strict JSON has no NaN)."""
    out = {k: v for k, v in datalist.items()}
    for key in SPLITS:
        out[key] = [{**it, "label": [None if isinstance(v, float) and v != v else v for v in it["label"]]}
                    if any(isinstance(v, float) and v != v for v in it["label"]) else it for it in datalist[key]]
    return out


def load_datalist(path: str | Path, check_files: bool = True) -> dict:
    """Read and validate a datalist (from :func:`write_datalist` or hand-made in the same shape).

    Checked: UTF-8 JSON, the ``labels`` and split keys, every item's ``image``, ``label`` (one 0/1 or null per label;
    null, an unknown label, is read as NaN)
    and ``patient``, that the image files exist and are regular files (``check_files``), that no image is listed
    twice and that no patient is in two splits.
    Relative image paths are taken from the datalist's folder, as MONAI's ``load_decathlon_datalist`` does.

    Raises:
        MaiAugError: naming the file, the split and item, and the offending value.
    """
    path = Path(path)
    try:
        datalist = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MaiAugError(f"`datalist` {path}: file not found") from None
    except UnicodeDecodeError as e:
        raise MaiAugError(f"`datalist` {path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except OSError as e:
        raise MaiAugError(f"`datalist` {path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise MaiAugError(f"`datalist` {path}: not valid JSON ({e})") from None
    if not isinstance(datalist, dict):
        raise MaiAugError(f"`datalist` {path}: expected a JSON object with keys labels, {', '.join(SPLITS)}")
    for key in ("labels", *SPLITS):
        if key not in datalist:
            raise MaiAugError(f"`datalist` {path}: missing key {key!r}")
    labels = datalist["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels):
        raise MaiAugError(f"`datalist` {path}: 'labels' must be a non-empty list of finding names, got {labels!r}")
    for key in SPLITS:
        if not isinstance(datalist[key], list):
            raise MaiAugError(f"`datalist` {path}: {key!r} must be a list of items")
        for i, item in enumerate(datalist[key]):
            _check_item(item, len(labels), f"`datalist` {path}: {key} item {i}")
            _absolute_image(item, path.parent)
    if check_files:
        _check_files(datalist, path)
    _check_duplicates(datalist, path)
    _check_patient_overlap(datalist, path)
    return datalist


def _check_item(item: Any, n_labels: int, where: str) -> None:
    """One datalist item: a dict with ``image`` (path), ``label`` (``n_labels`` × 0/1) and ``patient`` (integer)."""
    if not isinstance(item, dict):
        raise MaiAugError(f"{where}: expected an object with image, label and patient, got {item!r:.80}")
    for key in ("image", "label", "patient"):
        if key not in item:
            raise MaiAugError(f"{where}: no {key!r} (items need image, label and patient)")
    if not isinstance(item["image"], str) or not item["image"]:
        raise MaiAugError(f"{where}: 'image' must be a file path, got {item['image']!r}")
    label = item["label"]
    if not isinstance(label, list) or len(label) != n_labels:
        size = len(label) if isinstance(label, list) else type(label).__name__
        raise MaiAugError(f"{where} ({item['image']}): 'label' has {size} values; expected {n_labels} (one per label)")
    if any(v is not None and (isinstance(v, bool) or v not in (0, 1)) for v in label):
        raise MaiAugError(f"{where} ({item['image']}): 'label' must hold 0/1 values (or null: unknown), got {label!r}")
    item["label"] = [float("nan") if v is None else v for v in label]
    if isinstance(item["patient"], bool) or not isinstance(item["patient"], int | str):
        raise MaiAugError(f"{where} ({item['image']}): 'patient' must be an id, got {item['patient']!r}")


def _absolute_image(item: dict, base: Path) -> None:
    image = Path(item["image"])
    if not image.is_absolute():
        item["image"] = str((base / image).resolve())


def _check_files(datalist: dict, path: Path) -> None:
    """Every image is an existing regular file (a folder or a device is named as such, not as missing)."""
    bad = [(key, it["image"], problem) for key in SPLITS for it in datalist[key]
           if (problem := file_problem(it["image"])) not in (None, "empty file (0 bytes)")]  # empty: named later
    if bad:
        total = sum(len(datalist[key]) for key in SPLITS)
        key, image, problem = bad[0]
        if all(p == "file not found" for *_, p in bad):
            raise MaiAugError(f"`datalist` {path}: {len(bad)} of {total} image files are missing, e.g. {image} ({key})")
        raise MaiAugError(f"`datalist` {path}: {len(bad)} of {total} image files are missing or not files, e.g. "
                          f"{image} ({key}: {problem})")


def first_repeat(images: Sequence[str]) -> tuple[int, int] | None:
    """Positions of the first image path listed twice (compared normalised), or None.

    Every way in refuses a repeated image (a datalist, a dataset table): with conflicting labels it would be
    trained on both, in two splits it leaks, and even with the same labels it silently counts twice.
    """
    seen: dict[str, int] = {}
    for j, image in enumerate(images):
        i = seen.setdefault(os.path.normpath(image), j)
        if i != j:
            return i, j
    return None


def _check_duplicates(datalist: dict, path: Path) -> None:
    """Refuse a datalist that lists an image twice (:func:`first_repeat`), naming both places."""
    places = [(key, i, item) for key in SPLITS for i, item in enumerate(datalist[key])]
    repeat = first_repeat([item["image"] for *_, item in places])
    if repeat is None:
        return
    (key_a, i_a, a), (key_b, i_b, b) = places[repeat[0]], places[repeat[1]]
    conflict = "" if _same_label(a["label"], b["label"]) else " with conflicting labels"
    raise MaiAugError(f"`datalist` {path}: {b['image']} is listed twice{conflict} ({key_a} item {i_a} and "
                      f"{key_b} item {i_b}); list each image once")


def _check_table_duplicates(table: DatasetTable) -> None:
    """Refuse a dataset table that lists an image twice (:func:`first_repeat`; e.g. in both of CheXpert's CSVs)."""
    repeat = first_repeat(table.images)
    if repeat is not None:
        i, j = repeat
        raise MaiAugError(f"{table.source}: image {table.names[j]!r} is listed twice (as {table.names[i]!r} too: "
                          f"{table.images[j]}); list each image once")


def _same_label(a: list, b: list) -> bool:
    """Equal label lists, an unknown (NaN) matching an unknown."""
    return all(x == y or (x != x and y != y) for x, y in zip(a, b))


def _check_patient_overlap(datalist: dict, path: Path) -> None:
    """Refuse a datalist whose splits share a patient: its test AUC would be inflated by leakage."""
    seen: dict[str, set] = {key: {str(it["patient"]) for it in datalist[key]} for key in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = sorted(seen[a] & seen[b])
            if shared:
                raise MaiAugError(f"`datalist` {path}: {len(shared)} patient(s) in both {a} and {b} "
                                  f"(patient leakage): {', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''}")


def label_frequencies(items: Sequence[dict], n_labels: int = len(FINDINGS)) -> tuple[np.ndarray, np.ndarray]:
    """Per-finding positive and negative frequencies of a split (fractions of its images where the label is known).

    The weighted loss uses them: positives weigh ``freq_neg`` and negatives ``freq_pos``, so each finding's
    positive and negative halves contribute equally.
    """
    if not items:
        return np.zeros(n_labels), np.zeros(n_labels)
    labels = np.asarray([it["label"] for it in items], dtype=np.float64)
    with warnings.catch_warnings():  # a label unknown in every image has no frequency: 0, floored by the loss
        warnings.simplefilter("ignore", RuntimeWarning)
        pos = np.nan_to_num(np.nanmean(labels, axis=0), nan=0.0)  # over the images where the label is known
    return pos, 1.0 - pos


def split_table(datalist: dict) -> pd.DataFrame:
    """Images, patients and positives per finding for each split, as a table (rows: quantities, columns: splits)."""
    rows: dict[str, dict[str, int]] = {}
    for key in SPLITS:
        items = datalist[key]
        labels = np.asarray([it["label"] for it in items], dtype=np.float64).reshape(-1, len(datalist["labels"]))
        col = {"images": len(items), "patients": len({it["patient"] for it in items})}
        col.update({name: int(v) for name, v in zip(datalist["labels"], np.nansum(labels, 0))})
        unknown = int(np.isnan(labels).sum())
        if unknown:
            col["unknown labels"] = unknown
        rows[key] = col
    if any("unknown labels" in col for col in rows.values()):
        for col in rows.values():
            col.setdefault("unknown labels", 0)
    return pd.DataFrame(rows)
