"""The one inference path: MONAI's SupervisedEvaluator as training validation, ``evaluate`` and ``predict`` build it.

:func:`make_evaluator` is the single construction of the evaluator (device, PrepareBatch, AMP, no decollation);
training validation adds its metric and handlers, :func:`predict_probabilities` a handler collecting the outputs.
The exported bundle cannot import mai_aug at run time: its ``configs/inference.yaml`` (``mai_aug.bundle.inference``)
spells the same evaluator settings in MONAI's config syntax.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.utils import CommonKeys
from torch.utils.data import DataLoader

from mai_aug.core.errors import EngineTermination
from mai_aug.engine.precision import engine_precision
from mai_aug.transforms.batched import BatchedStage
from mai_aug.transforms.shifts import BatchShiftFn


class PrepareBatch:
    """Move a batch to the device; repeat the grayscale channel for a 3-channel (ImageNet) network.

    With a batched ``stage`` (training on the device path), the batch arrives as cached uint8 images (pinned on
    CUDA, copied non-blocking) and the stage turns it into the augmented float input on the device, with draws
    seeded by the (epoch, iteration) that :meth:`attach` records. The evaluator's PrepareBatch has no stage; a
    robustness sweep's has a ``shift`` of the batch (its items carry their ``index`` in the test split).
    """

    def __init__(self, in_channels: int = 1, stage: BatchedStage | None = None,
                 shift: BatchShiftFn | None = None) -> None:
        self.in_channels, self.stage, self.shift = in_channels, stage, shift
        self.position = (0, 0)  # (epoch, iteration) of the batch being prepared

    def attach(self, engine: Engine) -> None:
        """Record each iteration's position before its batch is prepared (what seeds the stage's draws)."""
        engine.add_event_handler(Events.ITERATION_STARTED, self._record)

    def _record(self, engine: Engine) -> None:
        self.position = (engine.state.epoch, engine.state.iteration)

    def __call__(self, batch: dict, device: torch.device | None = None, non_blocking: bool = False, **kwargs):
        image = batch["image"].to(device=device, non_blocking=non_blocking)
        label = batch["label"].to(device=device, non_blocking=non_blocking)
        if self.stage is not None:
            image = self.stage(image, *self.position)
        if self.shift is not None:  # a robustness level: the whole batch shifted on the device
            image = self.shift(image, batch["index"])
        if self.in_channels == 3 and image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        return image, label


def make_evaluator(network: torch.nn.Module, loader: Iterable, device: torch.device, amp: bool, in_channels: int,
                   key_val_metric: dict | None = None, val_handlers: Sequence | None = None,
                   amp_dtype: torch.dtype | None = None, shift: BatchShiftFn | None = None) -> SupervisedEvaluator:
    """MONAI's SupervisedEvaluator as every mai_aug inference runs it.

    Args:
        network: the network (in eval mode while the evaluator runs, under ``torch.no_grad``).
        loader: batches of ``{"image", "label"}`` (a label of zeros where none is known).
        device: where the network runs; batches are copied there non-blocking on CUDA.
        amp: autocast (the run's resolved ``amp``): float16 on CUDA, bfloat16 on CPU (see ``engine.precision``).
        in_channels: the network's input channels (3: the grayscale channel repeated).
        key_val_metric: the metric validation tracks (its best value picks ``best.pt``).
        val_handlers: handlers attached to the evaluator.
        amp_dtype: the autocast dtype where not the device's default (a run trained in another precision).
        shift: a test-time shift applied to each batch on the device (``transforms.shifts.build_batch_shift``).
    """
    evaluator = SupervisedEvaluator(
        device=device, val_data_loader=loader, network=network, non_blocking=device.type == "cuda",
        prepare_batch=PrepareBatch(in_channels, shift=shift),  # never the batched augmentation stage
        key_val_metric=key_val_metric, val_handlers=val_handlers, decollate=False,
        **engine_precision(device, amp, amp_dtype),
    )
    evaluator.logger.addFilter(EngineTermination())  # the error is re-raised and said once by the caller
    return evaluator


class _Collect:
    """Sigmoid probabilities of each iteration's logits, in float64 (float32 sigmoids tie distinct logits)."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def __call__(self, engine: Engine) -> None:
        logits = torch.as_tensor(engine.state.output[CommonKeys.PRED])
        self.batches.append(torch.sigmoid(logits.double()).cpu())


def predict_probabilities(network: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool,
                          in_channels: int, n_outputs: int, amp_dtype: torch.dtype | None = None,
                          shift: BatchShiftFn | None = None) -> np.ndarray:
    """(n, ``n_outputs``) sigmoid probabilities of the network on every batch of ``loader`` (each shifted on the
    device by ``shift`` when given), in order."""
    if len(loader) == 0:
        return np.zeros((0, n_outputs))
    evaluator = make_evaluator(network, loader, device, amp, in_channels, amp_dtype=amp_dtype, shift=shift)
    collect = _Collect()
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.run()
    return torch.cat(collect.batches).numpy()
