"""DINO cross-entropy with TerraFM's dual centering (docs/design.md, "Objective", paper §3.3).

The teacher target subtracts a mix of two exponential-moving-average centres of its own outputs,

    g_hat = g - alpha * c - (1 - alpha) * c_h,        P_t = softmax(g_hat / tau_t),

where ``c`` follows all teacher outputs and ``c_h`` only those of samples whose dominant land-cover
class is in the high-frequency set H (its update is skipped when a batch has none). Plain DINO is
the special case ``alpha = 1``. The loss is the cross-entropy ``-sum P_t log P_s`` averaged over the
batch, summed over all (teacher view, student view) pairs of *different* crops and divided by the
number of pairs. Centre updates are computed from sums and counts all-reduced over processes, so
any split of a batch over ranks gives the update of the whole batch.

Beyond the paper, and off unless a config turns them on (docs/pretraining.md, "Masked patch
distillation and KoLeo"): :class:`PatchDistillationLoss`, iBOT-style masked patch-token
self-distillation whose teacher targets are dual-centred per patch with their own pair of centres,
and :func:`koleo_loss`, the Kozachenko-Leonenko nearest-neighbour spreading term on the student CLS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DualCenteredDINOLoss",
    "LossOutput",
    "PatchDistillationLoss",
    "PatchLossOutput",
    "high_frequency_classes",
    "koleo_loss",
]


def high_frequency_classes(counts: Mapping[int, int | float]) -> list[int]:
    """The set H: classes whose share of the training set exceeds ``1 / K``.

    ``K`` is the number of classes present (count > 0) (docs/design.md, "Objective" **choice**).

    Args:
        counts: class code -> number (or weight) of training samples.
    """
    present = {int(c): float(n) for c, n in counts.items() if n > 0}
    total = sum(present.values())
    if not present:
        return []
    k = len(present)
    return sorted(c for c, n in present.items() if n / total > 1.0 / k)


@torch.no_grad()
def _ema_centres(
    g: torch.Tensor,
    in_h: torch.Tensor,
    center: torch.Tensor,
    center_h: torch.Tensor,
    momentum: float,
    dual: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EMA of the mean of rows ``g`` (N, K) and of the rows with ``in_h`` (N,) set, all-reduced.

    Returns ``(c_new, c_h_new, n_h)``; ``c_h_new`` keeps ``center_h`` when no row is in H on any
    rank (or ``dual`` is off).
    """
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
    m = momentum
    c_new = center * m + (total / n)[None] * (1 - m)
    c_h_new = center_h.clone()
    if dual and n_h.item() > 0:
        c_h_new = center_h * m + (total_h / n_h)[None] * (1 - m)
    return c_new, c_h_new, n_h


class _DualCentres(nn.Module):
    """The pair of EMA centres ``c`` / ``c_h`` of one kind of teacher logit (CLS or patch), the
    set H, the dual-centred teacher softmax and the commit of accepted centre values."""

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

    def teacher_probs(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        """Softmax of the dual-centred teacher logits over the last axis (shape kept)."""
        g = teacher_logits.float()
        g_hat = g - self.alpha * self.center - (1.0 - self.alpha) * self.center_h
        return F.softmax(g_hat / temp, dim=-1)

    def in_h(self, landcover: torch.Tensor, views: int, device: torch.device) -> torch.Tensor:
        """(views * B,) float32 1/0: the view-major rows whose sample's class is in H."""
        lc = landcover.to(device).repeat(views)
        return torch.isin(lc, self.high_freq.to(device)).to(torch.float32)

    @torch.no_grad()
    def new_centres(
        self, teacher_logits: torch.Tensor, landcover: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New values of ``c`` and ``c_h`` (not yet stored) from one step's teacher logits.

        Args:
            teacher_logits: (V * B, K) or (V * B, P, K) raw teacher logits, view-major; every
                row of a sample (its CLS, or each of its P patches) counts towards ``c_h`` when
                the sample's class is in H.
            landcover: (B,) land-cover code of each sample.

        Returns:
            ``(c_new (1, K), c_h_new (1, K), n_h)``, ``n_h`` the rows in H over all ranks.
        """
        n, k = teacher_logits.shape[0], teacher_logits.shape[-1]
        g = teacher_logits.detach().float().reshape(-1, k)  # (V * B * P, K)
        in_h = self.in_h(landcover, n // landcover.shape[0], g.device)  # (V * B,)
        in_h = in_h.repeat_interleave(g.shape[0] // n)  # (V * B * P,)
        return _ema_centres(g, in_h, self.center, self.center_h, self.center_momentum, self.dual)

    @torch.no_grad()
    def commit(self, out: LossOutput | PatchLossOutput) -> None:
        """Store the centre values of an accepted step."""
        self.center.copy_(out.new_center)
        self.center_h.copy_(out.new_center_h)


@dataclass
class LossOutput:
    """A loss evaluation, with the centre values to commit if the step is accepted."""

    loss: torch.Tensor  # () scalar
    teacher_entropy: torch.Tensor  # () mean entropy of the teacher distributions (nats)
    new_center: torch.Tensor  # (1, K)
    new_center_h: torch.Tensor  # (1, K)
    h_count: int  # samples (x teacher views) of high-frequency classes, over all ranks
    # Diagnostics (collapse): mean KL(P_t || P_s) over the loss's pairs, and the entropy of the
    # batch-mean teacher distribution (log K when the batch spreads over all prototypes, 0 when
    # every sample picks the same one).
    kl: torch.Tensor | None = None
    teacher_batch_entropy: torch.Tensor | None = None


class DualCenteredDINOLoss(_DualCentres):
    """Multi-crop DINO loss with the dual centre.

    Args:
        out_dim: number of prototypes ``K``.
        high_freq_classes: land-cover codes of H.
        alpha: weight of the global centre ``c`` (0.8); ``1 - alpha`` goes to ``c_h``.
        center_momentum: EMA momentum of both centres (0.9).
        student_temp: student temperature (0.1).
        dual: False gives plain DINO centering (``alpha = 1``, ``c_h`` unused): the ablation.
        same_crop_pairs: also pair teacher view ``i`` with student view ``i`` (the same crop,
            each with its own sensor draw); off: only pairs of different crops, as DINO.
    """

    def __init__(
        self,
        out_dim: int,
        high_freq_classes: Iterable[int] = (),
        alpha: float = 0.8,
        center_momentum: float = 0.9,
        student_temp: float = 0.1,
        dual: bool = True,
        same_crop_pairs: bool = False,
    ):
        super().__init__(out_dim, high_freq_classes, alpha, center_momentum, student_temp, dual)
        self.same_crop_pairs = same_crop_pairs

    # ------------------------------------------------------------------ pieces

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
        c_new, c_h_new, n_h = self.new_centres(teacher_out, landcover)
        return c_new, c_h_new, int(n_h.item())

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
        ent_pairs = total.new_zeros(())
        pairs = 0
        with torch.no_grad():
            ent_q = [-(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean() for q in pt]
        for iq, q in enumerate(pt):
            for v, lp in enumerate(log_ps):
                if v == iq and not self.same_crop_pairs:
                    continue
                total = total + torch.sum(-q * lp, dim=-1).mean()
                ent_pairs = ent_pairs + ent_q[iq]
                pairs += 1
        if pairs == 0:
            raise ValueError("DINO loss needs at least two different views")
        p_all = torch.cat(pt)  # (V_t * B, K)
        entropy = -(p_all * torch.log(p_all.clamp_min(1e-12))).sum(-1).mean()
        with torch.no_grad():
            p_mean = p_all.mean(0)
            batch_entropy = -(p_mean * torch.log(p_mean.clamp_min(1e-12))).sum()
            kl = (total.detach() - ent_pairs) / pairs  # cross-entropy minus entropy, per pair
        c_new, c_h_new, n_h = self.centre_update(teacher_out, landcover)
        return LossOutput(total / pairs, entropy.detach(), c_new, c_h_new, n_h, kl, batch_entropy)


@dataclass
class PatchLossOutput:
    """A patch-distillation evaluation, with the patch centres to commit if the step is kept."""

    loss: torch.Tensor  # () scalar
    teacher_entropy: torch.Tensor  # () mean entropy of the teacher patch distributions (nats)
    kl: torch.Tensor  # () mean KL(P_t || P_s) over the masked patches
    masked: int  # masked patches in the batch (this rank)
    new_center: torch.Tensor  # (1, K_p)
    new_center_h: torch.Tensor  # (1, K_p)


class PatchDistillationLoss(_DualCentres):
    """Masked patch-token self-distillation with per-patch dual centering (beyond the paper).

    The teacher's patch logits (every patch of every global view) are centred with their own pair
    of centres, exactly as the CLS logits are by :class:`DualCenteredDINOLoss`:
    ``g - alpha c_p - (1 - alpha) c_p,h`` per patch, ``c_p`` the EMA of the mean patch logit over
    all patches and ``c_p,h`` over the patches of samples whose dominant class is in H. The loss
    of a global view is the mean over its masked patches of ``-sum P_t log P_s`` between the
    teacher's target and the student's prediction at the same position of the same crop (the
    student saw the patch masked, and may hold another sensor subset: the grid is shared); it is
    0 for a view without masked patches, and the loss is the mean over all global views.

    Args:
        out_dim: patch prototypes ``K_p``.
        high_freq_classes: land-cover codes of H.
        alpha: weight of ``c_p`` (``1 - alpha`` goes to ``c_p,h``).
        center_momentum: EMA momentum of both patch centres.
        student_temp: student temperature.
        dual: False: plain centering (``alpha = 1``).
    """

    def forward(
        self,
        student_masked: torch.Tensor,
        teacher_patch: torch.Tensor,
        token_masks: torch.Tensor,
        landcover: torch.Tensor,
        teacher_temp: float,
    ) -> PatchLossOutput:
        """Loss at the masked positions.

        Args:
            student_masked: (M, K_p) student logits at the set positions of ``token_masks``, in
                its row-major order.
            teacher_patch: (G * B, P, K_p) teacher logits of every patch, view-major.
            token_masks: (G * B, P) bool, the student's masks.
            landcover: (B,) land-cover codes (for ``c_p,h``).
            teacher_temp: teacher temperature of this step.
        """
        n, p, k = teacher_patch.shape
        if tuple(token_masks.shape) != (n, p):
            raise ValueError(f"token masks {tuple(token_masks.shape)} for teacher patches {(n, p)}")
        m = int(token_masks.sum())
        if student_masked.shape != (m, k):
            raise ValueError(
                f"student patch logits {tuple(student_masked.shape)}, expected {(m, k)}"
            )
        pt = self.teacher_probs(teacher_patch.detach(), teacher_temp)  # (N, P, K_p)
        q = pt[token_masks]  # (M, K_p)
        log_ps = F.log_softmax(student_masked.float() / self.student_temp, dim=-1)
        ce = torch.sum(-q * log_ps, dim=-1)  # (M,)
        view = torch.nonzero(token_masks)[:, 0]  # (M,) view-sample of each masked patch
        per_view = ce.new_zeros(n).index_add(0, view, ce)  # (N,)
        loss = (per_view / token_masks.sum(1).clamp_min(1)).mean()
        with torch.no_grad():
            ent = -(pt * torch.log(pt.clamp_min(1e-12))).sum(-1)  # (N, P)
            kl = (ce.detach() - ent[token_masks]).mean() if m else ce.new_zeros(())
            c_new, c_h_new, _ = self.new_centres(teacher_patch, landcover)
        return PatchLossOutput(loss, ent.mean(), kl, m, c_new, c_h_new)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo regulariser: ``-mean_i log ||z_i - z_nn(i)||`` of the L2-normalised rows ``z``.

    ``nn(i)`` is the nearest other row (largest cosine). It pushes each embedding away from its
    nearest neighbour in the batch, spreading the batch over the sphere (Sablayrolles et al.,
    2019; DINOv2 applies it per global view with weight 0.1).

    Args:
        x: (B, D) embeddings, B >= 2.
        eps: added to the norm before the L2 normalisation and to the distance before the log.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"KoLeo needs (B, D) embeddings with B >= 2, got {tuple(x.shape)}")
    z = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        sim = z @ z.T
        sim.fill_diagonal_(-3.0)  # never its own neighbour
        nn_idx = sim.argmax(1)  # (B,)
    d = torch.linalg.vector_norm(z - z[nn_idx], dim=-1)  # (B,)
    return -torch.log(d + eps).mean()
