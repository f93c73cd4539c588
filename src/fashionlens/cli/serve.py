"""`fashionlens serve`: the HTTP API and web page for a model and a catalog (thin adapter over serving/)."""

from __future__ import annotations

import argparse
import os
import secrets
from typing import Any

from fashionlens.cli.predict import add_guide_argument, add_model_argument, model_spec
from fashionlens.utils import add_device_argument


def add_commands(subparsers: Any) -> None:
    """Register ``serve`` on the ``add_subparsers()`` object of the main parser."""
    p = subparsers.add_parser("serve", help="serve the HTTP API and the web page")
    add_model_argument(p, required=False, help_text="run directory, checkpoint or exported .onnx (default: the "
                       "catalog's model); repeat it for an ensemble (the catalog must be built with the same one)")
    p.add_argument("--catalog", help="catalog directory (without one, only /v1/classify works)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="inference worker threads")
    p.add_argument("--api-key-file", help="file whose first line is the write key (else $FASHIONLENS_API_KEY)")
    p.add_argument("--private-reads", action="store_true", help="reads need the API key too")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload")
    add_guide_argument(p)
    p.add_argument("--target-accuracy", type=float, help=(
        "the page's first choice of how sure answers must be (0.8, 0.9, 0.95 or 0.99; needs a calibrated model); "
        "default: the best guess"))
    add_device_argument(p, "run the model")
    p.set_defaults(func=cmd_serve)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~fashionlens.serving.ServeSettings` of ``serve``'s arguments, validated (ValueError)."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.export import check_device
    from fashionlens.serving import ServeSettings
    from fashionlens.utils import resolve_device

    if not args.model and not args.catalog:
        raise ValueError("serve needs --model RUN_DIR, --catalog CATALOG or both")
    model = model_spec(args.model)
    if model:
        check_device(model, args.device)  # a GPU asked of an .onnx model: said before anything is loaded
    resolve_device(args.device)  # an absent GPU: one clear error before the model is loaded or a port bound
    settings = ServeSettings(model_run=model, catalog_dir=args.catalog, api_key_file=args.api_key_file,
                             public_reads=not args.private_reads, inference_threads=args.workers,
                             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), device=args.device,
                             guide=args.guide, target_accuracy=args.target_accuracy)
    settings.validate()
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.serving import serve

    settings = settings_from_args(args)
    print(f"fashionlens is serving at http://{args.host}:{args.port}  (API docs: /docs)", flush=True)
    serve(settings, host=args.host, port=args.port)
    return 0


DEMO_TARGET_ACCURACY = 0.9  # the demo page's first choice of how sure an answer must be


def demo_settings(model_run: str, catalog_dir: str, key: str):
    """The demo's ServeSettings: the ImageNet guide on, hedged answers at 90% first when the run is calibrated."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.runs import calibration_path
    from fashionlens.serving import ServeSettings

    target = DEMO_TARGET_ACCURACY if os.path.isfile(calibration_path(model_run)) else None
    settings = ServeSettings(model_run=model_run, catalog_dir=catalog_dir, api_key=key, guide="imagenet",
                             target_accuracy=target)
    settings.validate()
    return settings


def serve_demo(model_run: str, catalog_dir: str, host: str, port: int) -> None:
    """Serve the demo's model and catalog; a write key is made up unless $FASHIONLENS_API_KEY is set.  The
    answers are hedged at 90% when the run is calibrated (the demo calibrates it) and say when a photo shows
    something the model does not know (the ImageNet guide)."""
    # lazy: the library is imported when a command runs, not to build the parser (start-up, cli/__init__.py)
    from fashionlens.serving import serve

    key = os.environ.get("FASHIONLENS_API_KEY") or secrets.token_urlsafe(12)
    settings = demo_settings(model_run, catalog_dir, key)
    print(f"\nfashionlens is serving the demo at http://{host}:{port}  (API docs: /docs)")
    print(f"API key for adding items (the page asks for it): {key}", flush=True)
    serve(settings, host=host, port=port)
