"""The ``fashionlens`` command: each subcommand parses its arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence


def _read(spec: str, skip_missing: bool):
    from fashionlens.data.readers import read

    return read(spec, missing="skip" if skip_missing else "error")


def cmd_synth(args: argparse.Namespace) -> int:
    from fashionlens.data.garments import render_dataset

    summary = render_dataset(args.out, items=args.items, views=args.views, size=args.size, seed=args.seed,
                             workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from fashionlens.data.stats import dataset_stats, format_stats

    stats = dataset_stats(_read(args.spec, args.skip_missing))
    print(json.dumps(stats) if args.json else format_stats(stats))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from fashionlens.data.show import contact_sheet

    data = _read(args.spec, args.skip_missing)
    if args.split:
        data = data.split(*args.split.split(","))
    path = contact_sheet(data, args.out, n=args.n, cols=args.cols, thumb=args.thumb, seed=args.seed)
    print(f"contact sheet written to {os.path.abspath(path)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default data (see fashionlens.demo)."""
    from fashionlens.demo import DemoSettings, run_demo

    settings = DemoSettings(workdir=args.workdir, items=args.items, views=args.views, size=args.size, seed=args.seed,
                            minutes=args.minutes, quick=args.quick, fresh=args.fresh)
    result = run_demo(settings)
    print(f"report: {os.path.abspath(result['report'])}/report.md")
    if not args.no_serve:
        from fashionlens.cli.serve import serve_demo

        serve_demo(result["run"], result["catalog"], args.host, args.port)
    return 0


def _override(cfg, assignment: str) -> None:
    """Apply ``section.field=value`` (value parsed as YAML) to a RunConfig in place."""
    import dataclasses

    import yaml

    from fashionlens.config import from_dict, to_dict

    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ValueError(f"--set expects section.field=value, got {assignment!r}")
    values = to_dict(cfg)
    node = values
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ValueError(f"--set {key}: no config section {part!r}")
        node = node[part]
    if leaf not in node:
        raise ValueError(f"--set {key}: unknown field {leaf!r}; known: {sorted(node)}")
    node[leaf] = yaml.safe_load(raw)
    new = from_dict(values)
    for f in dataclasses.fields(new):
        setattr(cfg, f.name, getattr(new, f.name))


def build_train_config(args: argparse.Namespace):
    """RunConfig from --recipe / --config, then the explicit flags, then --set overrides."""
    from fashionlens.config import RunConfig, load_yaml
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
    for assignment in args.set or []:
        _override(cfg, assignment)
    return cfg


TRAIN_FLAGS = {  # argparse dest -> (config section, field)
    "backbone": ("model", "backbone"), "model": ("model", "name"), "epochs": ("train", "epochs"),
    "image_size": ("data", "image_size"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "max_minutes": ("train", "max_minutes"), "init_from": ("train", "init_from"), "seed": ("seed", None),
    "workers": ("data", "num_workers"), "threads": ("threads", None),
}


def cmd_train(args: argparse.Namespace) -> int:
    from fashionlens.training.fit import fit

    cfg = build_train_config(args)
    from fashionlens.training.distributed import env_rank

    summary = fit(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    if env_rank() == 0:  # under torchrun, one summary (rank 0's)
        print(json.dumps(summary, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fashionlens.evaluation.run import evaluate_run

    metrics = evaluate_run(args.model, args.data, split=args.split, out_dir=args.out, batch_size=args.batch_size,
                           progress=not args.json, target_accuracy=args.target_accuracy,
                           tta={"on": True, "off": False}.get(args.tta), eval_scale=args.eval_scale)
    if args.json:
        print(json.dumps(metrics))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            if isinstance(value, (int, float, str)) or value is None:
                shown = f"{value:.4f}" if isinstance(value, float) else value
                print(f"{key:<{width}}  {shown}")
        if args.out:
            print(f"report written to {os.path.abspath(args.out)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from fashionlens.inference import Predictor

    predictor = Predictor.load(args.model, attribute_threshold=args.threshold, batch_size=args.batch_size)
    for answer in predictor.predict_paths(args.images, target_accuracy=args.target_accuracy):
        print(json.dumps(answer), flush=True)
    return 0


def _add_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="data spec, e.g. garments:DIR, folder:DIR, deepfashion-category:DIR, fashion-mnist")
    p.add_argument("--skip-missing", action="store_true", help="drop samples whose image file is missing")


def add_target_accuracy(p: argparse.ArgumentParser) -> None:
    from fashionlens.cli.hierarchy import target_accuracy

    p.add_argument("--target-accuracy", type=target_accuracy, metavar="T",
                   help="also answer the most specific taxonomy node that is right with probability T "
                        "(e.g. 0.95; needs `fashionlens calibrate` first)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashionlens", description="Garment recognition and retrieval.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render the procedural garment data set in the DeepFashion layouts")
    p.add_argument("out", help="output directory (gets category/, inshop/, c2s/)")
    p.add_argument("--items", type=int, default=300, help="number of garment items (designs)")
    p.add_argument("--views", type=int, default=6, help="views per item (shop + consumer)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="render processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    data = sub.add_parser("data", help="inspect data sets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("stats", help="print counts of a data set")
    _add_spec(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data_stats)
    p = data.add_parser("show", help="draw a contact sheet (boxes, landmarks, labels)")
    _add_spec(p)
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--n", type=int, default=48, help="number of images")
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--thumb", type=int, default=160, help="tile size in pixels")
    p.add_argument("--seed", type=int, default=0, help="which random images")
    p.add_argument("--split", help="only these splits (comma-separated)")
    p.set_defaults(func=cmd_data_show)

    p = sub.add_parser("train", help="train a model (multi-task FashionNet by default)")
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
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data loader processes")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override any config field")
    p.add_argument("--no-resume", action="store_true", help="start over even if RUN_DIR/last.pt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="DeepFashion metrics of a trained model on a data set")
    p.add_argument("--model", required=True, help="run directory or checkpoint file")
    p.add_argument("--data", required=True, help="data spec")
    p.add_argument("--split", default="test", help="split(s) to evaluate, comma-separated")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="write report.json, report.md and plots here")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tta", choices=("run", "on", "off"), default="run",
                   help="mirror test-time augmentation: as the run was configured (model.tta_flip), on or off")
    p.add_argument("--eval-scale", type=float, default=None,
                   help="input side = the run's image_size x this (default: the run's data.eval_scale)")
    add_target_accuracy(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify images: one JSON object per line per image")
    p.add_argument("--model", required=True, help="run directory or checkpoint file")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--threshold", type=float, default=0.5, help="attribute score threshold")
    p.add_argument("--batch-size", type=int, default=16)
    add_target_accuracy(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="run the main job on the embedded default data")
    p.add_argument("--workdir", default="out/demo", help="where the demo keeps its data and runs")
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    p.add_argument("--quick", action="store_true", help="tiny data and model (a smoke test in seconds)")
    p.add_argument("--no-serve", action="store_true", help="stop after building the catalog")
    p.add_argument("--host", default="127.0.0.1", help="where the demo serves the page")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--fresh", action="store_true", help="start over instead of reusing the render and the run")
    p.set_defaults(func=cmd_demo)

    from fashionlens.cli.audit import add_commands as add_audit_commands
    from fashionlens.cli.catalog import add_commands as add_catalog_commands
    from fashionlens.cli.export import add_commands as add_export_commands
    from fashionlens.cli.hierarchy import add_commands as add_hierarchy_commands
    from fashionlens.cli.serve import add_commands as add_serve_commands

    add_export_commands(sub)
    add_hierarchy_commands(sub)
    add_catalog_commands(sub)
    add_serve_commands(sub)
    add_audit_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad user input: one clear line, exit code 2
        print(f"fashionlens: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
