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
  ``fashionlens.version`` and ``fashionlens.format``; for a calibrated run also ``fashionlens.calibration``
  (its calibration.json: temperature, hedging lambda table, fusion), so the file gives the run's hedged answers;
  an INT8 file (:func:`quantize_onnx`) adds ``fashionlens.quantization``.

After writing, the file is checked with ``onnx.checker`` and run once with ONNX Runtime against the
eager model on the export batch; a mismatch deletes the file and raises.

A model with mirror test-time augmentation (``model.tta_flip``) is traced as two passes (image, mirror) merged
like FashionNet merges them, so that no batch size is baked into the graph; the check runs a second batch size.

:func:`load_predictor` is the one loader of every command and of the server / catalog: run directory,
checkpoint, ``.onnx`` file, or a list of them (an :class:`~fashionlens.inference.EnsemblePredictor`);
:func:`check_device` the one rule for devices (an .onnx model runs on the CPU).  :func:`quantize_onnx` writes an
INT8 copy (static QDQ with calibration images, or dynamic) and :func:`compare_onnx` measures its agreement with
the float model and the speed ratio.

Exporters (``exporter``): ``"torchscript"`` (default; ``torch.onnx.export(dynamo=False)``, no extra
package, under a second) or ``"dynamo"`` (the torch.export-based exporter; needs the ``onnxscript``
package and opset >= 18).  Both give the same numbers on this model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from fashionlens import __version__
from fashionlens.config import RunConfig, from_dict, to_dict
from fashionlens.data.decode import load_image
from fashionlens.data.readers import read_source
from fashionlens.data.transforms import eval_size
from fashionlens.evaluation.distortions import SHIFTS, shift
from fashionlens.files import atomic_write
from fashionlens.hierarchy.hedging import HedgedClassifier
from fashionlens.inference import DeviceLike, EnsemblePredictor, Predictor, as_device
from fashionlens.runs.calibrate import calibration_path, load_calibration, load_hedger
from fashionlens.training.checkpoint import find_checkpoint, load_checkpoint, load_model

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


#: FashionNet's test-time mirror merge (models/fashionnet.py): these outputs are averaged over the image and its
#: mirror, the embedding is the normalised mean, every other output (geometry) comes from the unmirrored image.
MIRROR_MEAN = ("category", "attributes", "item", "features")


class FlatOutputs(torch.nn.Module):
    """The model with a tuple of tensors as output (ONNX has no dicts), in ``names`` order.

    ``mirror_here``: for tracing a model with mirror test-time augmentation (``tta_flip``).  FashionNet
    mirrors inside one forward pass over ``[images, mirrored]`` and splits the result at ``len(images)``,
    which the TorchScript tracer records as a constant (the export batch): the exported graph then failed
    on any other batch size.  Here the model runs twice with ``tta_flip`` off (once on the images, once on
    their mirror; eval-mode BatchNorm keeps rows independent, so the numbers are the same) and the halves
    are merged as FashionNet merges them; :func:`export_onnx` checks that against the eager model."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], mirror_here: bool = False):
        super().__init__()
        self.model, self.names = model, list(names)
        self.mirror_here = bool(mirror_here and getattr(model, "tta_flip", False))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self._mirrored(images) if self.mirror_here and not self.training else self.model(images)
        levels = out.get("levels") or []
        return tuple(levels[int(n[len(LEVEL_PREFIX):])] if n.startswith(LEVEL_PREFIX) else out[n] for n in self.names)

    def _mirrored(self, images: torch.Tensor) -> dict[str, Any]:
        self.model.tta_flip = False
        try:
            plain, mirror = self.model(images), self.model(torch.flip(images, dims=[3]))
        finally:
            self.model.tta_flip = True
        merged: dict[str, Any] = {}
        for key, value in plain.items():
            if key == "levels":
                merged[key] = [(a + b) / 2 for a, b in zip(value, mirror[key])]
            elif key in MIRROR_MEAN and isinstance(value, torch.Tensor):
                merged[key] = (value + mirror[key]) / 2
            elif key == "embedding":
                merged[key] = torch.nn.functional.normalize(value + mirror[key], dim=1)
            else:
                merged[key] = value
        return merged


def export_onnx(run_dir: str, out_path: str, *, opset: int | None = None, dynamic_batch: bool = True,
                exporter: str = "torchscript", verify: bool = True) -> str:
    """Export the model of ``run_dir`` (run directory or checkpoint file) to ``out_path``; returns the path.

    ``opset`` None: 17 for the TorchScript exporter, 18 for dynamo.  ``dynamic_batch`` False fixes the
    batch to 1.  Raises FileNotFoundError for a missing run, ValueError for a bad exporter or opset, and
    RuntimeError when the exported graph disagrees with the eager model (``verify``: on the export batch and,
    with a dynamic batch, on a batch of another size too).

    A calibrated run (its calibration.json, ``fashionlens calibrate``) travels inside the file as
    ``fashionlens.calibration``: the .onnx model then gives the run's hedged answers (``target_accuracy``).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    opset = DEFAULT_OPSET[exporter] if opset is None else int(opset)
    if opset < (16 if exporter == "torchscript" else 18):
        raise ValueError(f"opset {opset} is too old: the {exporter} exporter needs >= "
                         f"{16 if exporter == 'torchscript' else 18} (GridSample of the local branch needs 16)")
    model, cfg, labels = load_model(run_dir)
    calibration = run_calibration(run_dir, labels)
    size = eval_size(cfg.data)
    example = torch.randn(2 if dynamic_batch else 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        names = output_names(model(example))
    flat = FlatOutputs(model, names).eval()  # the eager reference: the model's own forward
    traced = FlatOutputs(model, names, mirror_here=True).eval()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)

    def write(tmp: str) -> None:
        _torch_export(traced, example, tmp, names, opset, dynamic_batch, exporter)
        _write_metadata(tmp, cfg, labels, names, exporter, calibration)
        if verify:
            verify_export(tmp, flat, example)
            if dynamic_batch:  # a batch size the tracer did not see: no size may be baked into the graph
                verify_export(tmp, flat, torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1)))

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


def run_calibration(run: str, labels: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration state of ``run`` (checked against the model's categories; a stale file warns), None
    when it is not calibrated."""
    if not os.path.isfile(calibration_path(run)):
        return None
    load_hedger(run, labels)  # ValueError: other categories; a warning: the checkpoint changed after calibrating
    return load_calibration(run)


def _write_metadata(path: str, cfg: RunConfig, labels: dict[str, Any], names: list[str], exporter: str,
                    calibration: dict[str, Any] | None = None) -> None:
    proto = onnx.load(path)
    values = {"format": str(FORMAT), "version": __version__, "exporter": exporter,
              "config": json.dumps(to_dict(cfg)), "labels": json.dumps(labels), "outputs": json.dumps(names),
              "preprocessing": json.dumps(preprocessing(cfg))}
    if calibration is not None:
        values["calibration"] = json.dumps(calibration, allow_nan=False)
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
    try:
        got = session.run(None, {INPUT_NAME: example.numpy()})
    except (ort_errors.Fail, ort_errors.RuntimeException, ort_errors.InvalidArgument) as exc:
        raise RuntimeError(f"{path}: the exported graph fails on a batch of {len(example)} "
                           f"({str(exc).splitlines()[0][:300]})") from exc
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
        widths = {o.name: o.shape[-1] for o in session.get_outputs()}
        if isinstance(widths.get("embedding"), int):
            self.search_dim = int(widths["embedding"])  # what Predictor.embedding_dim reports

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
    ``predict(images)`` / ``predict_paths(paths)`` -> answer dicts in original-image pixels; with the run's
    calibration in the file (exported after ``fashionlens calibrate``) also the hedged answers of
    ``target_accuracy``, exactly the run's.  ``run`` is the .onnx path.
    ``threads``: ONNX Runtime intra-op threads (None: one per core).
    """

    def __init__(self, path: str, threads: int | None = None, **kw: Any):
        session = _session(path, threads)
        cfg, labels, names = read_metadata(path, session)
        cfg.train.channels_last = False  # ONNX Runtime takes plain NCHW
        super().__init__(_SessionModule(session, names), cfg, labels, **kw)
        self.path, self.session, self.output_names = path, session, names
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.run = path

    @classmethod
    def load(cls, run: str, **kw: Any) -> "OnnxEmbedder":
        """Same as the constructor (``run`` is the .onnx path), for code written against ``Predictor.load``."""
        return cls(run, **kw)

    def calibration(self) -> dict[str, Any] | None:
        """The run's calibration state recorded in the file (``fashionlens.calibration``), None without one."""
        text = self.metadata.get(META + "calibration")
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: corrupt {META}calibration metadata: {exc}") from exc

    def _load_hedger(self) -> HedgedClassifier:
        state = self.calibration()
        if state is None:
            raise FileNotFoundError(f"{self.path} carries no calibration: hedged answers (--target-accuracy) need "
                                    "a calibrated run; run `fashionlens calibrate --model RUN_DIR --data SPEC`, then "
                                    "export it again")
        if state.get("category_names") != list(self.labels["categories"]):
            raise ValueError(f"{self.path}: its calibration's categories differ from the model's")
        return HedgedClassifier.from_dict(state)

    @property
    def quantization(self) -> dict[str, Any] | None:
        """How the file was quantised (:func:`quantize_onnx`), None for a float model."""
        text = self.metadata.get(META + "quantization")
        return json.loads(text) if text else None


# -- one loader for every command: run directory, checkpoint, .onnx file, or several of them -----------
ModelSpec = str | os.PathLike | Sequence[str | os.PathLike]
ONNX_DEVICE_HELP = ("an exported .onnx model runs on the CPU (ONNX Runtime's CPUExecutionProvider); use --device "
                    "cpu or auto, or give the run directory")


def model_list(model: ModelSpec) -> list[str]:
    """The model paths of a spec: one path, or a list / tuple of them (an ensemble)."""
    models = [os.fspath(model)] if isinstance(model, (str, os.PathLike)) else [os.fspath(m) for m in model]
    if not models:
        raise ValueError("no model given")
    return models


def is_onnx(model: str | os.PathLike) -> bool:
    return os.fspath(model).lower().endswith(".onnx")


def check_device(model: ModelSpec, device: DeviceLike) -> None:
    """ValueError when ``device`` asks an .onnx model (one of ``model``) to run anywhere but the CPU
    (``None``, ``"auto"``, ``"cpu"``); the one place of that rule (``predict``, ``embed``, ``serve``, catalogs)."""
    if not any(is_onnx(m) for m in model_list(model)):
        return
    kind = device.type if isinstance(device, torch.device) else (device or "auto").strip().lower()
    if kind not in ("auto", "cpu"):
        raise ValueError(f"--device {device}: {ONNX_DEVICE_HELP}")


def load_predictor(model: ModelSpec, *, threads: int | None = None, device: DeviceLike = None,
                   **kw: Any) -> Predictor:
    """The Predictor of a model spec: a run directory / checkpoint (PyTorch, on ``device``: default the CPU),
    an ``.onnx`` file (:class:`OnnxEmbedder`, ONNX Runtime on the CPU with ``threads``), or a list of them
    (two or more: an :class:`~fashionlens.inference.EnsemblePredictor`; their label sets must be one).

    ``kw`` (``attribute_threshold``, ``batch_size``) go to every model.  A device an .onnx model cannot use
    and an absent GPU are ValueErrors raised before any model is read."""
    models = model_list(model)
    check_device(models, device)
    target = None if device is None or all(is_onnx(m) for m in models) else as_device(device)

    def one(path: str) -> Predictor:
        if is_onnx(path):
            return OnnxEmbedder(path, threads=threads, **kw)
        return Predictor.load(path, device=target, **kw)

    if len(models) == 1:
        return one(models[0])
    return EnsemblePredictor([one(m) for m in models])


def model_labels(model: ModelSpec) -> dict[str, Any]:
    """The label set (categories, taxonomy paths, attributes, ...) of a run directory, checkpoint or exported
    .onnx file, without loading the network; of an ensemble, its first member's (members share one)."""
    first = model_list(model)[0]
    if is_onnx(first):
        return read_metadata(first)[1]
    return load_checkpoint(find_checkpoint(first))["labels"]


def model_key(model: ModelSpec | None) -> str | list[str] | None:
    """How a catalog records its model: the absolute path, or the list of them for an ensemble (in order)."""
    if model is None or (not isinstance(model, (str, os.PathLike)) and not len(model)):
        return None
    models = [os.path.abspath(m) for m in model_list(model)]
    return models[0] if len(models) == 1 else models


def same_model(a: ModelSpec | None, b: ModelSpec | None) -> bool:
    """Whether two model specs name the same model(s) (real paths, in order; an unknown side counts as the same)."""
    if not a or not b:
        return True
    return [os.path.realpath(m) for m in model_list(a)] == [os.path.realpath(m) for m in model_list(b)]


def model_label(model: ModelSpec | None) -> str:
    """A short name: the run's folder (or .onnx file) name, ``A+B`` for an ensemble, ``model`` when unknown."""
    if not model:
        return "model"
    return "+".join(os.path.basename(os.path.normpath(m)) for m in model_list(model))


# -- INT8 quantisation -----------------------------------------------------------------------------------
QUANTIZATIONS = ("static", "dynamic")


def _conv_group(node: Any) -> int:
    """The ``group`` attribute of an ONNX Conv node (1 when absent; the input channels for a depthwise one)."""
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def quantize_onnx(float_path: str, out_path: str, *, method: str = "static",
                  calibration: np.ndarray | None = None, per_channel: bool = True, batch_size: int = 8,
                  float_first_convs: int = 0, float_depthwise: bool = False,
                  calibration_method: str = "minmax", float_sensitive: int = 0) -> str:
    """An INT8 copy of the exported ``float_path`` at ``out_path`` (ONNX Runtime's quantisation tools); the
    fashionlens metadata (config, labels, calibration) is kept and ``fashionlens.quantization`` added.

    ``method="static"`` (what a conv net needs): QDQ format, per-channel signed INT8 weights and unsigned INT8
    activations whose ranges (min / max) are measured on ``calibration``, (N, 3, S, S) float32 network inputs
    (a few dozen real images through the eval transform: :meth:`OnnxEmbedder.preprocess`).  ``"dynamic"``:
    weights only, activations quantised on the fly (ONNX Runtime's default operators, convolutions as
    ConvInteger); no calibration images, but on CPUs without VNNI it was 4x SLOWER than float here (README).
    ``float_first_convs`` keeps the first N convolutions (in graph order) and the fully connected heads in
    float (static only): EfficientNet's early depthwise convolutions are the ones INT8 hurts most (README).
    ``float_depthwise`` keeps every depthwise convolution (``group`` > 1) and the heads in float instead: the
    pointwise (1x1) convolutions, where MobileNet-style networks spend most of their multiply-adds, are quantised.
    ``calibration_method``: how activation ranges are read from the calibration images (ONNX Runtime's
    ``CalibrationMethod``): ``minmax``, ``entropy`` or ``percentile`` (99.999th, clipping rare outliers).
    ``float_sensitive`` keeps the nodes around the N activations that INT8 hurts most in float: the model is
    quantised once, every quantised activation's signal-to-quantisation-noise ratio is measured on a batch of
    the calibration images with ONNX Runtime's ``qdq_loss_debug`` tools (:func:`quantisation_sensitivity`),
    and the model is quantised again without the producers and consumers of the N lowest; the chosen
    tensors and their ratios are recorded in the metadata.
    """
    from onnxruntime.quantization import (  # lazy: the quantisation tools load only for --int8
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    if method not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {method!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibration_method not in methods:
        raise ValueError(f"calibration_method must be one of {', '.join(methods)}, got {calibration_method!r}")
    if method == "static" and (calibration is None or not len(calibration)):
        raise ValueError("static INT8 quantization needs calibration images (--data SPEC); "
                         "or use --quantization dynamic")
    source = onnx.load(float_path)
    meta = {p.key: p.value for p in source.metadata_props}
    if META + "config" not in meta:
        raise ValueError(f"{float_path}: no fashionlens metadata; export it with fashionlens export-onnx first")
    input_name = source.graph.input[0].name
    info: dict[str, Any] = {"method": method, "weights": "int8" + (" per channel" if per_channel else ""),
                            "activations": "uint8 (static ranges)" if method == "static" else "uint8 (dynamic)",
                            "calibration_images": len(calibration) if method == "static" else 0,
                            "float_first_convs": int(float_first_convs) if method == "static" else 0,
                            "float_depthwise": bool(float_depthwise) and method == "static",
                            "calibration_method": calibration_method if method == "static" else None,
                            "float_sensitive": int(float_sensitive) if method == "static" else 0}
    if float_sensitive < 0:
        raise ValueError(f"float_sensitive must be >= 0, got {float_sensitive}")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch, np.float32)}

    def write(tmp: str) -> None:
        prepared = tmp + ".pre.onnx"
        try:
            with warnings.catch_warnings(), _quiet_quantizer():
                warnings.simplefilter("ignore")
                # symbolic shape inference cannot follow FashionNet's 'SAME' padding arithmetic: ONNX's is enough
                quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
                if method == "static":
                    graph = onnx.load(prepared).graph
                    conv_nodes = [n for n in graph.node if n.op_type == "Conv"]
                    # by weight: a mirror-TTA export runs each convolution twice on one shared weight
                    first = list(dict.fromkeys(n.input[1] for n in conv_nodes))[:float_first_convs]
                    convs = [n.name for n in conv_nodes if n.input[1] in first
                             or (float_depthwise and _conv_group(n) > 1)]
                    heads = ([n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
                             if float_first_convs or float_depthwise else [])
                    excluded = _shape_nodes(graph) + convs + heads  # shape arithmetic always stays float

                    def quantise(excluded: list[str]) -> None:
                        quantize_static(prepared, tmp, Batches(), quant_format=QuantFormat.QDQ,
                                        per_channel=per_channel, activation_type=QuantType.QUInt8,
                                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                                        calibrate_method=methods[calibration_method])

                    quantise(excluded)
                    if float_sensitive:
                        ranked = quantisation_sensitivity(prepared, tmp, calibration[:batch_size])
                        chosen = ranked[:float_sensitive]
                        kept = _nodes_around(graph, [name for name, _ in chosen])
                        info["float_tensors"] = {name: round(sqnr, 2) for name, sqnr in chosen}
                        info["float_nodes"] = len(kept)
                        quantise(list(dict.fromkeys(excluded + kept)))
                else:
                    quantize_dynamic(prepared, tmp, per_channel=per_channel, weight_type=QuantType.QUInt8)
        finally:
            for leftover in (prepared, prepared + ".data"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        proto = onnx.load(tmp)
        del proto.metadata_props[:]
        for key, value in {**meta, META + "quantization": json.dumps(info)}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name, proto.producer_version = source.producer_name, source.producer_version
        proto.doc_string = (source.doc_string + f" (INT8, {method} quantisation)").strip()
        onnx.save(proto, tmp)
        read_metadata(tmp)  # loads in ONNX Runtime, metadata intact

    return atomic_write(out_path, write)


def quantisation_sensitivity(float_path: str, qdq_path: str, images: np.ndarray) -> list[tuple[str, float]]:
    """Every activation tensor that the QDQ model ``qdq_path`` (quantised from ``float_path``) quantises, with
    its signal-to-quantisation-noise ratio in dB on ``images`` ((N, 3, S, S) network inputs), lowest first.

    The ratio compares each tensor before and after its QuantizeLinear / DequantizeLinear pair inside the QDQ
    model (ONNX Runtime's ``qdq_loss_debug``: ``modify_model_output_intermediate_tensors``,
    ``collect_activations``, ``create_activation_matching``): the error INT8 adds at that tensor, given the
    (already quantised) layers before it.  Tensors that are zero on every image (INT8 holds them exactly) are
    left out."""
    # lazy: the quantisation tools load only for --int8
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    input_name = onnx.load(float_path, load_external_data=False).graph.input[0].name

    class Once(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: np.ascontiguousarray(images, np.float32)}])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="fashionlens-sqnr-") as tmp:
        augmented = os.path.join(tmp, "augmented.onnx")
        with warnings.catch_warnings(), _quiet_quantizer():
            warnings.simplefilter("ignore")
            modify_model_output_intermediate_tensors(qdq_path, augmented)
            activations = collect_activations(augmented, Once())
    matched = create_activation_matching(activations)
    ratios = [(name, float(compute_signal_to_quantization_noice_ratio(m["pre_qdq"], m["post_qdq"])))
              for name, m in matched.items() if any(np.any(t) for t in m["pre_qdq"])]  # all-zero: exact, no ratio
    return sorted(ratios, key=lambda item: item[1])


def _shape_nodes(graph: Any) -> list[str]:
    """Names of the nodes of ``graph`` that compute with shapes, not with the image: none of their inputs
    depends on the network input except through a ``Shape`` node (timm's 'SAME' padding exports its pad
    arithmetic as float Sub / Mul / Add / Clip / Div on the feature map's size).

    Left to the quantiser, those float scalars got activation ranges and QuantizeLinear / DequantizeLinear
    pairs, so the pads were computed on a uint8 grid: not the float model's pads (a 32 px Lite0 calibrated on
    uniform noise then failed on a 5x5 convolution over an unpadded 4x4 map, in ONNX Runtime's normal
    session too). They stay float."""
    data = {i.name for i in graph.input}
    shape_nodes = []
    for node in graph.node:  # ONNX nodes are in topological order
        if node.op_type != "Shape" and data & set(node.input):
            data.update(node.output)
        elif node.op_type != "Shape" and node.input:
            shape_nodes.append(node.name)
    return shape_nodes


def _nodes_around(graph: Any, tensors: Sequence[str]) -> list[str]:
    """Names of the nodes of ``graph`` that produce or consume any of ``tensors`` (graph order)."""
    wanted = set(tensors)
    return [n.name for n in graph.node if wanted & (set(n.input) | set(n.output))]


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence the quantiser's per-tensor ``logging.warning`` lines (shape tensors it rightly leaves alone)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def compare_onnx(float_path: str, int8_path: str, images: np.ndarray, labels: np.ndarray | None = None, *,
                 threads: int | None = None, batch_size: int = 8, seconds: float = 2.0,
                 rounds: int = 3) -> dict[str, Any]:
    """How an INT8 model answers next to its float original on ``images`` ((N, 3, S, S) network inputs) and
    how fast, measured in this process.

    Returns ``images``, ``top1_agreement`` (same predicted category), ``embedding_cosine`` (mean and min of
    the two embeddings' cosine), with ``labels`` ((N,) category indices, -1 = unknown) ``float_accuracy``,
    ``int8_accuracy`` and ``accuracy_change``; and the speed on one batch of ``batch_size`` of the images:
    ``float_images_per_s``, ``int8_images_per_s``, ``int8_over_float`` (median of ``rounds`` interleaved
    rounds of ``seconds`` each, so a background load hits both alike)."""
    sessions = {"float": _session(float_path, threads), "int8": _session(int8_path, threads)}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for name, session in sessions.items():
        wanted = [o.name for o in session.get_outputs() if o.name in ("category", "embedding")]
        parts = [session.run(wanted, {INPUT_NAME: np.ascontiguousarray(images[i:i + batch_size], np.float32)})
                 for i in range(0, len(images), batch_size)]
        outputs[name] = {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(wanted)}
    report: dict[str, Any] = {"images": len(images)}
    if "category" in outputs["float"]:
        f, q = outputs["float"]["category"].argmax(1), outputs["int8"]["category"].argmax(1)
        report["top1_agreement"] = float(np.mean(f == q))
        known = None if labels is None else np.asarray(labels) >= 0
        if known is not None and known.any():
            y = np.asarray(labels)[known]
            report.update(labelled_images=int(known.sum()), float_accuracy=float(np.mean(f[known] == y)),
                          int8_accuracy=float(np.mean(q[known] == y)))
            report["accuracy_change"] = report["int8_accuracy"] - report["float_accuracy"]
    if "embedding" in outputs["float"]:
        cos = np.sum(outputs["float"]["embedding"] * outputs["int8"]["embedding"], axis=1)
        report.update(embedding_cosine_mean=float(cos.mean()), embedding_cosine_min=float(cos.min()))
    batch = np.ascontiguousarray(np.resize(images, (batch_size, *images.shape[1:])), np.float32)
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            rates[name].append(_rate(lambda s=session: s.run(None, {INPUT_NAME: batch}), batch_size, seconds))
    report.update(batch=batch_size, threads=threads,
                  float_images_per_s=float(np.median(rates["float"])), int8_images_per_s=float(np.median(rates["int8"])),
                  int8_over_float=float(np.median([b / a for a, b in zip(rates["float"], rates["int8"])])))
    return report


def _rate(step: Any, batch: int, seconds: float) -> float:
    """Images/s of ``step()`` (one batch) after one warm-up call, over at least ``seconds`` and 2 calls."""
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 2:
        step()
        done += 1
    return done * batch / (time.perf_counter() - start)


def network_inputs(predictor: Predictor, spec: str, *, split: str | None = None, limit: int | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 3, S, S) float32 eval-transform inputs of a data spec's (or image folder's) images, (N,) category
    indices in the model's categories (-1 where the data has none the model knows) and the image paths.
    ``limit``: at most that many images, spread evenly over the data (its classes are often sorted)."""
    samples = list(read_source(spec, split).samples)
    if limit is not None and len(samples) > limit:
        samples = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, limit).round().astype(int)]
    if not samples:
        raise ValueError(f"{spec}: no images")
    index = {name: i for i, name in enumerate(predictor.categories)}
    tensors = [predictor.preprocess(load_image(s))[0].numpy() for s in samples]
    labels = np.array([index.get(s.category_name, -1) if s.category_name else -1 for s in samples], np.int64)
    return np.stack(tensors).astype(np.float32), labels, [s.image for s in samples]


def shifted_inputs(predictor: Predictor, paths: Sequence[str], kinds: Sequence[str] = SHIFTS, *, seed: int = 2000,
                   ) -> np.ndarray:
    """(len(kinds) * N, 3, S, S) float32 eval-transform inputs of each image of ``paths`` under each distribution
    shift of :mod:`fashionlens.evaluation.distortions` (kind-major; image ``i`` seeded ``seed + i``).

    INT8 calibration on these as well as the plain photos (``export-onnx --int8 --calibration-shifts``) measures
    activation ranges on small, blurred and relit garments too; the evaluation's own shifted copies use
    seed 1000, so calibration and evaluation copies of one photo differ."""
    unknown = [k for k in kinds if k not in SHIFTS]
    if unknown:
        raise ValueError(f"unknown shift {unknown[0]!r}; choose from {', '.join(SHIFTS)}")
    if not kinds or not paths:
        raise ValueError("shifted_inputs needs at least one image and one shift kind")
    images = [load_image(p) for p in paths]
    return np.stack([predictor.preprocess(shift(img, kind, seed + i))[0].numpy()
                     for kind in kinds for i, img in enumerate(images)]).astype(np.float32)


__all__ = [
    "INPUT_NAME",
    "QUANTIZATIONS",
    "ModelSpec",
    "OnnxEmbedder",
    "check_device",
    "compare_onnx",
    "export_onnx",
    "is_onnx",
    "load_predictor",
    "model_key",
    "model_label",
    "model_list",
    "network_inputs",
    "output_names",
    "preprocessing",
    "quantize_onnx",
    "read_metadata",
    "run_calibration",
    "same_model",
    "shifted_inputs",
    "verify_export",
]
