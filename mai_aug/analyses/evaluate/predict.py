"""``mai-aug predict``: a trained run's checkpoint applied to image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mai_aug.analyses.calibration.run import load_calibration
from mai_aug.analyses.trained_run import TrainedRun
from mai_aug.core.errors import MaiAugError, first_line, wrapped_message
from mai_aug.core.files import write_text_atomic
from mai_aug.core.preflight import require_writable_file
from mai_aug.data.images import check_image_headers


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path | None = None,
                  checkpoint: str = "best", device: str = "auto", trust: bool | None = None) -> pd.DataFrame:
    """Per-finding outputs for image files; written to ``out`` as CSV when given.

    Calibrated where the run's ``calibration.json`` was fitted for this checkpoint, else the network's sigmoid
    outputs; ``frame.attrs["calibration"]`` is the line that says which.

    Each file is checked by its content first (:func:`~mai_aug.data.images.check_image_headers`): a folder, a
    text file or a DICOM is named in one line before the network is loaded.
    """
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise MaiAugError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    check_image_headers([str(p) for p in images])
    if out is not None:
        require_writable_file(out, "`out`")  # before inference, not after it
    run = TrainedRun(run_dir, checkpoint, device, trust)
    calibration = load_calibration(run.run_dir, run.checkpoint, run.names)  # a broken file stops before inference
    try:
        probs = run.predict([{"image": str(Path(p).resolve())} for p in images], batch_size=16, stored=False)
    except RuntimeError as e:
        message = wrapped_message(e)  # the file and the cause, from mai_aug.data.images.NameBadImage
        raise MaiAugError(message or f"cannot read one of the images: {first_line(e)}") from None
    frame = pd.DataFrame(calibration(probs), columns=run.names)
    frame.insert(0, "image", [str(p) for p in images])
    if out is not None:
        write_text_atomic(Path(out), frame.to_csv(index=False, float_format="%.6f"))
    frame.attrs["calibration"] = calibration.note
    return frame
