"""Values several layers share: the choices of settings (each tuple written once) and the default resample count.

Plain data, importable by every layer (the command line reads them before any command runs, without torch).
"""

from __future__ import annotations

#: View positions a chest X-ray may have (NIH's ``View Position``; ``--views``).
VIEWS: tuple[str, ...] = ("PA", "AP")
#: CheXpert's policies for its uncertain (-1) labels (``--uncertain``).
UNCERTAIN_POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")
#: Where decoded images are kept (``--cache``): the shared image store, or nowhere (decoded every time).
CACHE_MODES: tuple[str, ...] = ("store", "none")
#: Where the regime runs in training (``--augment-on``, mai_aug/transforms/batched.py).
AUGMENT_ON: tuple[str, ...] = ("auto", "loader", "device")
#: Input channels a network may take (``--in-channels``).
IN_CHANNELS: tuple[int, ...] = (1, 3)
#: How a dataset is split (``--split``): always by patient, at random or by the dataset's official test list.
SPLIT_MODES: tuple[str, ...] = ("patient", "official")
#: The phantom's test-time acquisition shift (``phantom --test-shift``).
TEST_SHIFTS: tuple[str, ...] = ("none", "site")
#: The dataset layout the phantom writes (``phantom --layout``): NIH ChestX-ray14's or CheXpert-v1.0's.
PHANTOM_LAYOUTS: tuple[str, ...] = ("nih", "chexpert")
#: ``--dataset``'s choices on the command line: auto and the built-in adapters (mai_aug/data/datasets).
DATASETS: tuple[str, ...] = ("auto", "nih", "chexpert", "csv")
#: Bootstrap resamples of patients where none is asked for (``--bootstrap``, every ``n_boot`` default).
DEFAULT_BOOTSTRAP = 1000
#: Where a study's runs go (``compare --executor``), the default first: this process, Ray tasks, a SLURM job array.
EXECUTORS = ("local", "ray", "slurm")
#: submitit's clusters for ``--executor slurm`` (``--slurm-cluster``): SLURM itself, or its local executor.
SLURM_CLUSTERS = ("slurm", "local")
#: ``--compile``: no torch.compile, its default mode, or reduce-overhead (CUDA graphs on CUDA).
COMPILE_MODES = ("off", "default", "reduce-overhead")
#: ``evaluate --external-split``: every image of the external dataset, or its official test set only.
EXTERNAL_SPLITS = ("all", "official")
