"""``terrafm serve-export``: the encoder as ONNX or a ``torch.export`` program, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="model name (terrafm_base ...); optional with a .safetensors checkpoint"
    )
    p.add_argument("--checkpoint", help="published .pth or terrafm .safetensors weights")
    p.add_argument(
        "--sensors",
        required=True,
        help="comma-separated sensor keys in input order; several = fused",
    )
    p.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    p.add_argument(
        "--format", choices=("onnx", "torch-export"), help="default: from the --out suffix"
    )
    p.add_argument("--size", type=int, default=224, help="input height and width (multiple of 16)")
    p.add_argument("--height", type=int, help="input height, overrides --size")
    p.add_argument("--width", type=int, help="input width, overrides --size")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument(
        "--atol", type=float, default=1e-4, help="largest accepted difference to PyTorch"
    )
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from terrafm.commands.embed import _model
    from terrafm.outputs import check_writable, refuse_existing
    from terrafm.serving import check_onnx, check_torch_export, export_onnx, export_torch

    fmt = args.format or (
        "onnx"
        if str(args.out).endswith(".onnx")
        else "torch-export"
        if str(args.out).endswith(".pt2")
        else None
    )
    if fmt is None:
        raise SystemExit("error: pass --format onnx|torch-export or use an .onnx / .pt2 file name")
    sensors = [s.strip() for s in args.sensors.split(",") if s.strip()]
    h, w = args.height or args.size, args.width or args.size
    if not args.overwrite:
        refuse_existing([("--out", args.out)])
    check_writable(args.out, "--out")
    model, name = _model(args)
    try:
        if fmt == "onnx":
            path = export_onnx(model, sensors, args.out, h, w, model_name=name, opset=args.opset)
        else:
            path = export_torch(model, sensors, args.out, h, w, model_name=name)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({fmt}; inputs {sensors} of {h} x {w}, dynamic batch)")
    if args.no_check:
        return 0
    check = (check_onnx if fmt == "onnx" else check_torch_export)(path, model, sensors, h, w)
    verdict = "ok" if check.ok(args.atol) else f"FAILED (atol {args.atol})"
    print(
        f"check vs PyTorch, batch {check.batch}: max |diff| cls {check.cls:.2e}, patch tokens {check.patch_tokens:.2e}: {verdict}"
    )
    return 0 if check.ok(args.atol) else 1
