"""``terrafm change``: per-patch cosine distance between two embedding rasters of one grid.

See docs/search.md.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("before", help="embedding GeoTIFF written by terrafm embed (first date)")
    p.add_argument("after", help="embedding GeoTIFF of the same grid and model (second date)")
    p.add_argument("--out", required=True, help="GeoTIFF of 1 - cos per patch (NaN = nodata)")
    p.add_argument("--threshold", type=float, help="distance above which a patch counts as changed")
    p.add_argument(
        "--mask", help="uint8 GeoTIFF: 1 changed, 0 unchanged, 255 nodata (needs --threshold)"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it loads
    from rasterio.errors import RasterioError

    from terrafm.search import ChangeError, IdentityError, change_map

    try:
        r = change_map(args.before, args.after, args.out, threshold=args.threshold, mask=args.mask)
    except (ChangeError, IdentityError, RasterioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.out}: {r.valid}/{r.pixels} valid patches, mean distance {r.mean:.4f}, max {r.max:.4f}"
    )
    if r.changed is not None:
        print(f"{r.changed} patches ({r.changed / max(r.valid, 1):.1%}) above {args.threshold}")
    return 0
