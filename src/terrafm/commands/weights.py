"""``terrafm weights``: list, describe, fetch and hash registered weights (:mod:`terrafm.weights`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from terrafm.weights.registry import Weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="registered weights (name, model, source, verified or not)")
    ls.add_argument("--model", help="only the weights of this variant")
    ls.add_argument(
        "--register", nargs="*", default=[], metavar="CKPT", help="also list these .safetensors"
    )
    show = sub.add_parser("show", help="everything an entry records, as JSON")
    show.add_argument("name", help="weights name, alias (TerraFM-B) or a .safetensors checkpoint")
    fetch = sub.add_parser("fetch", help="download an entry into the cache and verify it")
    fetch.add_argument("name")
    fetch.add_argument("--sha256", help="expected hex digest (required unless recorded)")
    fetch.add_argument("--revision", help="revision to download when the entry pins none")
    fetch.add_argument("--allow-unverified", action="store_true", help="accept an unknown hash")
    fetch.add_argument("--cache-dir", help="cache folder (default: $TERRAFM_CACHE or ~/.cache)")
    hsh = sub.add_parser("hash", help="print the sha256 of files (to pin an entry)")
    hsh.add_argument("files", nargs="+")
    ver = sub.add_parser("verify", help="check a file against a sha256; exit 1 on mismatch")
    ver.add_argument("file")
    ver.add_argument("--sha256", required=True)


def _entry(name: str) -> Weights:
    from terrafm.weights.registry import Weights, get_weights

    if name.endswith(".safetensors"):
        return Weights.from_checkpoint(name)
    return get_weights(name)


def run(args: argparse.Namespace) -> int:
    from terrafm.weights.checkpoint import CheckpointError

    try:
        return _run(args)
    except (CheckpointError, OSError) as e:
        print(f"terrafm weights {args.action}: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from terrafm.weights import registry
    from terrafm.weights.fetch import HashMismatchError, sha256_file, verify_file

    if args.action == "list":
        for ckpt in args.register:
            registry.register_checkpoint(ckpt, overwrite=True)
        for name in registry.list_weights(args.model):
            w = registry.get_weights(name)
            source = w.path or w.resolved_url()
            check = "sha256 " + w.sha256[:12] if w.sha256 else "sha256 unknown"
            print(f"{name:32s} {w.model:14s} {check:20s} {source}")
        return 0
    if args.action == "show":
        print(json.dumps(_entry(args.name).to_dict(), indent=2))
        return 0
    if args.action == "fetch":
        path = registry.fetch_weights(
            args.name,
            sha256=args.sha256,
            revision=args.revision,
            allow_unverified=args.allow_unverified,
            cache_dir=args.cache_dir,
        )
        print(path)
        return 0
    if args.action == "hash":
        for f in args.files:
            print(f"{sha256_file(f)}  {f}")
        return 0
    try:
        verify_file(args.file, args.sha256)
    except HashMismatchError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"OK  {args.file}")
    return 0
