"""``fashionlens train``: a run config from a recipe / YAML file, the flags and ``--set`` overrides, then
``training.fit``; under torchrun each process runs this and rank 0 prints the summary."""

from __future__ import annotations

import argparse
import json
from typing import Any


def build_train_config(args: argparse.Namespace):
    """RunConfig from --recipe / --config, then the explicit flags, then --set overrides."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.config import RunConfig, apply_overrides, load_yaml
    from fashionlens.recipes import load_recipe

    cfg = load_recipe(args.recipe) if args.recipe else RunConfig()
    if args.config:
        cfg = load_yaml(args.config)
    cfg.data.spec = args.data
    for flag, (section, field) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            if field is None:
                setattr(cfg, section, value)
            else:
                setattr(getattr(cfg, section), field, value)
    if args.pretrained:
        cfg.model.pretrained = True
    if args.no_pretrained:
        cfg.model.pretrained = False
    if args.teacher:  # distil these runs' ensemble; loss.kd 1 unless the recipe or --set says otherwise
        cfg.train.teachers = list(args.teacher)
        if cfg.loss.kd <= 0:
            cfg.loss.kd = 1.0
    apply_overrides(cfg, args.set or [])
    return cfg


TRAIN_FLAGS = {  # argparse dest -> (config section, field)
    "backbone": ("model", "backbone"), "model": ("model", "name"), "epochs": ("train", "epochs"),
    "image_size": ("data", "image_size"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "max_minutes": ("train", "max_minutes"), "init_from": ("train", "init_from"), "seed": ("seed", None),
    "workers": ("data", "num_workers"), "threads": ("threads", None), "device": ("train", "device"),
}


def cmd_train(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.training.distributed import env_rank
    from fashionlens.training.fit import fit

    cfg = build_train_config(args)
    summary = fit(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    if env_rank() == 0:  # under torchrun, one summary (rank 0's)
        print(json.dumps(summary, default=str))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``train`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("train", help="train a model (multi-task FashionNet by default)")
    p.add_argument("--data", required=True, help="data spec (see `fashionlens data stats --help`)")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds last.pt)")
    p.add_argument("--config", help="YAML run config (sections data, train, model, loss)")
    p.add_argument("--recipe", help="named recipe shipped with fashionlens (e.g. photos)")
    p.add_argument("--backbone", help="tiny_cnn, tf_efficientnet_lite0/1/2, resnet18, ... (any timm name)")
    p.add_argument("--model", help="model preset: fashionnet (global + landmark-pooled local) or global")
    pre = p.add_mutually_exclusive_group()
    pre.add_argument("--pretrained", action="store_true", help="ImageNet weights (offline for EfficientNet-Lite)")
    pre.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes")
    p.add_argument("--init-from", help="run directory whose backbone initialises this one (identity pre-training)")
    p.add_argument("--teacher", action="append", metavar="RUN",
                   help="distil this run (repeat for an ensemble: their averaged probabilities) into the new model; "
                        "sets loss.kd to 1 unless given")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loader processes (-1: sized to the machine)")
    p.add_argument("--device", help="auto (a CUDA GPU when present, else the CPU), cpu, cuda, cuda:N or mps; "
                                    "under torchrun each process takes cuda:LOCAL_RANK (default: train.device, auto)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override any config field")
    p.add_argument("--no-resume", action="store_true", help="start over even if RUN_DIR/last.pt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)
