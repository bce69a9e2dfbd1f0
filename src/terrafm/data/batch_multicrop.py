"""Multi-crop views of a whole batch at once, on the CPU or the accelerator (``data.augment_device``).

The per-sample path (:class:`terrafm.data.multicrop.MultiCrop`) normalises a full tile on the
10 m grid and resizes each crop in the dataset, per sample. Here a batch arrives as the stored
integers of each sample's read window (the smallest box holding all of its crop boxes, see
:meth:`terrafm.data.multicrop.ViewPlan.bounds`), one :class:`GroupWindow` per stored array (the
bands of one native resolution), with its validity mask on the 10 m grid and its
:class:`~terrafm.data.multicrop.ViewPlan`; decoding to model units, z-scoring, masking of invalid
pixels, cropping, resizing, flipping and the sensor masks of contract B run batched on tensors.

Resizing gives the per-sample path's values: its filter (antialiased bilinear by default, or
plain bilinear, ``MultiCropConfig.resample``) applied to the bands on the 10 m grid, where the
20 m / 60 m bands are bilinearly resampled from their native pixels. For a native array both
steps are one linear map, :func:`composed_weights` (docs/data.md, "Native resolution"). Two forms:

- ``taps`` (the CPU's): sample by sample, fully valid read windows as stored (integers), a sensor's
  windows with invalid pixels cast to float once, those pixels set to the stored value of the sensor
  mean; every view is resized by the compiled kernel :func:`terrafm.data.resize_kernel.resize_into`
  from each axis's taps (the view's filter on the 10 m bands; for the coarse arrays the composed map
  straight from native pixels, or, where the sensor has invalid pixels in the window, after
  resampling onto the 10 m window), which z-scores (an affine map per band, commuting with a resize
  whose weights sum to 1) and writes the result straight into the batch tensors, teacher and student
  at once;
- ``matmul`` (the accelerator's): the windows are z-scored (coarse arrays resampled onto the
  10 m window by one batched product), then each view is resized as one batched product
  ``out = R @ x @ Cᵀ`` with ``R`` (S, H) and ``C`` (S, W) the 1-D weights of the filter
  (:func:`aa_weights`, :func:`bilinear_weights`, checked against PyTorch's resize), zero outside
  the crop box and with ``C``'s rows reversed for a flip.

Both give the per-sample path's values up to float rounding and the storage quantisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from terrafm.data.multicrop import Box, MultiCropConfig, ViewPlan
from terrafm.data.resize_kernel import EMPTY_OUT, resize_into
from terrafm.errors import ConfigError
from terrafm.sensors import get_sensor

__all__ = [
    "BatchMultiCrop",
    "Encoding",
    "Group",
    "GroupWindow",
    "aa_weights",
    "bilinear_weights",
    "composed_weights",
    "resolve_device",
    "upsample_weights",
]


@dataclass(frozen=True)
class Encoding:
    """Integer storage of one sensor: ``model value = stored * scale + offset`` (exact affine).

    Attributes:
        scale: step of one stored unit in the model unit (S2: 1 DN, S1: 1/256 dB).
        offset: model value of stored 0.
    """

    scale: float
    offset: float


@dataclass(frozen=True)
class Group:
    """One array of a shard store: bands of one sensor at one native resolution.

    Attributes:
        array: array name in the store.
        factor: one stored pixel spans ``factor`` x ``factor`` pixels of the 10 m grid.
        halo: stored pixels beyond the tile on each side.
        bands: indices of the array's bands in the sensor's stem order.
    """

    array: str
    factor: int
    halo: int
    bands: tuple[int, ...]


@dataclass(frozen=True)
class GroupWindow:
    """The stored pixels of one :class:`Group` that a read window of the 10 m grid needs.

    Attributes:
        data: (len(bands), h, w) stored integers.
        factor: as :attr:`Group.factor`.
        bands: as :attr:`Group.bands`.
        origin: (row, col): pixel ``q`` of the 10 m window samples ``data`` at ``origin + q /
            factor`` (bilinear, pixel centres aligned); (0, 0) with ``factor`` 1, where ``data``
            is the window itself.
    """

    data: np.ndarray
    factor: int
    bands: tuple[int, ...]
    origin: tuple[float, float] = (0.0, 0.0)


def upsample_weights(n_in: int, count: int, factor: int, origin: float) -> np.ndarray:
    """(count, n_in) float64 weights of bilinear resampling of native pixels onto ``count`` 10 m
    pixels: pixel ``q`` samples ``u = origin + q / factor`` (clamped to the window) from
    ``floor(u)`` and ``floor(u) + 1``, as :func:`terrafm.io.resample.axis_weights` does on a
    whole raster."""
    u = np.clip(origin + np.arange(count) / factor, 0.0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = u - i0
    out = np.zeros((count, n_in))
    rows = np.arange(count)
    out[rows, i0] += 1.0 - lam
    out[rows, i1] += lam
    return out


def composed_weights(
    resample: str, n_in: int, factor: int, origin: float, start: int, count: int, size: int
) -> np.ndarray:
    """(size, n_in) float32 weights of one resampling from native pixels straight to a view.

    The product of the view's filter (``count`` 10 m pixels from ``start`` -> ``size``,
    :func:`aa_weights` or :func:`bilinear_weights`) and the bilinear upsampling of the native
    pixels onto those 10 m pixels (:func:`upsample_weights`): both linear, so applying this one
    matrix equals resampling to the 10 m grid and then to the view, up to float rounding.
    """
    cols, wts = _composed_taps(resample, n_in, factor, origin, start, count, size)
    flat = (np.arange(size)[:, None] * n_in + cols).ravel()
    dense = np.bincount(flat, wts.ravel(), minlength=size * n_in).reshape(size, n_in)
    return dense.astype(np.float32)


def _composed_taps(
    resample: str, n_in: int, factor: int, origin: float, start: int, count: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`composed_weights` as (size, T) column indices and float64 weights."""
    idx, wts = _taps(resample, count, size)  # the view's filter on the 10 m pixels
    if factor == 1:
        return start + idx, wts
    # each 10 m tap spreads over two native pixels (upsample_weights)
    u = np.clip(origin + (start + idx) / factor, 0.0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = u - i0
    return np.concatenate([i0, i1], 1), np.concatenate([wts * (1.0 - lam), wts * lam], 1)


@lru_cache(maxsize=4096)
def aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of antialiased bilinear resizing along one axis.

    The triangle filter widened by the scale when shrinking (PyTorch's ``antialias=True`` rule,
    pixel centres aligned): output pixel ``i`` is centred at ``c = (i + 0.5) * n_in / n_out`` and
    takes input ``j`` with weight ``max(0, 1 - |j + 0.5 - c| / max(scale, 1))``, normalised to 1.
    """
    return _dense(*_taps("antialias", n_in, n_out), n_in)


@lru_cache(maxsize=4096)
def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of plain bilinear resizing along one axis (PyTorch's rule, pixel
    centres aligned): output ``i`` samples ``x = max((i + 0.5) * n_in / n_out - 0.5, 0)`` from
    its two neighbours ``floor(x)`` and ``floor(x) + 1`` (clamped to the last pixel)."""
    return _dense(*_taps("bilinear", n_in, n_out), n_in)


def _dense(idx: np.ndarray, wts: np.ndarray, n_in: int) -> np.ndarray:
    flat = (np.arange(idx.shape[0])[:, None] * n_in + idx).ravel()
    out = np.bincount(flat, wts.ravel(), minlength=idx.shape[0] * n_in)
    return out.reshape(idx.shape[0], n_in).astype(np.float32)


@lru_cache(maxsize=4096)
def _taps(resample: str, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero weights of :func:`aa_weights` / :func:`bilinear_weights` (their rules) as
    (n_out, K) input indices and float64 weights (unused taps: weight 0 on a valid index)."""
    scale = n_in / n_out
    centre = scale * (np.arange(n_out) + 0.5)
    if resample == "bilinear":
        x = np.maximum(centre - 0.5, 0.0)
        i0 = np.minimum(x.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = x - i0
        return np.stack([i0, i1], 1), np.stack([1.0 - frac, frac], 1)
    support = max(scale, 1.0)
    lo = np.maximum(np.trunc(centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), n_in)
    j = lo[:, None] + np.arange(max(int((hi - lo).max()), 1))[None]
    w = np.maximum(0.0, 1.0 - np.abs((j - centre[:, None] + 0.5) / support))
    w[j >= hi[:, None]] = 0.0
    total = w.sum(1, keepdims=True)
    return np.minimum(j, n_in - 1), w / np.where(total > 0, total, 1.0)


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
        resize: ``matmul``, ``taps`` or ``auto`` (matmul on an accelerator).
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
            resize = "taps" if self.device.type == "cpu" else "matmul"
        if resize not in ("matmul", "taps"):
            raise ValueError(f"resize must be 'matmul', 'taps' or 'auto', got {resize!r}")
        if resize == "taps" and self.device.type != "cpu":
            raise ValueError("resize='taps' runs on the CPU; use 'matmul' on an accelerator")
        self.resize = resize
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for s in self.sensors:
            st, enc = get_sensor(s).stats, encodings[s]
            mean = torch.tensor(st.mean, dtype=torch.float64)
            std = torch.tensor(st.std, dtype=torch.float64)
            a = (enc.scale / std).float().view(1, -1, 1, 1)
            b = ((enc.offset - mean) / std).float().view(1, -1, 1, 1)
            self._affine[s] = (a.to(self.device), b.to(self.device))
        # CPU path: the stored value that z-scores to 0 (the sensor mean), written into invalid
        # pixels before resizing.
        self._fill = {s: (-b / a).flatten().cpu().numpy() for s, (a, b) in self._affine.items()}
        self._sub: dict[
            tuple[str, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
        ] = {}

    def _as_groups(self, sensor: str, win: Any) -> tuple[GroupWindow, ...]:
        """A sensor's read window as group windows (a plain (C, h, w) array: one 10 m group)."""
        if isinstance(win, np.ndarray | torch.Tensor):
            return (GroupWindow(np.asarray(win), 1, tuple(range(get_sensor(sensor).num_bands))),)
        return tuple(win)

    def _band_affine(
        self, sensor: str, bands: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(scale, shift) of z-scoring ``bands`` of ``sensor`` as (C,) tensors, and their index
        tensor (None for all bands in order)."""
        key = (sensor, bands)
        got = self._sub.get(key)
        if got is None:
            a, b = (t.flatten() for t in self._affine[sensor])
            if bands == tuple(range(a.shape[0])):
                got = (a, b, None)
            else:
                idx = torch.tensor(bands, device=a.device)
                got = (a[idx], b[idx], idx)
            self._sub[key] = got
        return got

    def normalise(
        self, sensor: str, groups: Sequence[Mapping[str, Any]], valid: torch.Tensor
    ) -> torch.Tensor:
        """The accelerator path: collated stored windows (:func:`terrafm.data.shards.collate_raw`)
        -> (B, C, H, W) z-scored float32 on the 10 m window, invalid pixels 0 (the sensor mean).

        Coarse groups are z-scored at native resolution and resampled onto the 10 m window by one
        batched product with their :func:`upsample_weights` (z-scoring is affine per band and the
        weights of each output pixel sum to 1, so the order does not matter)."""
        n_batch, height, width = valid.shape
        dev = self.device
        x = torch.empty(n_batch, get_sensor(sensor).num_bands, height, width, device=dev)
        for g in groups:
            data = g["data"]
            if dev.type == "cpu":  # numpy's integer-to-float cast is ~4x torch's on a CPU
                xg = torch.from_numpy(data.numpy().astype(np.float32))
            else:
                xg = data.to(dev, non_blocking=True).float()
            a, b, idx = self._band_affine(sensor, tuple(g["bands"]))
            xg.mul_(a[:, None, None]).add_(b[:, None, None])
            if g["factor"] > 1:
                hn, wn = xg.shape[-2:]
                ur = np.stack(
                    [upsample_weights(hn, height, g["factor"], o[0]) for o in g["origin"]]
                )
                uc = np.stack([upsample_weights(wn, width, g["factor"], o[1]) for o in g["origin"]])
                r = torch.from_numpy(ur.astype(np.float32)).to(dev, non_blocking=True)[:, None]
                c = torch.from_numpy(uc.astype(np.float32)).to(dev, non_blocking=True)[:, None]
                xg = r @ xg @ c.transpose(-1, -2)
            else:
                xg = xg[..., :height, :width]
            if idx is None:
                x.copy_(xg)
            else:
                x[:, idx] = xg
        v = valid.to(dev, non_blocking=True)
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

        ``windows[b]``: sensor -> the stored integers of sample ``b``'s read window, as
        :class:`GroupWindow` s (one per native resolution) or one (C, h, w) array on the 10 m
        grid; ``valids[b]``: sensor -> (h, w) bool on the 10 m grid (only the sensors its views
        use). Every view is cut by :func:`~terrafm.data.resize_kernel.resize_into` from the
        taps of each axis: the view's filter for the bands on the 10 m grid, and for coarser
        bands the upsampling to 10 m and the view's filter in one (:func:`composed_weights`),
        straight from their native pixels. A fully valid window is read as stored; where a
        sensor has invalid pixels in the window, its arrays are cast to float, its coarse arrays
        resampled onto the 10 m window (:func:`upsample_weights`), and the invalid pixels get the
        stored value of the sensor mean. The z-scoring (an affine map per band, which commutes
        with resizes whose weights sum to 1) is applied as the kernel writes the views into the
        batch tensors. The views
        equal :meth:`__call__`'s and the per-sample path's to float rounding (tested).
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
            oks = {s: np.asarray(valids[k][s]) for s in present}
            height, width = oks[present[0]].shape if present else (0, 0)
            # every array the views are cut from: (factor, origin, data, sensor, bands). A fully
            # valid window goes to the kernel as stored (integers: the kernel converts as it
            # reads); a 10 m window with invalid pixels is cast to float once and gets the
            # stored value of the sensor mean there; coarse arrays of such a window are first
            # resampled onto the 10 m window, where the mask lives.
            arrays: list[tuple[int, tuple[float, float], np.ndarray, str, tuple[int, ...]]] = []
            for s in present:
                ok = oks[s]
                full = bool(ok.all())
                fill = self._fill[s]
                for gw in self._as_groups(s, win[s]):
                    if full:
                        data = np.ascontiguousarray(gw.data)
                        arrays.append((gw.factor, gw.origin, data, s, gw.bands))
                        continue
                    xg = np.asarray(gw.data).astype(np.float32)
                    if gw.factor > 1:
                        hn, wn = xg.shape[-2:]
                        ur = upsample_weights(hn, height, gw.factor, gw.origin[0])
                        uc = upsample_weights(wn, width, gw.factor, gw.origin[1])
                        xg = ur.astype(np.float32) @ xg @ uc.T.astype(np.float32)
                    xg[:, ~ok] = fill[list(gw.bands), None]
                    arrays.append((1, (0.0, 0.0), np.ascontiguousarray(xg), s, gw.bands))
            cache: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray]] = {}
            for v in range(cfg.n_global):
                targets = [(teacher[v], plan.teacher[v]), (student_g[v], plan.student[v])]
                box, flip = plan.g_boxes[v], plan.g_flips[v]
                self._cut(arrays, cache, k, box, flip, cfg.global_size, targets)
            for v in range(cfg.n_local):
                targets = [(student_l[v], plan.local[v])]
                box, flip = plan.l_boxes[v], plan.l_flips[v]
                self._cut(arrays, cache, k, box, flip, cfg.local_size, targets)

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

    def _zscore(self, s: str, bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_band_affine` for the CPU kernel: (scale, shift, destination channel) arrays."""
        a, b, _ = self._band_affine(s, bands)
        return a.numpy(), b.numpy(), np.asarray(bands, np.int64)

    def _cut(
        self,
        arrays: Sequence[tuple[int, tuple[float, float], np.ndarray, str, tuple[int, ...]]],
        cache: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray]],
        k: int,
        box: Box,
        flip: bool,
        size: int,
        targets: Sequence[tuple[dict[str, torch.Tensor], tuple[str, ...]]],
    ) -> None:
        """Resize ``box`` of one sample's window and write it, z-scored, into sample ``k`` of
        each target whose draw uses the sensor (zeros elsewhere), with the compiled
        :func:`~terrafm.data.resize_kernel.resize_into`. ``arrays``: (factor, origin, stored
        values, sensor, bands), the 10 m arrays with factor 1 (resized with the view's filter),
        coarser ones straight from their native pixels (the composed map); ``cache``: the taps
        of each axis, per sample."""
        top, left, h, w = box
        resample = self.cfg.resample

        def taps(
            axis: str, n_in: int, f: int, origin: float, start: int, count: int
        ) -> tuple[np.ndarray, np.ndarray]:
            key = (axis, n_in, f, origin, start, count, size, axis == "c" and flip)
            got = cache.get(key)
            if got is None:
                idx, wts = _composed_taps(resample, n_in, f, origin, start, count, size)
                if axis == "c" and flip:
                    idx, wts = idx[::-1], wts[::-1]
                got = cache[key] = (
                    np.ascontiguousarray(idx, dtype=np.int64),
                    np.ascontiguousarray(wts, dtype=np.float32),
                )
            return got

        def write(s: str, bands: tuple[int, ...], xs: np.ndarray, rows: Any, cols: Any) -> None:
            outs = [dst[s][k].numpy() for dst, draw in targets if s in draw]
            scale, shift, chan = self._zscore(s, bands)
            for i in range(0, len(outs), 2):
                second = outs[i + 1] if i + 1 < len(outs) else EMPTY_OUT
                resize_into(xs, *rows, *cols, scale, shift, chan, outs[i], second)

        needed = {s for _, d in targets for s in d}
        for f, (o_r, o_c), xg, s, bs in arrays:
            if s in needed:
                rows = taps("r", xg.shape[1], f, o_r, top, h)
                cols = taps("c", xg.shape[2], f, o_c, left, w)
                write(s, bs, xg, rows, cols)
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
        if self.resize == "taps":  # per sample, from the padded windows
            n = len(plans)
            teacher_, student_g_, student_l_ = self.cut_samples(
                [
                    {
                        s: tuple(
                            GroupWindow(
                                g["data"][b].numpy(),
                                g["factor"],
                                tuple(g["bands"]),
                                (float(g["origin"][b][0]), float(g["origin"][b][1])),
                            )
                            for g in gs
                        )
                        for s, gs in raw["raw"].items()
                    }
                    for b in range(n)
                ],
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
