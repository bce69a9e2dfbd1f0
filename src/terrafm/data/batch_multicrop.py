"""Multi-crop views of a whole batch at once, on the CPU or the accelerator (``data.augment_device``).

The per-sample path (:class:`terrafm.data.multicrop.MultiCrop`) normalises a full tile and resizes
each crop in the dataset, per sample. Here a batch arrives as the stored integers of each sample's
read window (the smallest box holding all of its crop boxes, see
:meth:`terrafm.data.multicrop.ViewPlan.bounds`) with its validity mask and its
:class:`~terrafm.data.multicrop.ViewPlan`; decoding to model units, z-scoring, masking of invalid
pixels, cropping, resizing, flipping and the sensor masks of contract B run batched on tensors.

Resizing is the same antialiased bilinear filter as ``torch.nn.functional.interpolate(...,
antialias=True, align_corners=False)`` (the per-sample path's), written as two weight matrices per
crop: ``out = R @ x @ Cᵀ`` with ``R`` (S, H) and ``C`` (S, W) zero outside the crop box and ``C``'s
rows reversed for a flip (:func:`aa_weights`, checked against ``interpolate`` in the tests). The
``matmul`` resize does one batched matrix product per view and sensor (the accelerator's choice);
the ``interpolate`` resize calls PyTorch's separable kernel per crop, which costs less arithmetic
on a CPU. Both give the per-sample path's values up to float rounding and the storage quantisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terrafm.data.multicrop import Box, MultiCropConfig, ViewPlan
from terrafm.errors import ConfigError
from terrafm.sensors import get_sensor

__all__ = ["BatchMultiCrop", "Encoding", "aa_weights", "resolve_device"]


@dataclass(frozen=True)
class Encoding:
    """Integer storage of one sensor: ``model value = stored * scale + offset`` (exact affine).

    Attributes:
        scale: step of one stored unit in the model unit (S2: 1 DN, S1: 1/256 dB).
        offset: model value of stored 0.
    """

    scale: float
    offset: float


@lru_cache(maxsize=4096)
def aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of antialiased bilinear resizing along one axis.

    The triangle filter widened by the scale when shrinking (PyTorch's ``antialias=True`` rule,
    pixel centres aligned): output pixel ``i`` is centred at ``c = (i + 0.5) * n_in / n_out`` and
    takes input ``j`` with weight ``max(0, 1 - |j + 0.5 - c| / max(scale, 1))``, normalised to 1.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    out = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi, dtype=np.float64)
        w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) / support))
        total = w.sum()
        out[i, lo:hi] = w / total if total > 0 else w
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"data.augment_device={name!r} but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"augment device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


class BatchMultiCrop:
    """Raw read windows of a batch -> the contract-B batch (see the module docstring).

    Args:
        config: view sizes (the crop boxes and draws are already in each sample's plan).
        sensors: every sensor of the loader, in batch order.
        encodings: sensor -> :class:`Encoding` of the stored integers.
        device: where to compute (``cpu`` or ``cuda``).
        resize: ``matmul``, ``interpolate`` or ``auto`` (matmul on an accelerator).
    """

    def __init__(
        self,
        config: MultiCropConfig,
        sensors: Sequence[str],
        encodings: Mapping[str, Encoding],
        device: str | torch.device = "cpu",
        resize: str = "auto",
    ) -> None:
        self.cfg = config
        self.sensors = tuple(sensors)
        self.device = torch.device(device)
        if resize == "auto":
            resize = "interpolate" if self.device.type == "cpu" else "matmul"
        if resize not in ("matmul", "interpolate"):
            raise ValueError(f"resize must be 'matmul', 'interpolate' or 'auto', got {resize!r}")
        self.resize = resize
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for s in self.sensors:
            st, enc = get_sensor(s).stats, encodings[s]
            mean = torch.tensor(st.mean, dtype=torch.float64)
            std = torch.tensor(st.std, dtype=torch.float64)
            a = (enc.scale / std).float().view(1, -1, 1, 1)
            b = ((enc.offset - mean) / std).float().view(1, -1, 1, 1)
            self._affine[s] = (a.to(self.device), b.to(self.device))

    def normalise(self, sensor: str, raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) stored integers -> z-scored float32, invalid pixels 0 (the sensor mean)."""
        a, b = self._affine[sensor]
        if self.device.type == "cpu":  # numpy's integer-to-float cast is ~4x torch's on a CPU
            x = torch.from_numpy(raw.numpy().astype(np.float32))
        else:
            x = raw.to(self.device, non_blocking=True).float()
        x.mul_(a).add_(b)
        v = valid.to(self.device, non_blocking=True)
        partial = torch.nonzero(~v.flatten(1).all(1)).flatten().tolist()
        for i in partial:  # only samples with invalid pixels need the mask
            x[i].mul_(v[i])
        return x

    def _crops(
        self,
        x: torch.Tensor,
        boxes: Sequence[Box],
        flips: Sequence[bool],
        use: Sequence[bool],
        size: int,
    ) -> torch.Tensor:
        """(B, C, size, size): box ``b`` of sample ``b`` resized (zeros where ``use`` is False)."""
        out = torch.zeros(x.shape[0], x.shape[1], size, size, device=x.device)
        idx = [b for b, u in enumerate(use) if u]
        if not idx:
            return out
        if self.resize == "interpolate":
            for b in idx:
                top, left, h, w = boxes[b]
                crop = F.interpolate(
                    x[b : b + 1, :, top : top + h, left : left + w],
                    size=(size, size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0]
                out[b] = crop.flip(-1) if flips[b] else crop
            return out
        height, width = x.shape[-2:]
        rows = np.zeros((len(idx), size, height), np.float32)
        cols = np.zeros((len(idx), size, width), np.float32)
        for k, b in enumerate(idx):
            top, left, h, w = boxes[b]
            rows[k, :, top : top + h] = aa_weights(h, size)
            cw = aa_weights(w, size)
            cols[k, :, left : left + w] = cw[::-1] if flips[b] else cw
        r = torch.from_numpy(rows).to(x.device, non_blocking=True)[:, None]  # (n, 1, S, H)
        c = torch.from_numpy(cols).to(x.device, non_blocking=True)[:, None]  # (n, 1, S, W)
        sel = torch.tensor(idx, device=x.device)
        out[sel] = r @ x[sel] @ c.transpose(-1, -2)
        return out

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Contract-B batch from :func:`terrafm.data.shards.collate_raw`'s output."""
        cfg = self.cfg
        plans: list[ViewPlan] = raw["plans"]
        n_batch = len(plans)
        dev = self.device
        x = {s: self.normalise(s, raw["raw"][s], raw["valid"][s]) for s in raw["raw"]}

        def mask(draws: Sequence[tuple[str, ...]], s: str) -> torch.Tensor:
            return torch.tensor([s in d for d in draws], dtype=torch.bool)

        def zeros(s: str, size: int) -> torch.Tensor:
            return torch.zeros(n_batch, get_sensor(s).num_bands, size, size, device=dev)

        teacher, student_g, student_l = [], [], []
        for v in range(cfg.n_global):
            boxes = [p.g_boxes[v] for p in plans]
            flips = [p.g_flips[v] for p in plans]
            t_draw = [p.teacher[v] for p in plans]
            s_draw = [p.student[v] for p in plans]
            t_view: dict[str, dict[str, torch.Tensor]] = {"inputs": {}, "masks": {}}
            s_view: dict[str, dict[str, torch.Tensor]] = {"inputs": {}, "masks": {}}
            for s in self.sensors:
                tm, sm = mask(t_draw, s), mask(s_draw, s)
                if s in x:
                    use = (tm | sm).tolist()
                    crops = self._crops(x[s], boxes, flips, use, cfg.global_size)
                    t_in = crops * tm.to(dev)[:, None, None, None]
                    s_in = crops * sm.to(dev)[:, None, None, None]
                else:
                    t_in = s_in = zeros(s, cfg.global_size)
                t_view["inputs"][s], t_view["masks"][s] = t_in, tm.to(dev)
                s_view["inputs"][s], s_view["masks"][s] = s_in, sm.to(dev)
            teacher.append(t_view)
            student_g.append(s_view)
        for v in range(cfg.n_local):
            boxes = [p.l_boxes[v] for p in plans]
            flips = [p.l_flips[v] for p in plans]
            draws = [p.local[v] for p in plans]
            view: dict[str, dict[str, torch.Tensor]] = {"inputs": {}, "masks": {}}
            for s in self.sensors:
                m = mask(draws, s)
                if s in x:
                    view["inputs"][s] = self._crops(x[s], boxes, flips, m.tolist(), cfg.local_size)
                else:
                    view["inputs"][s] = zeros(s, cfg.local_size)
                view["masks"][s] = m.to(dev)
            student_l.append(view)
        out: dict[str, Any] = {
            "teacher": teacher,
            "student_global": student_g,
            "student_local": student_l,
            "landcover": raw["landcover"].to(dev),
            "index": raw["index"].to(dev),
        }
        if "skipped" in raw:
            out["skipped"] = raw["skipped"]
        return out
