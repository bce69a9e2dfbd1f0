"""The pretraining batch (contract B) and its checks; random batches for tests and benchmarks.

A view is ``{"inputs": {sensor: (B, C, S, S)}, "masks": {sensor: (B,) bool}}``; a batch holds
``teacher`` (2 global views, the teacher's sensor draw), ``student_global`` (the same 2 crops, the
student's draw), ``student_local`` (local crops), ``landcover`` (B,) and ``index`` (B,). The
trainer checks each batch before using it, so a malformed batch fails with a message naming the
field rather than deep inside the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from terrafm.errors import DataError
from terrafm.sensors import SENSOR_KEYS, get_sensor

__all__ = ["BatchError", "RandomSource", "check_batch", "random_batch"]

ESA_CLASSES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)


class BatchError(DataError, ValueError):
    """A pretraining batch that does not follow contract B."""


def _check_view(view: Any, where: str, batch: int) -> int:
    if not isinstance(view, Mapping) or "inputs" not in view or "masks" not in view:
        raise BatchError(f"{where}: a view must be a dict with 'inputs' and 'masks'")
    inputs, masks = view["inputs"], view["masks"]
    if not inputs:
        raise BatchError(f"{where}: no sensor in 'inputs'")
    size = None
    for key, x in inputs.items():
        if key not in SENSOR_KEYS:
            raise BatchError(f"{where}: unknown sensor {key!r}")
        n = get_sensor(key).num_bands
        if x.ndim != 4 or x.shape[0] != batch or x.shape[1] != n or x.shape[2] != x.shape[3]:
            raise BatchError(
                f"{where}: inputs[{key!r}] must be ({batch}, {n}, S, S), got {tuple(x.shape)}"
            )
        if size is not None and x.shape[-1] != size:
            raise BatchError(f"{where}: sensors of one view have different sizes")
        size = int(x.shape[-1])
        m = masks.get(key)
        if m is None or tuple(m.shape) != (batch,) or m.dtype != torch.bool:
            raise BatchError(f"{where}: masks[{key!r}] must be a bool tensor ({batch},)")
    present = torch.stack([masks[k] for k in inputs], 1).any(1)
    if not bool(present.all()):
        bad = torch.nonzero(~present).flatten().tolist()
        raise BatchError(f"{where}: sample(s) {bad} use no sensor")
    assert size is not None
    return size


def check_batch(batch: Mapping[str, Any]) -> tuple[int, int]:
    """Validate a contract-B batch; returns ``(B, number of student views)``.

    Raises:
        BatchError: naming the offending field.
    """
    for key in ("teacher", "student_global", "student_local", "landcover"):
        if key not in batch:
            raise BatchError(f"batch has no {key!r} (keys: {sorted(batch)})")
    lc = batch["landcover"]
    if not isinstance(lc, torch.Tensor) or lc.ndim != 1:
        raise BatchError("batch['landcover'] must be a (B,) tensor")
    b = int(lc.shape[0])
    teacher, sg = list(batch["teacher"]), list(batch["student_global"])
    if len(teacher) != len(sg) or not teacher:
        raise BatchError(
            f"'teacher' ({len(teacher)}) and 'student_global' ({len(sg)}) must hold the same "
            "non-zero number of global views"
        )
    sizes = [_check_view(v, f"teacher[{i}]", b) for i, v in enumerate(teacher)]
    sizes += [_check_view(v, f"student_global[{i}]", b) for i, v in enumerate(sg)]
    if len(set(sizes)) != 1:
        raise BatchError(f"global views have different sizes {sorted(set(sizes))}")
    for i, v in enumerate(batch["student_local"]):
        _check_view(v, f"student_local[{i}]", b)
    return b, len(sg) + len(batch["student_local"])


def _view(
    b: int, size: int, sensors: Sequence[str], g: torch.Generator, keep: float
) -> dict[str, dict[str, torch.Tensor]]:
    inputs, masks = {}, {}
    draw = torch.rand(b, len(sensors), generator=g) < keep  # (B, m)
    first = torch.randint(len(sensors), (b,), generator=g)
    draw[torch.arange(b), first] |= ~draw.any(1)  # at least one sensor per sample
    for j, key in enumerate(sensors):
        x = torch.randn(b, get_sensor(key).num_bands, size, size, generator=g)
        inputs[key] = x * draw[:, j, None, None, None]
        masks[key] = draw[:, j].clone()
    return {"inputs": inputs, "masks": masks}


def random_batch(
    batch_size: int,
    *,
    sensors: Sequence[str] = ("s1", "s2_l2a"),
    global_size: int = 32,
    local_size: int = 16,
    n_local: int = 2,
    keep_prob: float = 0.5,
    classes: Sequence[int] = ESA_CLASSES,
    seed: int = 0,
) -> dict[str, Any]:
    """A contract-B batch of Gaussian noise (for tests and step benchmarks only)."""
    g = torch.Generator().manual_seed(seed)
    glob = [_view(batch_size, global_size, sensors, g, keep_prob) for _ in range(2)]
    # The student sees the same crops with its own sensor draw.
    student_global = []
    for v in glob:
        redraw = _view(batch_size, global_size, sensors, g, keep_prob)
        full = {k: v["inputs"][k] + redraw["inputs"][k] for k in sensors}  # any non-zero content
        student_global.append(
            {
                "inputs": {k: full[k] * redraw["masks"][k][:, None, None, None] for k in sensors},
                "masks": redraw["masks"],
            }
        )
    local = [_view(batch_size, local_size, sensors, g, keep_prob) for _ in range(n_local)]
    lc = torch.tensor(classes)[torch.randint(len(classes), (batch_size,), generator=g)]
    return {
        "teacher": glob,
        "student_global": student_global,
        "student_local": local,
        "landcover": lc,
        "index": torch.arange(batch_size),
    }


class RandomSource:
    """A deterministic stream of :func:`random_batch` batches (a ``BatchSource``).

    Batch ``i`` of epoch ``e`` on rank ``r`` depends only on ``(seed, r, e, i)``, so any start
    position replays exactly. For tests and step benchmarks: the images are noise.

    Args:
        batch_size: samples per batch (per rank).
        steps_per_epoch: batches per epoch.
        seed: base seed.
        rank: process rank (each rank gets its own batches).
        landcover_counts: class counts reported as the "training set" (for the set H).
        kwargs: forwarded to :func:`random_batch` (sizes, sensors, number of local crops).
    """

    def __init__(
        self,
        batch_size: int,
        steps_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        landcover_counts: dict[int, int] | None = None,
        **kwargs: Any,
    ):
        self.batch_size = batch_size
        self._steps = steps_per_epoch
        self.seed = seed
        self.rank = rank
        self._counts = landcover_counts or {10: 40, 30: 30, 40: 10, 50: 10, 80: 10}
        self.kwargs = kwargs

    @property
    def steps_per_epoch(self) -> int:
        return self._steps

    @property
    def landcover_counts(self) -> dict[int, int]:
        return dict(self._counts)

    def batch(self, epoch: int, i: int) -> dict[str, Any]:
        seed = ((self.seed * 1_000_003 + self.rank) * 10_007 + epoch) * 100_003 + i
        return random_batch(self.batch_size, seed=seed % 2**63, **self.kwargs)

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        for i in range(start, self._steps):
            yield self.batch(epoch, i)
