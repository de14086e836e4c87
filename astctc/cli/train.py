"""Training commands: train, init-check, average."""

from __future__ import annotations

import argparse
import json

from .common import add_parser


def cmd_train(a: argparse.Namespace) -> None:
    from ..train import train

    summary = train(a.config, a.set or [])
    if summary:
        print(json.dumps(summary))


def cmd_init_check(a: argparse.Namespace) -> None:
    from ..train.init_check import init_check

    print(init_check(a.config, a.set or [], a.init))


def cmd_average(a: argparse.Namespace) -> None:
    from ..train import average_checkpoints

    print(average_checkpoints(a.exp, a.last, a.out))


def register(sub) -> None:
    s = add_parser(sub, "train", "train a model from a YAML config", cmd_train)
    s.add_argument("--config", default=None, help="YAML config (defaults otherwise)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")

    s = add_parser(sub, "init-check", "show what `train` would load, adapt and leave new from init:", cmd_init_check)
    s.add_argument("--init", default=None, help="hf://<repo id> or a directory (default: init: of the config)")
    s.add_argument("--config", default=None, help="training YAML config (defaults otherwise)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")

    s = add_parser(sub, "average", "average the last N checkpoints into a model directory", cmd_average)
    s.add_argument("--exp", required=True, help="experiment directory holding the checkpoints")
    s.add_argument("--last", type=int, default=5, help="how many of the latest checkpoints")
    s.add_argument("--out", default=None, help="model directory (default: EXP/model)")
