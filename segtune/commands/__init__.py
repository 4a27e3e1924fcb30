"""Every command line, behind one `segtune` console script.

    segtune train --recipe demo.yaml                              # also: accelerate launch -m segtune train ...
    segtune evaluate --model outputs/demo --recipe demo.yaml
    segtune predict --model outputs/demo photo.jpg --out predictions/
    segtune export outputs/demo --format onnx                     # checked against PyTorch; outputs/demo/onnx/
    segtune push outputs/demo --repo_id user/segformer-demo
    segtune data check --recipe folder.yaml --set data.path=data/mine
    segtune recipe show demo.yaml --set optim.lr=1e-3

`python -m segtune COMMAND` is the same program. One module per command, each with `add_arguments(parser)`
and `run(args)`; the first line of its docstring is its one-line description in `segtune --help`. The older
forms stay as aliases of one command each (`alias`): `python -m segtune.finetune` (train),
`python -m segtune.predict`, `python -m segtune.push`, `python -m segtune.data`, `python -m segtune.export`, and
`accelerate launch segtune/finetune.py`. Importing this package, or asking for `--help`, loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from types import ModuleType

from . import cli

COMMANDS = ("train", "evaluate", "predict", "export", "push", "data", "recipe")


def main(argv: list[str] | None = None, prog: str = "segtune") -> int:
    """The `segtune` console script: run one command; return its exit status (1 on a user error)."""
    return _run(build_parser(prog), argv)


def build_parser(prog: str = "segtune") -> cli.ArgumentParser:
    """The parser of every command, each a subcommand listed with its one-line description."""
    parser = cli.ArgumentParser(prog=prog, description="Fine-tune, evaluate, run and share SegFormer models.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _command(name)
        _configure(commands.add_parser(name, help=_summary(module), description=module.__doc__), module)
    return parser


def alias(name: str, prog: str) -> Callable[[list[str] | None], int]:
    """The `main` of an older command line that runs the one command `name` under its own name `prog`."""

    def main(argv: list[str] | None = None) -> int:
        module = _command(name)
        parser = cli.ArgumentParser(prog=prog, description=module.__doc__)
        _configure(parser, module)
        return _run(parser, argv)

    main.__doc__ = f"`{prog}`, the same as `segtune {name}`: return the exit status (1 on a user error)."
    return main


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    return cli.main(args, args.run)


def _command(name: str) -> ModuleType:
    return importlib.import_module(f".{name}", __name__)


def _summary(module: ModuleType) -> str:
    return module.__doc__.strip().splitlines()[0]


def _configure(parser: argparse.ArgumentParser, module: ModuleType) -> None:
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)


__all__ = ["COMMANDS", "alias", "build_parser", "main"]
