"""``fashionlens predict``: classify images, one JSON object per line per image.

``--model`` takes a run directory, a checkpoint or an exported ``.onnx`` file; repeated (``--model A --model B``)
the models answer as one ensemble (``inference.EnsemblePredictor``: mean calibrated probabilities)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fashionlens.cli.calibrate import add_target_accuracy
from fashionlens.utils import add_device_argument

MODEL_HELP = ("run directory, checkpoint file or exported .onnx; repeat it (--model A --model B) for an ensemble: "
              "mean of the models' calibrated probabilities, concatenated embeddings")


def add_model_argument(parser: Any, required: bool = True, help_text: str = MODEL_HELP) -> None:
    """``--model`` of the commands that run a model: one, or several (an ensemble) when repeated."""
    parser.add_argument("--model", action="append", required=required, help=help_text)


def model_spec(models: list[str] | None) -> str | list[str] | None:
    """``--model`` values -> the one path, or the list of an ensemble (None when not given)."""
    if not models:
        return None
    return models[0] if len(models) == 1 else list(models)


def cmd_predict(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.export import load_predictor

    # an absent GPU, or a GPU asked of an .onnx model, is one clear error before any model is read
    predictor = load_predictor(args.model, attribute_threshold=args.threshold, batch_size=args.batch_size,
                               device=args.device)
    if args.guide:
        predictor.attach_guide(args.guide)
    for answer in predictor.predict_paths(args.images, target_accuracy=args.target_accuracy):
        print(json.dumps(answer), flush=True)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``predict`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("predict", help="classify images: one JSON object per line per image")
    add_model_argument(p)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--threshold", type=float, default=0.5, help="attribute score threshold")
    p.add_argument("--batch-size", type=int, default=16)
    add_target_accuracy(p)
    add_guide_argument(p)
    add_device_argument(p, "run the model")
    p.set_defaults(func=cmd_predict)


def add_guide_argument(parser: Any) -> None:
    """``--guide imagenet``: answers say when a photo shows something the model has no category for."""
    parser.add_argument("--guide", choices=("imagenet",), help=(
        "add a 'scope' to every answer: known / outside ('shoes (sandal): not among this model's categories') / "
        "unknown ('not a garment I know'), from the backbone's offline ImageNet classifier and the run's "
        "familiarity.npz (fashionlens calibrate --familiarity)"))
