"""FDA's multi-band transfer: one net that averages the class probabilities of trained nets.

FDA (Yang & Soatto 2020, evaluation_multi.py) trains three nets, at beta 0.01, 0.05 and 0.09,
and labels each frame with the argmax of their softmax outputs averaged with weight 1/3 each.
`ProbabilityAverage` is that average as one module, so an ensemble is a model folder like any
other (pipeline.models.model_folder) and everything that reads model folders, evaluation,
`sim2real-segment` and the logged MLflow model, runs it unchanged.

It returns the averaged probabilities themselves, not logits: everything that reads a model
folder's output takes the argmax only, and the evaluate stage resizes the output to label size
(bilinear) before the argmax, so it resizes the probabilities as FDA does. Resizing their log
instead would relabel up to a tenth of the pixels of a noisy frame. FDA resizes with
align_corners=True, the evaluate stage (for every variant) with False; under sliding windows the
windows' probabilities are averaged where they overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ProbabilityAverage(nn.Module):
    """(B, 3, H, W) normalised images -> (B, C, H, W) mean of the members' softmax (FDA weighs
    its three nets 0.3333, 0.3333 and 0.3334; here each is exactly 1/3)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            probabilities = member(x).float().softmax(dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return total / len(self.members)


def class_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) class probabilities of a net (softmax of its logits) or of an ensemble
    (its output already is)."""
    out = model(x).float()
    return out if isinstance(model, ProbabilityAverage) else out.softmax(dim=1)
