"""``terrafm pretrain``: self-supervised pretraining from a YAML config (docs/design.md, "Objective").

Runs as one process by default; launch under ``torchrun`` for DDP / FSDP2 (see
docs/pretraining.md).
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("terrafm.pretrain")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="YAML config file, or the name of a shipped one (pretrain_tiny_cpu, "
        "pretrain_base_majortom, pretrain_large_majortom)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. data.root=world/ optim.epochs=10 train.output_dir=runs/x",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue exactly from <train.output_dir>/checkpoint.pt",
    )
    p.add_argument(
        "--ablate",
        default="",
        help="comma-separated components to switch off: fusion, modality_aug, dual_centering",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from terrafm.config import (
        ConfigError,
        PretrainConfig,
        ablation_overrides,
        load_config,
        shipped_config,
    )
    from terrafm.ssl.train import NonFiniteLossError, pretrain

    try:
        path = Path(args.config)
        if not path.is_file() and "/" not in args.config:
            path = shipped_config(args.config)
        ablate = [a.strip() for a in args.ablate.split(",") if a.strip()]
        cfg = load_config(PretrainConfig, path, [*ablation_overrides(ablate), *args.overrides])
        result = pretrain(cfg, resume=args.resume)
    except (ConfigError, FileExistsError, NonFiniteLossError) as e:
        log.error("%s", e)
        return 2 if isinstance(e, (ConfigError, FileExistsError)) else 1
    if result.stopped == "signal":
        log.warning("stopped by SIGTERM at step %d; resume with --resume", result.step)
        return 143
    log.info("done at step %d: %s (encoder: %s)", result.step, result.output_dir, result.encoder)
    return 0
