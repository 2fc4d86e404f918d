"""The phantom cache of ``mai-aug compare``: one generated phantom per distinct spec and phantom code, reused."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import mai_aug.data.phantom as phantom_module
from mai_aug.core.progress import Progress
from mai_aug.data.phantom import PhantomSpec, default_workers, write_phantom

#: Written into a phantom's folder when its generation has finished (holds the spec).
COMPLETE_FILE = "COMPLETE"


def phantom_folder(spec: dict[str, Any], cache_dir: Path) -> Path:
    """Where the phantom of ``spec`` lives in the cache: one folder per distinct spec and phantom code.

    The code is part of the key, so a changed phantom generator never serves images drawn by the old one.
    """
    code = Path(phantom_module.__file__).read_bytes()
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode() + code).hexdigest()[:10]
    return cache_dir / "phantom" / f"n{spec.get('n', 3000)}-{spec.get('size', 256)}px-{key}"


def ensure_phantom(spec: dict[str, Any], cache_dir: Path, quiet: bool = False) -> Path:
    """Generate the phantom once per spec into the cache folder, or reuse it."""
    folder = phantom_folder(spec, cache_dir)
    if (folder / COMPLETE_FILE).is_file():
        return folder
    print(f"generating the phantom dataset into {folder} (once)", file=sys.stderr)
    phantom = PhantomSpec(out=folder, **spec)
    write_phantom(phantom, workers=default_workers(), progress=None if quiet else Progress("phantom", phantom.n),
                  overwrite=True)  # the cache's own folder: an interrupted generation is redone
    (folder / COMPLETE_FILE).write_text(json.dumps(spec) + "\n")
    return folder
