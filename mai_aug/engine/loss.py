"""Multi-label loss: BCE with logits, optionally class-balanced per finding, masked where a label is unknown."""

from __future__ import annotations

import numpy as np
import torch


class WeightedBCEWithLogits(torch.nn.Module):
    """The weighted loss of the AI-for-Medicine course: per finding, positives weigh the negative frequency and
    negatives the positive frequency, so both classes contribute equally whatever the prevalence.

    ``loss = mean(-(w_pos * y * log p + w_neg * (1 - y) * log(1 - p)))`` with ``w_pos = freq_neg``,
    ``w_neg = freq_pos``: torch's ``BCEWithLogitsLoss(pos_weight=w_pos / w_neg)`` scaled by ``w_neg``.

    A NaN target (an unknown label, CheXpert's uncertain ones under ``--uncertain ignore``) is masked: it adds
    nothing to the sum nor to the count the mean divides by, and its logit gets no gradient. Hand-written because
    neither torch's nor MONAI's BCE takes a mask; with no NaN this is exactly the plain (weighted) mean.

    Args:
        freq_pos: (k,) positive frequency of each finding in the training split; None for plain BCE.
        min_freq: floor for frequencies, so a finding without training positives cannot make the weight infinite.
    """

    def __init__(self, freq_pos: np.ndarray | None = None, min_freq: float = 1e-3) -> None:
        super().__init__()
        if freq_pos is None:
            self.register_buffer("w_pos", None)
            self.register_buffer("w_neg", None)
        else:
            pos = torch.as_tensor(np.clip(np.array(freq_pos, dtype=np.float64), min_freq, 1 - min_freq), dtype=torch.float32)
            self.register_buffer("w_pos", 1 - pos)
            self.register_buffer("w_neg", pos)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        known = ~torch.isnan(target)
        target = torch.where(known, target, torch.zeros_like(target))  # any value: its term is masked below
        pos_weight = None if self.w_pos is None else self.w_pos / self.w_neg
        per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight,
                                                                   reduction="none")
        if self.w_neg is not None:
            per = per * self.w_neg
        # where(), not a product: a masked term's value (even inf) and its gradient are dropped, never multiplied by 0
        per = torch.where(known, per, torch.zeros_like(per))
        return per.sum() / known.sum().clamp(min=1)
