"""Multi-crop views of a whole batch at once, on the CPU or the accelerator (``data.augment_device``).

The per-sample path (:class:`terrafm.data.multicrop.MultiCrop`) normalises a full tile and resizes
each crop in the dataset, per sample. Here a batch arrives as the stored integers of each sample's
read window (the smallest box holding all of its crop boxes, see
:meth:`terrafm.data.multicrop.ViewPlan.bounds`) with its validity mask and its
:class:`~terrafm.data.multicrop.ViewPlan`; decoding to model units, z-scoring, masking of invalid
pixels, cropping, resizing, flipping and the sensor masks of contract B run batched on tensors.

Resizing is :func:`terrafm.data.multicrop.resize`, the per-sample path's (antialiased bilinear by
default, or plain bilinear, ``MultiCropConfig.resample``), in one of two forms:

- ``interpolate`` (the CPU's): sample by sample, each read window is cast to float once, its
  invalid pixels set to the stored value of the sensor mean, every crop resized in stored units
  (the sensors a view uses in one call), and the z-scoring (an affine map per band, which
  commutes with a resize whose weights sum to 1) applied only to the resized views while they
  are written into the batch tensors;
- ``matmul`` (the accelerator's): the windows are z-scored, then each view is resized as one
  batched product ``out = R @ x @ Cᵀ`` with ``R`` (S, H) and ``C`` (S, W) the 1-D weights of the
  filter (:func:`aa_weights`, :func:`bilinear_weights`, checked against ``interpolate``), zero
  outside the crop box and with ``C``'s rows reversed for a flip.

Both give the per-sample path's values up to float rounding and the storage quantisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from terrafm.data.multicrop import Box, MultiCropConfig, ViewPlan, resize
from terrafm.errors import ConfigError
from terrafm.sensors import get_sensor

__all__ = ["BatchMultiCrop", "Encoding", "aa_weights", "bilinear_weights", "resolve_device"]


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


@lru_cache(maxsize=4096)
def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of plain bilinear resizing along one axis (PyTorch's rule, pixel
    centres aligned): output ``i`` samples ``x = max((i + 0.5) * n_in / n_out - 0.5, 0)`` from
    its two neighbours ``floor(x)`` and ``floor(x) + 1`` (clamped to the last pixel)."""
    scale = n_in / n_out
    out = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(x), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = x - i0
        out[i, i0] += 1.0 - frac
        out[i, i1] += frac
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
        if resize == "interpolate" and self.device.type != "cpu":
            raise ValueError("resize='interpolate' runs on the CPU; use 'matmul' on an accelerator")
        self.resize = resize
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for s in self.sensors:
            st, enc = get_sensor(s).stats, encodings[s]
            mean = torch.tensor(st.mean, dtype=torch.float64)
            std = torch.tensor(st.std, dtype=torch.float64)
            a = (enc.scale / std).float().view(1, -1, 1, 1)
            b = ((enc.offset - mean) / std).float().view(1, -1, 1, 1)
            self._affine[s] = (a.to(self.device), b.to(self.device))
        # CPU path: per-band scale and shift of z-scoring as flat vectors, and the stored value
        # that z-scores to 0 (the sensor mean), written into invalid pixels before resizing.
        self._cpu_affine = {
            s: (a.flatten().cpu().numpy(), b.flatten().cpu().numpy())
            for s, (a, b) in self._affine.items()
        }
        self._fill = {
            s: (-self._cpu_affine[s][1] / self._cpu_affine[s][0]).astype(np.float32)
            for s in self.sensors
        }

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
        height, width = x.shape[-2:]
        weights = aa_weights if self.cfg.resample == "antialias" else bilinear_weights
        rows = np.zeros((len(idx), size, height), np.float32)
        cols = np.zeros((len(idx), size, width), np.float32)
        for k, b in enumerate(idx):
            top, left, h, w = boxes[b]
            rows[k, :, top : top + h] = weights(h, size)
            cw = weights(w, size)
            cols[k, :, left : left + w] = cw[::-1] if flips[b] else cw
        r = torch.from_numpy(rows).to(x.device, non_blocking=True)[:, None]  # (n, 1, S, H)
        c = torch.from_numpy(cols).to(x.device, non_blocking=True)[:, None]  # (n, 1, S, W)
        sel = torch.tensor(idx, device=x.device)
        out[sel] = r @ x[sel] @ c.transpose(-1, -2)
        return out

    def cut_samples(
        self,
        windows: Sequence[Mapping[str, Any]],
        valids: Sequence[Mapping[str, Any]],
        plans: Sequence[ViewPlan],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """The CPU path: teacher, student-global and student-local views, sample by sample.

        ``windows[b]``: sensor -> stored integers (C, h, w) of sample ``b``'s read window (only
        the sensors its views use), ``valids[b]``: sensor -> (h, w) bool. Each window is cast to
        float once, its invalid pixels set to the stored value of the sensor mean, and every crop
        is resized in stored units, the sensors a view uses in one call; the z-scoring (an
        affine map per band, which commutes with a resize whose weights sum to 1) is applied to
        the resized views only, while they are written into the batch tensors. The views equal
        :meth:`__call__`'s to float rounding (tested), at a fraction of the memory traffic.
        """
        cfg, n_batch = self.cfg, len(plans)
        bands = {s: get_sensor(s).num_bands for s in self.sensors}

        def batch_of(size: int) -> dict[str, torch.Tensor]:
            return {s: torch.empty(n_batch, bands[s], size, size) for s in self.sensors}

        teacher = [batch_of(cfg.global_size) for _ in range(cfg.n_global)]
        student_g = [batch_of(cfg.global_size) for _ in range(cfg.n_global)]
        student_l = [batch_of(cfg.local_size) for _ in range(cfg.n_local)]
        for k, plan in enumerate(plans):
            win = windows[k]
            present = [s for s in self.sensors if s in win]
            start, lo = {}, 0
            for s in present:
                start[s], lo = lo, lo + bands[s]
            height, width = np.shape(win[present[0]])[-2:] if present else (0, 0)
            x = np.empty((lo, height, width), np.float32)
            for s in present:
                xs = x[start[s] : start[s] + bands[s]]
                xs[...] = np.asarray(win[s])  # the cast, once per window
                ok = np.asarray(valids[k][s])
                if not ok.all():
                    xs[:, ~ok] = self._fill[s][:, None]
            xt = torch.from_numpy(x)
            for v in range(cfg.n_global):
                targets = [(teacher[v], plan.teacher[v]), (student_g[v], plan.student[v])]
                self._cut(xt, start, k, plan.g_boxes[v], plan.g_flips[v], cfg.global_size, targets)
            for v in range(cfg.n_local):
                targets = [(student_l[v], plan.local[v])]
                self._cut(xt, start, k, plan.l_boxes[v], plan.l_flips[v], cfg.local_size, targets)

        def views(
            inputs: Sequence[dict[str, torch.Tensor]], draws: Sequence[Sequence[tuple[str, ...]]]
        ) -> list[dict[str, Any]]:
            return [
                {
                    "inputs": inp,
                    "masks": {
                        s: torch.tensor([s in d for d in draw], dtype=torch.bool)
                        for s in self.sensors
                    },
                }
                for inp, draw in zip(inputs, draws)
            ]

        return (
            views(teacher, [[p.teacher[v] for p in plans] for v in range(cfg.n_global)]),
            views(student_g, [[p.student[v] for p in plans] for v in range(cfg.n_global)]),
            views(student_l, [[p.local[v] for p in plans] for v in range(cfg.n_local)]),
        )

    def _cut(
        self,
        x: torch.Tensor,
        start: Mapping[str, int],
        k: int,
        box: Box,
        flip: bool,
        size: int,
        targets: Sequence[tuple[dict[str, torch.Tensor], tuple[str, ...]]],
    ) -> None:
        """Resize ``box`` of window ``x`` (stored units, sensor ``s`` at channels ``start[s]``
        on) and write it, z-scored, into sample ``k`` of each target whose draw uses the sensor
        (zeros elsewhere)."""
        bands = {s: get_sensor(s).num_bands for s in start}
        needed = [s for s in start if any(s in d for _, d in targets)]
        runs: list[list[str]] = []  # sensors adjacent in the window are resized in one call
        for s in needed:
            if runs and start[runs[-1][-1]] + bands[runs[-1][-1]] == start[s]:
                runs[-1].append(s)
            else:
                runs.append([s])
        top, left, h, w = box
        for run in runs:
            c0, c1 = start[run[0]], start[run[-1]] + bands[run[-1]]
            y = resize(x[None, c0:c1, top : top + h, left : left + w], size, self.cfg.resample)[0]
            if flip:
                y = y.flip(-1)
            for s in run:
                ys = y[start[s] - c0 : start[s] - c0 + bands[s]]
                a, b = self._affine[s]
                for dst, draw in targets:
                    if s in draw:
                        torch.addcmul(b[0], ys, a[0], out=dst[s][k])
        for dst, draw in targets:
            for s in self.sensors:
                if s not in draw:
                    dst[s][k].zero_()

    def from_samples(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Contract-B batch straight from :class:`terrafm.data.shards.ShardViewDataset` items
        (the CPU path: no padded batch of windows is built)."""
        teacher, student_g, student_l = self.cut_samples(
            [s["raw"] for s in samples], [s["valid"] for s in samples], [s["plan"] for s in samples]
        )
        return {
            "teacher": teacher,
            "student_global": student_g,
            "student_local": student_l,
            "landcover": torch.tensor([int(s["landcover"]) for s in samples], dtype=torch.long),
            "index": torch.tensor([int(s["index"]) for s in samples], dtype=torch.long),
            "skipped": [r for s in samples for r in s["skipped"]],
        }

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Contract-B batch from :func:`terrafm.data.shards.collate_raw`'s output."""
        cfg = self.cfg
        plans: list[ViewPlan] = raw["plans"]
        if self.resize == "interpolate":  # per sample, from the padded windows
            n = len(plans)
            teacher_, student_g_, student_l_ = self.cut_samples(
                [{s: r[b].numpy() for s, r in raw["raw"].items()} for b in range(n)],
                [{s: v[b].numpy() for s, v in raw["valid"].items()} for b in range(n)],
                plans,
            )
            out_ = {
                "teacher": teacher_,
                "student_global": student_g_,
                "student_local": student_l_,
                "landcover": raw["landcover"],
                "index": raw["index"],
            }
            if "skipped" in raw:
                out_["skipped"] = raw["skipped"]
            return out_
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
