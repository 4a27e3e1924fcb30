"""Push a finished run to the Hugging Face Hub.

    segtune push outputs/cityscapes --repo_id user/segformer-b0-cityscapes [--private] [--format segformer]
    segtune push outputs/lora-run --repo_id user/segformer-b0-lora --adapter

Uploads the model, its image processor, the recipe, the metrics and a model card; prints the commit URL. With
--adapter, a LoRA run's adapter alone instead of its merged model, with a card naming the base model it needs.
"""

from __future__ import annotations

import argparse

from ..recipe import ARCHS
from . import cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="the run's output directory")
    parser.add_argument(
        "--repo_id", help="user/name (default: that of the failed push being retried, else the run's hub.repo_id)"
    )
    parser.add_argument(
        "--private",
        action="store_true",
        default=None,
        help="create the repo private (default: the run's hub.private)",
    )
    parser.add_argument(
        "--format",
        choices=ARCHS,
        help="mix_transformer (remote code) or segformer (stock transformers) (default: that of the failed push being retried, else the run's hub.format)",
    )
    parser.add_argument(
        "--adapter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="push a LoRA run's adapter alone (OUTPUT/adapter), or with --no-adapter its merged model (default: that of the failed push being retried, else the run's hub.adapter)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="push even if the repo holds another model (default: refuse)"
    )


def run(args: argparse.Namespace) -> None:
    """Push; print the commit URL."""
    cli.quiet_transformers()
    from ..hub import push

    url = push(
        args.output_dir,
        args.repo_id,
        private=args.private,
        model_format=args.format,
        adapter=args.adapter,
        overwrite=args.overwrite,
    )
    print(f"pushed: {url}")
