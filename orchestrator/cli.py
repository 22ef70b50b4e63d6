"""The `mixsweep` command line.

User errors (bad spec, bad flag, missing file) print one message and exit with code 2, without
a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError


def _cmd_preview(args: argparse.Namespace) -> int:
    from .preview import render_preview

    presets = [p.strip() for p in args.presets.split(",")] if args.presets else None
    photos = [p.strip() for p in args.photos.split(",")] if args.photos else None
    kwargs = {"photos": photos} if photos else {}
    path = render_preview(args.out, presets=presets, schemes=args.schemes, size=args.size, seed=args.seed,
                          target=args.target, lam=None if args.lam == "preset" else args.lam, **kwargs)
    print(path.resolve())
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from trainables.data import list_datasets
    from trainables.mixing import factor_values
    from trainables.mixing.config import PRESETS
    from trainables.models import list_models

    print("presets (mix.preset):")
    for name in PRESETS.names():
        print(f"  {name:22s} {PRESETS.help(name)}")
    print("\nfactor values:")
    for key, values in factor_values().items():
        if key != "preset":
            print(f"  mix.{key:16s} {', '.join(values)}")
    print(f"\ndatasets (dataset): {', '.join(list_datasets())}")
    print(f"models (model):     {', '.join(list_models())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixsweep",
        description="Ablation and hyperparameter sweeps for saliency-guided mixing augmentation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("preview", help="render what each preset does to real photos (PNG)")
    p.add_argument("--out", default="mixsweep_preview.png", help="PNG path (default: %(default)s)")
    p.add_argument("--presets", help="comma-separated presets (default: all that mix)")
    p.add_argument("--schemes", action="store_true", help="add one row per SaliencyMix selection scheme")
    p.add_argument("--photos", help="comma-separated scikit-image photos (default: cat, coffee, astronaut, ...)")
    p.add_argument("--size", type=int, default=128, help="photo side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=int, default=0, help="index of the photo shown as target (default: 0, the cat)")
    p.add_argument("--lam", default="fixed(0.6)",
                   help="lam for presets that draw one, or 'preset' to keep their distribution (default: %(default)s)")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("list", help="presets, factor values, datasets and models")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mixsweep {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mixsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Path", "build_parser", "main"]
