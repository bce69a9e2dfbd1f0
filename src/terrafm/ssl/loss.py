"""DINO cross-entropy with TerraFM's dual centering (SPEC §4, paper §3.3).

The teacher target subtracts a mix of two exponential-moving-average centres of its own outputs,

    g_hat = g - alpha * c - (1 - alpha) * c_h,        P_t = softmax(g_hat / tau_t),

where ``c`` follows all teacher outputs and ``c_h`` only those of samples whose dominant land-cover
class is in the high-frequency set H (its update is skipped when a batch has none). Plain DINO is
the special case ``alpha = 1``. The loss is the cross-entropy ``-sum P_t log P_s`` averaged over the
batch, summed over all (teacher view, student view) pairs of *different* crops and divided by the
number of pairs. Centre updates are computed from sums and counts all-reduced over processes, so
any split of a batch over ranks gives the update of the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["DualCenteredDINOLoss", "LossOutput", "high_frequency_classes"]


def high_frequency_classes(counts: Mapping[int, int | float]) -> list[int]:
    """The set H: classes whose share of the training set exceeds ``1 / K``.

    ``K`` is the number of classes present (count > 0) (SPEC §4 **choice**).

    Args:
        counts: class code -> number (or weight) of training samples.
    """
    present = {int(c): float(n) for c, n in counts.items() if n > 0}
    total = sum(present.values())
    if not present:
        return []
    k = len(present)
    return sorted(c for c, n in present.items() if n / total > 1.0 / k)


@dataclass
class LossOutput:
    """A loss evaluation, with the centre values to commit if the step is accepted."""

    loss: torch.Tensor  # () scalar
    teacher_entropy: torch.Tensor  # () mean entropy of the teacher distributions (nats)
    new_center: torch.Tensor  # (1, K)
    new_center_h: torch.Tensor  # (1, K)
    h_count: int  # samples (x teacher views) of high-frequency classes, over all ranks


class DualCenteredDINOLoss(nn.Module):
    """Multi-crop DINO loss with the dual centre.

    Args:
        out_dim: number of prototypes ``K``.
        high_freq_classes: land-cover codes of H.
        alpha: weight of the global centre ``c`` (0.8); ``1 - alpha`` goes to ``c_h``.
        center_momentum: EMA momentum of both centres (0.9).
        student_temp: student temperature (0.1).
        dual: False gives plain DINO centering (``alpha = 1``, ``c_h`` unused): the ablation.
    """

    center: torch.Tensor
    center_h: torch.Tensor
    high_freq: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        high_freq_classes: Iterable[int] = (),
        alpha: float = 0.8,
        center_momentum: float = 0.9,
        student_temp: float = 0.1,
        dual: bool = True,
    ):
        super().__init__()
        self.alpha = float(alpha) if dual else 1.0
        self.dual = dual
        self.center_momentum = center_momentum
        self.student_temp = student_temp
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center_h", torch.zeros(1, out_dim))
        self.register_buffer(
            "high_freq", torch.tensor(sorted(set(high_freq_classes)), dtype=torch.long)
        )

    # ------------------------------------------------------------------ pieces
    def teacher_probs(self, teacher_out: torch.Tensor, temp: float) -> torch.Tensor:
        """Softmax of the dual-centred teacher logits: (T * B, K) -> (T * B, K)."""
        g = teacher_out.float()
        g_hat = g - self.alpha * self.center - (1.0 - self.alpha) * self.center_h
        return F.softmax(g_hat / temp, dim=-1)

    @torch.no_grad()
    def centre_update(
        self, teacher_out: torch.Tensor, landcover: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """New values of ``c`` and ``c_h`` (not yet stored) from this step's teacher logits.

        Args:
            teacher_out: (T * B, K) raw teacher logits, view-major.
            landcover: (B,) land-cover code of each sample.

        Returns:
            ``(c_new (1, K), c_h_new (1, K), n_h)``; ``c_h_new`` equals ``c_h`` when no sample of
            H is in the batch on any rank.
        """
        g = teacher_out.detach().float()  # (T * B, K)
        views = g.shape[0] // landcover.shape[0]
        lc = landcover.to(g.device).repeat(views)  # (T * B,)
        in_h = torch.isin(lc, self.high_freq.to(g.device)).to(g.dtype)  # (T * B,)
        # One collective: [sum over all, count, sum over H, count over H].
        packed = torch.cat(
            [
                g.sum(0),
                g.new_tensor([g.shape[0]]),
                (g * in_h[:, None]).sum(0),
                in_h.sum().reshape(1),
            ]
        )  # (2K + 2,)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed)
        k = g.shape[1]
        total, n = packed[:k], packed[k]
        total_h, n_h = packed[k + 1 : 2 * k + 1], packed[2 * k + 1]
        m = self.center_momentum
        c_new = self.center * m + (total / n)[None] * (1 - m)
        c_h_new = self.center_h.clone()
        if self.dual and n_h.item() > 0:
            c_h_new = self.center_h * m + (total_h / n_h)[None] * (1 - m)
        return c_new, c_h_new, int(n_h.item())

    @torch.no_grad()
    def commit(self, out: LossOutput) -> None:
        """Store the centre values of an accepted step."""
        self.center.copy_(out.new_center)
        self.center_h.copy_(out.new_center_h)

    # ------------------------------------------------------------------ loss
    def forward(
        self,
        student_out: torch.Tensor,
        teacher_out: torch.Tensor,
        landcover: torch.Tensor,
        teacher_temp: float,
        n_student_views: int,
        n_teacher_views: int = 2,
    ) -> LossOutput:
        """Loss over all pairs of different crops.

        Student view ``i < n_teacher_views`` is the same crop as teacher view ``i`` (with its own
        sensor draw), so that pair is skipped; the rest are local crops.

        Args:
            student_out: (V_s * B, K) student logits, view-major.
            teacher_out: (V_t * B, K) teacher logits, view-major.
            landcover: (B,) land-cover codes (for ``c_h``).
            teacher_temp: teacher temperature of this step.
            n_student_views: ``V_s``.
            n_teacher_views: ``V_t``.
        """
        s = (student_out.float() / self.student_temp).chunk(n_student_views)  # V_s x (B, K)
        log_ps = [F.log_softmax(x, dim=-1) for x in s]
        pt = self.teacher_probs(teacher_out.detach(), teacher_temp).chunk(n_teacher_views)
        total = student_out.new_zeros((), dtype=torch.float32)
        pairs = 0
        for iq, q in enumerate(pt):
            for v, lp in enumerate(log_ps):
                if v == iq:
                    continue
                total = total + torch.sum(-q * lp, dim=-1).mean()
                pairs += 1
        if pairs == 0:
            raise ValueError("DINO loss needs at least two different views")
        p_all = torch.cat(pt)  # (V_t * B, K)
        entropy = -(p_all * torch.log(p_all.clamp_min(1e-12))).sum(-1).mean()
        c_new, c_h_new, n_h = self.centre_update(teacher_out, landcover)
        return LossOutput(total / pairs, entropy.detach(), c_new, c_h_new, n_h)
