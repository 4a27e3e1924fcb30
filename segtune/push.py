"""Push a finished run to the Hugging Face Hub.

python -m segtune.push outputs/cityscapes --repo-id user/segformer-b0-cityscapes [--private] [--format segformer]
"""

from __future__ import annotations

import argparse
import sys

from .errors import USER_ERRORS
from .hub import FORMATS, push


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Push a finished segtune run to the Hugging Face Hub.")
    parser.add_argument("output_dir", help="the run's output directory")
    parser.add_argument("--repo-id", help="user/name; default: hub.repo_id of the run's recipe")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private")
    parser.add_argument(
        "--format", choices=FORMATS, help="mix_transformer (remote code) or segformer (stock transformers)"
    )
    parser.add_argument("--overwrite", action="store_true", help="push even if the repo holds another model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        url = push(args.output_dir, args.repo_id, private=args.private, format=args.format, overwrite=args.overwrite)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
