"""Push a finished run to the Hugging Face Hub.

python -m segtune.push outputs/cityscapes --repo_id user/segformer-b0-cityscapes [--private] [--format segformer]
"""

from __future__ import annotations

import argparse
import sys

from . import cli
from .recipe import ARCHS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser("segtune.push", "Push a finished segtune run to the Hugging Face Hub.")
    parser.add_argument("output_dir", help="the run's output directory")
    parser.add_argument("--repo_id", help="user/name; default: hub.repo_id of the run's recipe")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private")
    parser.add_argument(
        "--format", choices=ARCHS, help="mix_transformer (remote code) or segformer (stock transformers)"
    )
    parser.add_argument("--overwrite", action="store_true", help="push even if the repo holds another model")
    return parser.parse_args(argv)


def push(args: argparse.Namespace) -> None:
    from .hub import push

    url = push(args.output_dir, args.repo_id, private=args.private, model_format=args.format, overwrite=args.overwrite)
    print(f"pushed: {url}")


def main(argv: list[str] | None = None) -> int:
    """Push; print the commit URL; 0 on success, 1 on a user error."""
    return cli.main(parse_args(argv), push)


if __name__ == "__main__":
    sys.exit(main())
