"""The ``terrafm`` command line: a thin dispatcher over library functions.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their subcommand runs, so ``terrafm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("terrafm.commands.info", "list models and sensors, or describe a checkpoint"),
    "data": (
        "terrafm.commands.data",
        "check pretraining roots: curation counts, strata and a read scan",
    ),
    "prepare": (
        "terrafm.commands.prepare",
        "convert pretraining sources into training shards (Zarr), once and resumably",
    ),
    "eval": (
        "terrafm.commands.eval",
        "evaluate an encoder on GEO-Bench, Copernicus-Bench, Landslide4Sense or a task folder",
    ),
    "embed": (
        "terrafm.commands.embed",
        "embed scene rasters into a georeferenced patch-embedding GeoTIFF and table",
    ),
    "search": (
        "terrafm.commands.search",
        "index embed tables and find the windows most like example windows or places",
    ),
    "change": (
        "terrafm.commands.change",
        "per-patch cosine distance between two embedding rasters of one grid",
    ),
    "serve-export": (
        "terrafm.commands.serve_export",
        "export the encoder to ONNX or torch.export for serving",
    ),
    "pretrain": (
        "terrafm.commands.pretrain",
        "self-supervised pretraining (DINO + dual centering) from a YAML config",
    ),
    "export": (
        "terrafm.commands.export",
        "export a pretraining run's encoder as published .pth + .safetensors",
    ),
    "weights": (
        "terrafm.commands.weights",
        "list, describe, fetch (verified) and hash registered weights",
    ),
    "make-world": (
        "terrafm.commands.make_world",
        "generate the built-in synthetic multi-sensor world and its held-out tasks",
    ),
    "quickstart": (
        "terrafm.commands.quickstart",
        "the whole pipeline on the built-in world: generate, pretrain, evaluate, report",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from terrafm import __version__

    parser = argparse.ArgumentParser(
        prog="terrafm", description="TerraFM: multisensor Earth-observation foundation model"
    )
    parser.add_argument("--version", action="version", version=f"terrafm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of an error (implies --verbose)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def _quiet_libraries(verbose: bool) -> None:
    """GDAL/rasterio report INFO chatter (driver notes, CPLE messages) through logging: keep it
    off the console unless debugging."""
    for name in ("rasterio", "fiona", "matplotlib", "PIL", "fsspec", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand. A known failure (:class:`terrafm.errors.TerraFMError`, an ``OSError``)
    is reported as one line naming the path and the cause, exit code 1 (2 for usage errors);
    ``--debug`` adds the traceback. See docs/errors.md."""
    from terrafm.errors import TerraFMError, one_line

    args = build_parser().parse_args(argv)
    verbose = args.verbose or args.debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _quiet_libraries(verbose)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (TerraFMError, OSError) as e:
        if args.debug:
            traceback.print_exception(e)
        print(f"terrafm {args.command}: error: {one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
