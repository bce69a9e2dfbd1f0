"""``embed_scene``: stream a scene through the encoder into georeferenced embeddings.

(docs/design.md, "What users need", item 6.)

Three stages run concurrently so that reading overlaps compute:

1. reader threads (each with its own GDAL handles) read, check and normalise windows into a
   bounded queue;
2. the calling thread batches windows and runs the model;
3. a writer thread writes each window's owned block into the embedding GeoTIFF, collects table
   rows and checkpoints (flush, table part, progress sidecar) every few seconds.

Memory is bounded by the queue sizes (a few batches of windows), the GDAL block cache and one
table part, whatever the scene size. An interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch
from tqdm import tqdm

from terrafm.embed.progress import (
    Progress,
    ProgressError,
    file_identity,
    fingerprint_digest,
    progress_path,
)
from terrafm.embed.reader import WindowData, WindowReader
from terrafm.embed.table import TableWriter
from terrafm.embed.windows import Window, WindowGrid
from terrafm.embed.writer import COMPLETE_TAG, EmbeddingWriter, read_tags
from terrafm.errors import OutputError
from terrafm.io.resample import RESAMPLING
from terrafm.io.scene import Scene, SourceSpec, open_scene
from terrafm.models import TerraFM
from terrafm.outputs import check_writable, output_error, refuse_existing, remove_stale_temps
from terrafm.weights.fingerprint import model_fingerprint

__all__ = ["EmbedError", "EmbedInterrupted", "EmbedOptions", "EmbedReport", "embed_scene"]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_POLL = 0.2  # seconds between liveness checks while waiting on a queue
MISSING_SENSOR = ("fuse-available", "nodata")


class EmbedError(OutputError, RuntimeError):
    """A run that cannot proceed (existing output, broken progress ...); the message says why."""


class EmbedInterrupted(KeyboardInterrupt):
    """The run stopped early; finished windows are checkpointed and a rerun resumes."""

    def __init__(self, report: EmbedReport):
        super().__init__(f"{report.out}: interrupted after {report.done}/{report.windows} windows")
        self.report = report


@dataclass
class EmbedOptions:
    """How to embed a scene.

    Attributes:
        window: window side in input pixels (multiple of 16).
        overlap: overlap between neighbouring windows in pixels (multiple of 16, < window); each
            output pixel is taken from the window in which it is most central.
        batch_size: windows per forward pass.
        min_valid: an output pixel is valid when at least this fraction of its 16 x 16 input
            pixels is valid in every sensor (1.0: all of them).
        resampling: ``bilinear`` or ``nearest`` for bands coarser than the scene grid.
        s1_unit: unit of Sentinel-1 values on disk, ``dB`` or ``linear``.
        layer: block whose normed output is exported (None: the last, the model's output).
        device: torch device.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        readers: reader threads.
        prefetch: batches read ahead of the model.
        checkpoint_seconds: time between checkpoints.
        checkpoint_windows: also checkpoint after this many windows (0: time only).
        progress: show a progress bar.
        overwrite: discard an existing output or progress and start again.
        gdal_cache_mb: GDAL block cache size (part of the memory bound).
        missing_sensor: what an output pixel gets where a fused sensor has no data.
            ``fuse-available``: it is embedded from the largest set of sensors valid there (the
            model's per-sample sensor masks; see docs/embed.md); ``nodata``: a pixel needs every
            sensor (the output is nodata wherever one is missing).
    """

    window: int = 224
    overlap: int = 0
    batch_size: int = 8
    min_valid: float = 1.0
    resampling: str = "bilinear"
    s1_unit: str = "dB"
    layer: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    readers: int = 2
    prefetch: int = 2
    checkpoint_seconds: float = 60.0
    checkpoint_windows: int = 0
    progress: bool = True
    overwrite: bool = False
    gdal_cache_mb: int = 256
    missing_sensor: str = "fuse-available"

    def validate(self) -> None:
        if self.missing_sensor not in MISSING_SENSOR:
            raise ValueError(
                f"missing_sensor must be one of {MISSING_SENSOR}, got {self.missing_sensor!r}"
            )
        if self.overlap < 0 or self.overlap >= self.window or self.overlap % 16:
            raise ValueError(
                f"overlap must be a multiple of 16 in [0, window), got {self.overlap} for window {self.window}"
            )
        if not 0.0 < self.min_valid <= 1.0:
            raise ValueError(f"min_valid must be in (0, 1], got {self.min_valid}")
        if self.resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {RESAMPLING}, got {self.resampling!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1 or self.readers < 1 or self.prefetch < 1:
            raise ValueError("batch_size, readers and prefetch must be >= 1")


@dataclass
class EmbedReport:
    """What a run did."""

    out: Path
    windows: int = 0
    done: int = 0
    computed: int = 0
    skipped: int = 0
    resumed: int = 0
    recomputed: int = 0
    scene_pixels: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0  # in forward passes (incl. host/device copies)
    wait_seconds: float = 0.0  # the model waiting for windows to be read
    status: str = "done"
    notes: list[str] = field(default_factory=list)
    sensors: tuple[str, ...] = ()  # the scene's sensors
    # "s1+s2_l2a" -> output pixels computed from that sensor set in this run
    sensor_patches: dict[str, int] = field(default_factory=dict)

    @property
    def pixels_per_second(self) -> float:
        """Scene pixels per second of the windows computed in this run (0 when none were)."""
        if not self.seconds or not self.windows:
            return 0.0
        return self.scene_pixels * self.computed / self.windows / self.seconds


def _fingerprint(
    model: TerraFM, model_name: str, scene: Scene, opts: EmbedOptions, table: Path | None
) -> dict[str, object]:
    inputs = {}
    for sensor, src in scene.sources.items():
        inputs[sensor] = {
            "bands": [
                [b.name, b.index, b.nodata if not math.isnan(b.nodata) else "nan"]
                for b in src.bands
            ],
            "files": [file_identity(f) for f in src.files],
            "boa_offset": src.boa_offset,
        }
    return {
        "model": model_name,
        "weights": model_fingerprint(model),
        "inputs": inputs,
        "window": opts.window,
        "overlap": opts.overlap,
        "min_valid": opts.min_valid,
        "resampling": opts.resampling,
        "s1_unit": opts.s1_unit,
        "missing_sensor": opts.missing_sensor,
        "layer": opts.layer,
        "precision": opts.precision,
        "table": str(table.resolve()) if table else None,
    }


# ---------------------------------------------------------------------------------------- stages
class _Failure:
    """An exception raised in a worker thread, carried to the main thread."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put unless ``stop`` is set; False if stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _reader(
    scene: Scene, opts: EmbedOptions, todo: queue.Queue, ready: queue.Queue, stop: threading.Event
) -> None:
    reader = WindowReader(scene, opts.resampling, opts.s1_unit)
    try:
        while not stop.is_set():
            try:
                w = todo.get_nowait()
            except queue.Empty:
                return
            try:
                data: WindowData | _Failure = reader.read(w.row, w.col, w.height, w.width)
            except BaseException as e:  # carried to the main thread, which raises it
                data = _Failure(e)
            if not _put(ready, (w, data), stop) or isinstance(data, _Failure):
                return
    finally:
        reader.close()


@dataclass
class _Result:
    window: Window
    block: np.ndarray  # (D, h, w) owned features, NaN at invalid patches
    cls: np.ndarray | None  # (D,) or None for a skipped window
    valid_fraction: float
    sensors: tuple[str, ...] = ()  # the sensors the window was embedded from


class _Writer(threading.Thread):
    """Writes results, records progress and checkpoints."""

    def __init__(
        self,
        out: EmbeddingWriter,
        table: TableWriter | None,
        progress: Progress,
        opts: EmbedOptions,
        bar: tqdm,
        todo: int,
    ):
        super().__init__(daemon=True, name="terrafm-embed-writer")
        self.out, self.table, self.progress, self.opts, self.bar = out, table, progress, opts, bar
        self.todo = todo
        self._start = time.monotonic()
        self.inbox: queue.Queue = queue.Queue(maxsize=2 * opts.batch_size)
        self.error: BaseException | None = None
        self.written = 0
        self._pending: dict[int, int] = {}
        self._pending_skipped: set[int] = set()
        self._last = time.monotonic()

    def run(self) -> None:
        try:
            while True:
                r = self.inbox.get()
                if r is None:
                    break
                self._write(r)
            self.checkpoint()
        except BaseException as e:  # reported by the main thread
            self.error = e
        finally:
            with contextlib.suppress(Exception):
                self.out.flush()

    def send(self, r: _Result) -> None:
        """Queue a result; raises the writer's error if it has stopped."""
        while True:
            if self.error is not None or not self.is_alive():
                raise self.error or EmbedError("the writer thread stopped")
            try:
                self.inbox.put(r, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _write(self, r: _Result) -> None:
        with _writing(self.out.path):
            crc = self.out.write(r.window, r.block)
        if r.cls is None:
            self._pending_skipped.add(r.window.index)
        else:
            self._pending[r.window.index] = crc
            if self.table is not None:
                self.table.add(r.window, r.valid_fraction, r.cls, r.sensors)
        self.written += 1
        self.bar.update(1)
        n = len(self._pending) + len(self._pending_skipped)
        due = time.monotonic() - self._last >= self.opts.checkpoint_seconds
        if due or (self.opts.checkpoint_windows and n >= self.opts.checkpoint_windows):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Flush the raster, write the table part, then record the windows as done."""
        self._last = time.monotonic()
        if not self._pending and not self._pending_skipped:
            return
        with _writing(self.out.path):
            self.out.flush()
        if self.table is not None:
            part = self.table.flush_part(self.table.next_part_number())
            if part is not None:
                self.progress.parts.append(part)
        self.progress.done.update(self._pending)
        self.progress.skipped |= self._pending_skipped
        self.progress.save()
        self._pending, self._pending_skipped = {}, set()
        if self.bar.disable:  # no progress bar (not a terminal): a log line per checkpoint
            rate = self.written / max(time.monotonic() - self._start, 1e-9)
            left = (self.todo - self.written) / rate if rate else float("inf")
            log.info(
                "%s: %d/%d windows written, %.2f windows/s, about %.0f s left",
                self.out.path.name,
                self.written,
                self.todo,
                rate,
                left,
            )


def _batches(
    ready: queue.Queue,
    total: int,
    batch: int,
    threads: Sequence[threading.Thread],
    report: EmbedReport,
) -> Iterator[list[tuple[Window, WindowData]]]:
    """Group read windows into batches of ``batch`` (the last may be smaller)."""
    got: list[tuple[Window, WindowData]] = []
    seen = 0
    while seen < total:
        t0 = time.monotonic()
        try:
            w, data = ready.get(timeout=_POLL)
        except queue.Empty:
            report.wait_seconds += time.monotonic() - t0
            if not any(t.is_alive() for t in threads) and ready.empty():
                raise EmbedError("reader threads ended before all windows were read") from None
            continue
        report.wait_seconds += time.monotonic() - t0
        seen += 1
        if isinstance(data, _Failure):
            raise data.exc
        got.append((w, data))
        if len(got) == batch:
            yield got
            got = []
    if got:
        yield got


def _stack(arrays: list[np.ndarray], batch: int) -> np.ndarray:
    """(batch, C, h, w): the arrays, then zeros. Every forward pass has the same batch size, so a
    window gets bit-identical features whichever windows share its batch (a resumed run equals an
    uninterrupted one); the padding costs at most one partial batch per scene."""
    out = np.zeros((batch, *arrays[0].shape), dtype=np.float32)
    out[: len(arrays)] = arrays
    return out


def _owned_valid(w: Window, data: WindowData, min_valid: float) -> np.ndarray:
    """(h, w) bool over the window's owned output pixels."""
    rs, cs = w.own_slices(16)
    return data.patch_valid[rs, cs] >= min_valid - 1e-6


@dataclass
class _Pass:
    """One forward pass a window needs: the sensors, the window as the model sees it with them,
    and the owned output pixels (h, w) that take their features from this pass."""

    sensors: tuple[str, ...]
    data: WindowData
    owned: np.ndarray


def _plan(w: Window, raw: WindowData, sensors: Sequence[str], opts: EmbedOptions) -> list[_Pass]:
    """The passes a window needs (none: all nodata); the first gives its CLS embedding.

    ``nodata`` (or one sensor): one pass with every sensor. ``fuse-available``: each owned patch
    takes the largest sensor set valid there (all sensors first), so a fully covered window is one
    pass that equals ``nodata``'s, and a window where S1 is missing over part of it gets a second
    pass from S2 alone for that part. The CLS comes from the pass that fills the most patches.
    """
    if opts.missing_sensor == "nodata" or len(sensors) == 1:
        data = raw.use(sensors)
        owned = _owned_valid(w, data, opts.min_valid)
        return [_Pass(tuple(sensors), data, owned)] if owned.any() else []
    rs, cs = w.own_slices(16)
    taken = np.zeros(w.own_shape, dtype=bool)
    passes = []
    for k in range(len(sensors), 0, -1):
        for subset in itertools.combinations(sensors, k):
            valid = np.logical_and.reduce([raw.sensor_valid[s] for s in subset])
            h, wd = valid.shape
            frac = valid.reshape(h // 16, 16, wd // 16, 16).mean(axis=(1, 3))
            mine = (frac[rs, cs] >= opts.min_valid - 1e-6) & ~taken
            if mine.any():
                passes.append(_Pass(subset, raw.use(subset), mine))
                taken |= mine
    passes.sort(key=lambda p: -int(p.owned.sum()))  # stable: on a tie the larger set first
    return passes


def _forward(
    model: TerraFM,
    inputs: dict[str, torch.Tensor],
    opts: EmbedOptions,
    masks: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, D, gh, gw) patch features and (B, D) CLS, float32 on CPU."""
    dev = torch.device(opts.device)
    x = {
        k: v.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else v
        for k, v in inputs.items()
    }
    m = {k: v.to(dev) for k, v in masks.items()} if masks is not None else None
    dtype = PRECISIONS[opts.precision]
    ctx = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    b, _, h, w = next(iter(x.values())).shape
    with torch.inference_mode(), ctx:
        if opts.layer is None:
            out = model.forward_features(x, masks=m)
            patches, cls = out["x_norm_patchtokens"], out["x_norm_clstoken"]
        else:
            ((patches, cls),) = model.get_intermediate_layers(
                x, n=[opts.layer], return_class_token=True, masks=m
            )
        fmap = patches.float().reshape(b, h // 16, w // 16, -1).permute(0, 3, 1, 2)
        return fmap.cpu(), cls.float().cpu()


def _masks(
    passes: list[_Pass], sensors: Sequence[str], size: int, opts: EmbedOptions
) -> dict[str, torch.Tensor] | None:
    """(size,) bool per sensor: which sensors each pass of the batch uses (padding: all).

    Every batch of a fused ``fuse-available`` run passes masks, even when all are True, so a
    window's features never depend on its batch mates (see _stack)."""
    if opts.missing_sensor == "nodata" or len(sensors) == 1:
        return None
    pad = [True] * (size - len(passes))
    return {s: torch.tensor([s in p.sensors for p in passes] + pad) for s in sensors}


def _compute(
    model: TerraFM,
    sensors: Sequence[str],
    passes: list[_Pass],
    size: int,
    opts: EmbedOptions,
    report: EmbedReport,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(D, gh, gw) features and (D,) CLS of each pass, ``size`` passes per forward."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(0, len(passes), size):
        chunk = passes[i : i + size]
        inputs = {
            s: torch.from_numpy(_stack([p.data.inputs[s] for p in chunk], size)) for s in sensors
        }
        t0 = time.monotonic()
        fmap, cls = _forward(model, inputs, opts, _masks(chunk, sensors, size, opts))
        report.model_seconds += time.monotonic() - t0
        out += [(fmap[j], cls[j]) for j in range(len(chunk))]
    return out


def _run_windows(
    model: TerraFM,
    scene: Scene,
    todo_windows: list[Window],
    writer: _Writer,
    opts: EmbedOptions,
    report: EmbedReport,
    max_windows: int | None,
) -> None:
    stop = threading.Event()
    todo: queue.Queue = queue.Queue()
    for w in todo_windows:
        todo.put(w)
    ready: queue.Queue = queue.Queue(maxsize=opts.prefetch * opts.batch_size)
    # One batch size for the whole scene, however many windows are left (see _stack).
    size = min(opts.batch_size, report.windows)
    readers = [
        threading.Thread(
            target=_reader,
            args=(scene, opts, todo, ready, stop),
            daemon=True,
            name=f"terrafm-embed-reader-{i}",
        )
        for i in range(min(opts.readers, max(1, len(todo_windows))))
    ]
    for t in readers:
        t.start()
    try:
        for batch in _batches(ready, len(todo_windows), size, readers, report):
            planned = [(w, _plan(w, raw, scene.sensors, opts)) for w, raw in batch]
            flat = [p for _, passes in planned for p in passes]
            results = iter(_compute(model, scene.sensors, flat, size, opts, report))
            for w, passes in planned:
                block = np.full((model.embed_dim, *w.own_shape), np.nan, dtype=np.float32)
                if not passes:
                    writer.send(_Result(w, block, None, 0.0))
                    report.skipped += 1
                    continue
                rs, cs = w.own_slices(16)
                cls = None
                for p in passes:
                    fmap, c = next(results)
                    block[:, p.owned] = fmap[:, rs, cs].numpy()[:, p.owned]
                    cls = c.numpy().copy() if cls is None else cls
                    key = "+".join(p.sensors)
                    report.sensor_patches[key] = report.sensor_patches.get(key, 0) + int(
                        p.owned.sum()
                    )
                first = passes[0]
                frac = float(first.data.valid.mean())
                writer.send(_Result(w, block, cls, frac, first.sensors))
                report.computed += 1
            if max_windows is not None and report.computed + report.skipped >= max_windows:
                raise KeyboardInterrupt
    finally:
        stop.set()
        for t in readers:
            t.join()


# ---------------------------------------------------------------------------------------- setup
def _clear(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _complete(out: EmbeddingWriter, table: TableWriter | None, fp: dict[str, object]) -> bool:
    """Whether ``out`` (and the table) are a finished run with this fingerprint."""
    if progress_path(out.path).exists() or not out.path.exists():
        return False
    wanted = [table.path] if table else []
    return read_tags(out.path).get(COMPLETE_TAG) == fingerprint_digest(fp) and all(
        p.exists() for p in wanted
    )


def _start_or_resume(
    out: EmbeddingWriter,
    table: TableWriter | None,
    preview: Path | None,
    windows: list[Window],
    fp: dict[str, object],
    opts: EmbedOptions,
    report: EmbedReport,
) -> Progress | None:
    """The progress to continue from, or None when the output is already complete.

    Nothing is overwritten unasked: an existing ``--out``, ``--table`` or ``--preview`` that is
    not this run's own is refused unless ``overwrite``."""
    ppath = progress_path(out.path)
    others = [("--table", table.path if table else None), ("--preview", preview)]
    if opts.overwrite:
        _clear(ppath, out.path, *([table.parts_dir] if table else []))
    if ppath.exists():
        progress = Progress.load(ppath, fp)
        refuse_existing(
            (w, p) for w, p in others if p is not None and str(p) not in progress.finished
        )
        problem = out.matches() if out.path.exists() else "missing"
        if problem is not None:
            log.warning("%s: %s; starting this scene again", out.path, problem)
            report.notes.append(f"output {problem}: restarted")
        else:
            _verify(out, table, windows, progress, report)
            return progress
    elif out.path.exists():
        if _complete(out, table, fp):
            report.status = "up-to-date"
            return None
        raise EmbedError(
            f"{out.path} exists and is not from an interrupted run with these inputs and options "
            "(no progress file); pass --overwrite to replace it"
        )
    if not opts.overwrite:
        refuse_existing(others)
    if table is not None:
        table.clear_parts()
    progress = Progress(ppath, fp)
    progress.save()  # first, so a crash during creation is resumed rather than refused
    with _writing(out.path):
        out.create()
    return progress


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (GDAL's ``Write failed``, ENOSPC ...) into an OutputError."""
    try:
        yield
    except OSError as e:
        if isinstance(e, OutputError):  # already says which file and why
            raise
        raise output_error(path, e) from e


def _verify(
    out: EmbeddingWriter,
    table: TableWriter | None,
    windows: list[Window],
    progress: Progress,
    report: EmbedReport,
) -> None:
    """Drop recorded windows whose block on disk (or table row) does not match the progress."""
    from terrafm.embed.writer import block_checksum

    by_index = {w.index: w for w in windows}
    bad = [
        i
        for i, crc in progress.done.items()
        if i not in by_index or block_checksum(out.read(by_index[i])) != crc
    ]
    if table is not None:
        import pyarrow.parquet as pq

        have: set[int] = set()
        for p in list(progress.parts):
            f = table.parts_dir / p
            try:
                have |= set(pq.read_table(f, columns=["window_id"]).column("window_id").to_pylist())
            except Exception as e:  # a lost or damaged part: its windows are recomputed
                log.warning("%s: unreadable table part (%s); its windows are recomputed", f, e)
                progress.parts.remove(p)
        bad += [i for i in progress.done if i not in have and i not in bad]
    for i in bad:
        progress.done.pop(i, None)
    if bad:
        log.warning(
            "%s: %d recorded window(s) do not match the file and are recomputed: %s",
            out.path,
            len(bad),
            sorted(bad)[:10],
        )
    report.recomputed = len(bad)
    report.resumed = len(progress.done) + len(progress.skipped)


def _model_tags(
    model_name: str,
    checkpoint: str | None,
    scene: Scene,
    opts: EmbedOptions,
    dim: int,
    weights: str,
) -> dict[str, str]:
    import json

    return {
        "TERRAFM_MODEL": model_name,
        "TERRAFM_CHECKPOINT": str(checkpoint or ""),
        "TERRAFM_WEIGHTS": weights,
        "TERRAFM_SENSORS": ",".join(scene.sensors),
        "TERRAFM_INPUTS": json.dumps(scene.files),
        "TERRAFM_OPTIONS": json.dumps(
            {k: v for k, v in asdict(opts).items() if k not in ("progress", "overwrite")}
        ),
        "TERRAFM_FEATURES": str(dim),
        "TERRAFM_NODATA": "NaN where the input was nodata",
    }


def embed_scene(
    model: TerraFM,
    inputs: Sequence[SourceSpec] | Scene,
    out: str | Path,
    *,
    table: str | Path | None = None,
    preview: str | Path | None = None,
    options: EmbedOptions | None = None,
    model_name: str = "terrafm",
    checkpoint: str | None = None,
    max_windows: int | None = None,
    on_start: Callable[[Scene, int], None] | None = None,
) -> EmbedReport:
    """Embed one scene into a patch-embedding GeoTIFF (+ optional GeoParquet table and preview).

    Args:
        model: the encoder (moved to ``options.device`` and set to eval here).
        inputs: one :class:`SourceSpec` per sensor (several = fused), or an opened :class:`Scene`.
        out: the embedding GeoTIFF to write.
        table: GeoParquet file with one row per window (footprint, CLS embedding, sources).
        preview: PNG with a PCA-RGB rendering of the embedding raster.
        options: windowing, batching, precision ...
        model_name: recorded in the outputs.
        checkpoint: recorded in the outputs.
        max_windows: stop (as if interrupted) after this many windows; for tests and dry runs.
        on_start: called with the scene and the number of windows left, before reading starts.

    Returns:
        The run's :class:`EmbedReport`.

    Raises:
        SourceError: bad inputs (named file). EmbedError / ProgressError: existing outputs that do
        not belong to this run. EmbedInterrupted: stopped early (resume by calling again).
    """
    opts = options or EmbedOptions()
    opts.validate()
    t0 = time.monotonic()
    scene = inputs if isinstance(inputs, Scene) else open_scene(inputs)
    for note in scene.notes:
        log.info("%s", note)
    out = Path(out)
    grid = WindowGrid(
        scene.grid.height,
        scene.grid.width,
        opts.window,
        opts.window - opts.overlap,
        model.patch_size,
    )
    windows = grid.windows()
    report = EmbedReport(
        out,
        windows=len(windows),
        scene_pixels=scene.grid.height * scene.grid.width,
        notes=list(scene.notes),
        sensors=tuple(scene.sensors),
    )
    model.eval().to(opts.device)
    table_path = Path(table) if table is not None else None
    fp = _fingerprint(model, model_name, scene, opts, table_path)
    dim = model.embed_dim
    writer = EmbeddingWriter(
        out,
        dim,
        *grid.out_shape,
        scene.grid.crs,
        scene.grid.transform,
        _model_tags(model_name, checkpoint, scene, opts, dim, str(fp["weights"])),
        model.patch_size,
    )
    tw = None
    if table_path is not None:
        tw = TableWriter(
            table_path,
            dim,
            scene.grid.crs,
            scene.grid.transform,
            scene.files,
            {"model": model_name, "checkpoint": checkpoint, "fingerprint": fp},
        )
    preview_path = Path(preview) if preview is not None else None
    if opts.overwrite or not _complete(writer, tw, fp):  # there is work: it must be writable
        _check_outputs(out, table_path, preview_path)
    with rasterio.Env(GDAL_CACHEMAX=opts.gdal_cache_mb):
        progress = _start_or_resume(writer, tw, preview_path, windows, fp, opts, report)
        if progress is None:
            report.done = report.windows
            report.seconds = time.monotonic() - t0
            return report
        todo = [
            w for w in windows if w.index not in progress.done and w.index not in progress.skipped
        ]
        if on_start is not None:
            on_start(scene, len(todo))
        bar = tqdm(
            total=len(windows),
            initial=len(windows) - len(todo),
            unit="win",
            desc=out.name,
            disable=not opts.progress,
            dynamic_ncols=True,
        )
        wt = _Writer(writer, tw, progress, opts, bar, len(todo))
        wt.start()
        interrupted = False
        try:
            _run_windows(model, scene, todo, wt, opts, report, max_windows)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if wt.is_alive():
                wt.inbox.put(None)
            wt.join()
            bar.close()
        if wt.error is not None:
            raise wt.error
        report.done = len(progress.done) + len(progress.skipped)
        report.seconds = time.monotonic() - t0
        if interrupted:
            report.status = "interrupted"
            raise EmbedInterrupted(report)
        if not progress.done:
            msg = (
                f"{out}: every window is nodata (no pixel has "
                + ("every sensor" if opts.missing_sensor == "nodata" else "any sensor")
                + f" valid at min_valid={opts.min_valid})"
            )
            log.warning("%s", msg)
            report.notes.append("all nodata")
            report.status = "done, ALL NODATA"
        _finish(writer, tw, preview_path, progress, fp)
    report.seconds = time.monotonic() - t0
    return report


def _check_outputs(out: Path, table: Path | None, preview: Path | None) -> None:
    """Before the first window: every output folder can be written; a killed run's temporaries
    beside the outputs are removed."""
    check_writable(out, "--out")
    if table is not None:
        check_writable(table, "--table")
    if preview is not None:
        check_writable(preview, "--preview")
    targets = [
        out,
        progress_path(out),
        *([table] if table else []),
        *([preview] if preview else []),
    ]
    remove_stale_temps(targets)
    if table is not None:
        parts = table.with_name(table.name + ".parts")
        remove_stale_temps([parts / "part-*.parquet"])  # a glob: every part's temporaries


def _finish(
    writer: EmbeddingWriter,
    table: TableWriter | None,
    preview: Path | None,
    progress: Progress,
    fp: dict[str, object],
) -> None:
    """Merge the table, draw the preview, mark the raster complete, remove the sidecars."""
    if table is not None:
        table.merge(progress.parts)
        progress.finished.append(str(table.path))
        progress.save()
    if preview is not None:
        from terrafm.embed.pca import write_preview

        try:
            write_preview(writer.path, preview)
            progress.finished.append(str(preview))
            progress.save()
        except ValueError as e:  # an all-nodata scene has nothing to show
            log.warning("no preview: %s", e)
    with _writing(writer.path):
        writer.finish({COMPLETE_TAG: fingerprint_digest(fp)})
    progress.remove()
    if table is not None:
        table.clear_parts()


__all__ += ["ProgressError"]
