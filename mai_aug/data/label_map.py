"""Findings matched by name between a run's outputs and another dataset's labels (``evaluate --external``).

Built in: NIH ChestX-ray14 <-> CheXpert for the findings both define alike (Atelectasis, Cardiomegaly,
Consolidation, Edema, Effusion = Pleural Effusion, Pneumonia, Pneumothorax), in either direction; an NIH run's Mass
and Nodule -> CheXpert's Lung Lesion only when asked (``lesion``), since Lung Lesion is wider than either (the
other way, one Lung Lesion output cannot tell Mass from Nodule, so it is not offered). Findings with the same
name in both datasets match each other. A user's map (YAML, read as data) replaces the built-in one:

    # external finding: the run's finding, or a list of them (scored by the highest of their outputs)
    Pleural Effusion: Effusion
    Lung Lesion: [Mass, Nodule]

Findings without a counterpart are listed (:attr:`Matching.run_only`, :attr:`Matching.external_only`), never
silently dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mai_aug.core.errors import MaiAugError
from mai_aug.core.user_yaml import read_user_yaml

#: NIH name -> CheXpert observation, for the findings both datasets define alike (Irvin et al. 2019).
NIH_TO_CHEXPERT: dict[str, str] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Effusion": "Pleural Effusion", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
}
#: CheXpert's Lung Lesion and the NIH findings it covers (matched only with ``lesion``: the definitions differ).
LESION: tuple[str, tuple[str, ...]] = ("Lung Lesion", ("Mass", "Nodule"))


@dataclass(frozen=True)
class FindingMatch:
    """One external finding and the run's output(s) that score it.

    Attributes:
        name: the external finding's name (the name it is reported under).
        external: its column in the external dataset's labels.
        run: the run's output columns; with more than one, the finding is scored by their highest output.
    """

    name: str
    external: int
    run: tuple[int, ...]


@dataclass(frozen=True)
class Matching:
    """The external findings a run can be scored on, and what was left out on either side."""

    matches: tuple[FindingMatch, ...]
    run_names: tuple[str, ...]
    external_names: tuple[str, ...]
    source: str  # "built-in NIH <-> CheXpert", with "+ Lung Lesion", or the user's file

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matches]

    @property
    def run_only(self) -> list[str]:
        """The run's findings no external finding is scored by."""
        used = {j for m in self.matches for j in m.run}
        return [n for j, n in enumerate(self.run_names) if j not in used]

    @property
    def external_only(self) -> list[str]:
        """The external findings without a counterpart among the run's."""
        used = {m.external for m in self.matches}
        return [n for j, n in enumerate(self.external_names) if j not in used]

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, matches) scores from the run's (n, findings) outputs: each match's output, or the highest of them."""
        return np.stack([probabilities[:, list(m.run)].max(axis=1) for m in self.matches], axis=1)

    def external_labels(self, labels: np.ndarray) -> np.ndarray:
        """(n, matches) of the external dataset's (n, findings) labels."""
        return np.asarray(labels, dtype=np.float64)[:, [m.external for m in self.matches]]

    def run_labels(self, labels: np.ndarray) -> np.ndarray:
        """(n, matches) labels of the run's own datalist: a match of several findings is positive where any is (NaN
        where none is positive and one is unknown)."""
        labels = np.asarray(labels, dtype=np.float64)
        return np.stack([_any_positive(labels[:, list(m.run)]) for m in self.matches], axis=1)

    def record(self) -> dict:
        """What ``meta.json`` records: the source, each match by name, the findings left out on each side."""
        return {"source": self.source,
                "matched": {m.name: [self.run_names[j] for j in m.run] for m in self.matches},
                "run_only": self.run_only, "external_only": self.external_only}

    def digest(self) -> str:
        """A short hash of :meth:`record`: an external output is current only for the same matching."""
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]


def _any_positive(columns: np.ndarray) -> np.ndarray:
    """1 where any column is positive, else NaN where one is unknown, else 0."""
    positive = (columns == 1).any(axis=1)
    unknown = np.isnan(columns).any(axis=1)
    return np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))


def built_in_pairs(lesion: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """(external name, run names) pairs of the built-in map in both directions (NIH run on CheXpert and back); with
    ``lesion``, Lung Lesion scored by an NIH run's Mass and Nodule."""
    pairs = [(chexpert, (nih,)) for nih, chexpert in NIH_TO_CHEXPERT.items()]
    pairs += [(nih, (chexpert,)) for nih, chexpert in NIH_TO_CHEXPERT.items()]
    return pairs + [LESION] if lesion else pairs


def match_findings(run_names: Sequence[str], external_names: Sequence[str], label_map: str | Path | None = None,
                   lesion: bool = False) -> Matching:
    """The matching of a run's findings to an external dataset's.

    Args:
        run_names: the run's findings, in its output order.
        external_names: the external dataset's label names, in its column order.
        label_map: a user's YAML map (external finding -> run finding(s)); replaces the built-in map.
        lesion: with the built-in map, also score Lung Lesion by the highest of Mass and Nodule (and back).

    Raises:
        MaiAugError: the map is not a mapping of names to names of the two datasets, or nothing matches.
    """
    run_names, external_names = list(run_names), list(external_names)
    if label_map is not None:
        if lesion:
            raise MaiAugError(f"`label_map` {label_map} and `lesion`: the map says which findings match; "
                              "write Lung Lesion into it instead")
        pairs, source = read_label_map(label_map, run_names, external_names), str(label_map)
    else:
        pairs = built_in_pairs(lesion) + [(n, (n,)) for n in external_names if n in run_names]
        source = "built-in NIH <-> CheXpert" + (" + Lung Lesion" if lesion else "")
    matches, seen = [], set()
    for external, run in pairs:
        if external in external_names and external not in seen and all(r in run_names for r in run):
            seen.add(external)
            matches.append(FindingMatch(external, external_names.index(external),
                                        tuple(run_names.index(r) for r in run)))
    matches.sort(key=lambda m: m.external)
    if lesion and LESION[0] not in seen:
        raise MaiAugError(f"`lesion`: scores CheXpert's {LESION[0]} by an NIH run's {' and '.join(LESION[1])}; this run "
                          f"or this external set has no such findings")
    if not matches:
        raise MaiAugError(f"no finding of the run ({', '.join(run_names)}) matches one of the external dataset "
                          f"({', '.join(external_names)}); pass `label_map` FILE.yaml")
    return Matching(tuple(matches), tuple(run_names), tuple(external_names), source)


def read_label_map(path: str | Path, run_names: Sequence[str], external_names: Sequence[str]
                   ) -> list[tuple[str, tuple[str, ...]]]:
    """A user's map as (external name, run names) pairs, each name checked against its dataset's."""
    label = f"`label_map` {path}"
    data = read_user_yaml(path, label)
    if not isinstance(data, dict) or not data:
        raise MaiAugError(f"{label}: expected a mapping of external findings to the run's findings")
    pairs = []
    for external, run in data.items():
        if external not in external_names:
            raise MaiAugError(f"{label}: {external!r} is not a finding of the external dataset "
                              f"({', '.join(external_names)})")
        run = [run] if isinstance(run, str) else run
        if not isinstance(run, list) or not run or not all(isinstance(r, str) for r in run):
            raise MaiAugError(f"{label}: {external!r}: expected a finding of the run or a list of them, got {run!r}")
        for name in run:
            if name not in run_names:
                raise MaiAugError(f"{label}: {external!r}: {name!r} is not a finding of the run "
                                  f"({', '.join(run_names)})")
        pairs.append((external, tuple(run)))
    return pairs
