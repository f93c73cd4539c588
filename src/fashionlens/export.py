"""ONNX export of a trained run, and :class:`OnnxEmbedder`, the ONNX Runtime twin of the Predictor.

``export_onnx(RUN_DIR, "model.onnx")`` writes ONE self-describing file:

* input ``images``: float32 (B, 3, S, S), RGB, ``(pixel / 255 - mean) / std`` (the eval transform's
  output); the batch axis is dynamic, S is fixed (the eval size, ``data.transforms.eval_size``).
* outputs: every tensor the model returns, by name (``embedding`` first, then e.g. ``landmarks``,
  ``visibility``, ``heatmaps``, ``features``, ``bbox``, ``category``, ``level_0``, ``level_1``,
  ``attributes``); the list of hierarchy-level logits is flattened to ``level_<i>``.  Shapes and
  units as in :class:`~fashionlens.models.fashionnet.FashionNet` (positions and boxes in [0, 1] of
  the network input).
* ``metadata_props``: ``fashionlens.config`` (the resolved run config, JSON), ``fashionlens.labels``
  (label names), ``fashionlens.outputs`` (output names), ``fashionlens.preprocessing`` (image size,
  mean/std, resize mode, crop-to-box: enough to reproduce the eval transform without fashionlens),
  ``fashionlens.version`` and ``fashionlens.format``.

After writing, the file is checked with ``onnx.checker`` and run once with ONNX Runtime against the
eager model on the export batch; a mismatch deletes the file and raises.

Exporters (``exporter``): ``"torchscript"`` (default; ``torch.onnx.export(dynamo=False)``, no extra
package, under a second) or ``"dynamo"`` (the torch.export-based exporter; needs the ``onnxscript``
package and opset >= 18).  Both give the same numbers on this model.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from fashionlens import __version__
from fashionlens.config import RunConfig, from_dict, to_dict
from fashionlens.data.transforms import eval_size
from fashionlens.files import atomic_write
from fashionlens.inference import Predictor
from fashionlens.training.checkpoint import load_model

FORMAT = 1
INPUT_NAME = "images"
LEVEL_PREFIX = "level_"
META = "fashionlens."
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
VERIFY_TOLERANCE = 1e-3  # max |ORT - eager| / (1 + max |eager|), per output, on the export batch


def output_names(outputs: dict[str, Any]) -> list[str]:
    """Flat ONNX output names of a FashionNet output dict: ``embedding`` first, then the other tensors in
    the model's order, the ``levels`` list expanded in place to ``level_0, level_1, ...``."""
    names: list[str] = ["embedding"] if "embedding" in outputs else []
    for key, value in outputs.items():
        if key == "levels":
            names += [f"{LEVEL_PREFIX}{i}" for i in range(len(value or []))]
        elif isinstance(value, torch.Tensor) and key != "embedding":
            names.append(key)
    return names


class FlatOutputs(torch.nn.Module):
    """The model with a tuple of tensors as output (ONNX has no dicts), in ``names`` order."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        levels = out.get("levels") or []
        return tuple(levels[int(n[len(LEVEL_PREFIX):])] if n.startswith(LEVEL_PREFIX) else out[n] for n in self.names)


def export_onnx(run_dir: str, out_path: str, *, opset: int | None = None, dynamic_batch: bool = True,
                exporter: str = "torchscript", verify: bool = True) -> str:
    """Export the model of ``run_dir`` (run directory or checkpoint file) to ``out_path``; returns the path.

    ``opset`` None: 17 for the TorchScript exporter, 18 for dynamo.  ``dynamic_batch`` False fixes the
    batch to 1.  Raises FileNotFoundError for a missing run, ValueError for a bad exporter or opset, and
    RuntimeError when the exported graph disagrees with the eager model (``verify``).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    opset = DEFAULT_OPSET[exporter] if opset is None else int(opset)
    if opset < (16 if exporter == "torchscript" else 18):
        raise ValueError(f"opset {opset} is too old: the {exporter} exporter needs >= "
                         f"{16 if exporter == 'torchscript' else 18} (GridSample of the local branch needs 16)")
    model, cfg, labels = load_model(run_dir)
    size = eval_size(cfg.data)
    example = torch.randn(2 if dynamic_batch else 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        names = output_names(model(example))
    flat = FlatOutputs(model, names).eval()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)

    def write(tmp: str) -> None:
        _torch_export(flat, example, tmp, names, opset, dynamic_batch, exporter)
        _write_metadata(tmp, cfg, labels, names, exporter)
        if verify:
            verify_export(tmp, flat, example)

    return atomic_write(out_path, write)


def _torch_export(flat: torch.nn.Module, example: torch.Tensor, path: str, names: list[str], opset: int,
                  dynamic_batch: bool, exporter: str) -> None:
    kw: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset)
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401  lazy: an optional package, needed by the dynamo exporter alone
        except ImportError as exc:
            raise ValueError("exporter='dynamo' needs the onnxscript package "
                             "(pip install torch==<your torch> onnxscript); or use exporter='torchscript'") from exc
        if dynamic_batch:
            kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=65536)},)
        with torch.no_grad():
            torch.onnx.export(flat, (example,), path, dynamo=True, external_data=False, verbose=False, **kw)
        return
    if dynamic_batch:
        kw["dynamic_axes"] = {name: {0: "batch"} for name in [INPUT_NAME, *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still supported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic of 'SAME' padding: S is fixed
        with torch.no_grad():
            torch.onnx.export(flat, (example,), path, dynamo=False, do_constant_folding=True, **kw)


def preprocessing(cfg: RunConfig) -> dict[str, Any]:
    """What a non-Python client needs to feed the model (the eval transform, in words and numbers)."""
    d = cfg.data
    return {"image_size": eval_size(d), "mean": list(d.mean), "std": list(d.std), "resize_mode": d.resize_mode,
            "crop_to_bbox": bool(d.crop_to_bbox), "bbox_margin": float(d.bbox_margin), "layout": "NCHW",
            "channels": "RGB", "scale": "(pixel / 255 - mean) / std",
            "pad_fill": [int(round(255 * m)) for m in d.mean] if d.resize_mode == "pad" else None,
            "resize": "longer side to image_size, then centred pad to a square" if d.resize_mode == "pad"
            else "stretch to image_size x image_size"}


def _write_metadata(path: str, cfg: RunConfig, labels: dict[str, Any], names: list[str], exporter: str) -> None:
    proto = onnx.load(path)
    values = {"format": str(FORMAT), "version": __version__, "exporter": exporter,
              "config": json.dumps(to_dict(cfg)), "labels": json.dumps(labels), "outputs": json.dumps(names),
              "preprocessing": json.dumps(preprocessing(cfg))}
    del proto.metadata_props[:]
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META + key, value
    proto.producer_name, proto.producer_version = "fashionlens", __version__
    proto.doc_string = (f"fashionlens {cfg.model.name} ({cfg.model.backbone}) at {eval_size(cfg.data)} px; "
                        "see metadata_props fashionlens.* for preprocessing and label names")
    onnx.save(proto, path)
    onnx.checker.check_model(path, full_check=True)


def verify_export(path: str, flat: torch.nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Run ``path`` with ONNX Runtime on ``example`` and compare every output with ``flat`` (eager).

    Returns the max absolute difference per output; raises RuntimeError over :data:`VERIFY_TOLERANCE`."""
    session = _session(path, threads=1)
    got = session.run(None, {INPUT_NAME: example.numpy()})
    with torch.no_grad():
        want = [t.float().numpy() for t in flat(example)]
    diffs = {}
    for name, a, b in zip(flat.names, got, want):
        diffs[name] = float(np.abs(a - b).max()) if a.size else 0.0
        if a.shape != b.shape or diffs[name] > VERIFY_TOLERANCE * (1 + float(np.abs(b).max(initial=0))):
            raise RuntimeError(f"{path}: ONNX output {name!r} differs from the PyTorch model "
                               f"(shape {a.shape} vs {b.shape}, max abs diff {diffs[name]:.3g})")
    return diffs


def _session(path: str, threads: int | None) -> Any:
    """An ONNX Runtime CPU session with full graph optimisation; clear errors for missing / broken files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NotImplemented) as exc:
        raise ValueError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {str(exc)[:300]})") from exc


def read_metadata(path: str, session: Any | None = None) -> tuple[RunConfig, dict[str, Any], list[str]]:
    """(run config, label names, output names) recorded by :func:`export_onnx` in ``path``."""
    meta = (session or _session(path, threads=1)).get_modelmeta().custom_metadata_map
    missing = [k for k in ("format", "config", "labels", "outputs") if META + k not in meta]
    if missing:
        raise ValueError(f"{path}: no fashionlens metadata ({', '.join(META + k for k in missing)} missing); "
                         "was it written by fashionlens export-onnx?")
    if int(meta[META + "format"]) > FORMAT:
        raise ValueError(f"{path}: ONNX export format {meta[META + 'format']} is newer than this fashionlens supports")
    try:
        cfg = from_dict(json.loads(meta[META + "config"]))
        return cfg, json.loads(meta[META + "labels"]), list(json.loads(meta[META + "outputs"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt fashionlens metadata: {exc}") from exc


class _SessionModule(torch.nn.Module):
    """An ONNX Runtime session behind FashionNet's interface: ``forward(images) -> dict`` (``levels`` a list)."""

    def __init__(self, session: Any, names: Sequence[str]):
        super().__init__()
        self.session, self.names = session, list(names)
        self.input_name = session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images`` (B, 3, S, S) float32 (any memory format) -> dict of tensors as FashionNet returns."""
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        values = self.session.run(self.names, {self.input_name: x})
        out: dict[str, Any] = {}
        levels = []
        for name, value in zip(self.names, values):
            if name.startswith(LEVEL_PREFIX):
                levels.append(torch.from_numpy(value))
            else:
                out[name] = torch.from_numpy(value)
        if levels:
            out["levels"] = levels
        return out


class OnnxEmbedder(Predictor):
    """A :class:`~fashionlens.inference.Predictor` that runs an exported ``.onnx`` file with ONNX Runtime.

    Same preprocessing (the eval transform rebuilt from the recorded config) and the same answers:
    ``embed(images) -> (N, D)`` float32, ``forward(images)`` -> (dict of numpy outputs, affines),
    ``predict(images)`` / ``predict_paths(paths)`` -> answer dicts in original-image pixels.
    ``threads``: ONNX Runtime intra-op threads (None: one per core).
    """

    def __init__(self, path: str, threads: int | None = None, **kw: Any):
        session = _session(path, threads)
        cfg, labels, names = read_metadata(path, session)
        cfg.train.channels_last = False  # ONNX Runtime takes plain NCHW
        super().__init__(_SessionModule(session, names), cfg, labels, **kw)
        self.path, self.session, self.output_names = path, session, names

    @classmethod
    def load(cls, run: str, **kw: Any) -> "OnnxEmbedder":
        """Same as the constructor (``run`` is the .onnx path), for code written against ``Predictor.load``."""
        return cls(run, **kw)


def load_predictor(model: str, *, threads: int | None = None, **kw: Any) -> Predictor:
    """A Predictor for a run directory / checkpoint, or an :class:`OnnxEmbedder` for a ``.onnx`` file."""
    if model.lower().endswith(".onnx"):
        return OnnxEmbedder(model, threads=threads, **kw)
    return Predictor.load(model, **kw)


__all__ = ["INPUT_NAME", "OnnxEmbedder", "export_onnx", "load_predictor", "output_names", "preprocessing",
           "read_metadata", "verify_export"]
