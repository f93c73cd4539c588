"""ONNX export and the ONNX Runtime embedder: outputs equal eager PyTorch, metadata round-trips, clear errors."""

import json
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fashionlens import cli
from fashionlens.config import RunConfig, to_dict
from fashionlens.export import (INPUT_NAME, OnnxEmbedder, FlatOutputs, export_onnx, load_predictor, read_metadata,
                                verify_export)
from fashionlens.inference import Predictor
from fashionlens.models import build_model
from fashionlens.training.checkpoint import load_model, save_checkpoint

LABELS = {
    "categories": ["Tee", "Tank", "Trousers", "Skirt", "Dress"], "category_paths": [],
    "category_types": [1, 1, 2, 2, 3],
    "attributes": ["solid", "striped", "floral", "long", "short", "slim"], "attribute_groups": [1, 1, 1, 2, 2, 3],
    "group_names": {"1": "texture", "2": "length", "3": "fit"}, "single_choice_groups": False,
    "hierarchy_levels": [["lower", "upper"], ["a", "b", "c"]], "hierarchy_maps": [[1, 1, 0, 0, 0], [0, 0, 1, 1, 2]],
    "items": [],
}


def make_run(root, backbone: str = "tiny_cnn", landmark_head: str = "heatmap", size: int = 64, seed: int = 0,
             eval_scale: float = 1.0) -> str:
    """A run directory with a best.pt of a FashionNet whose weights and BatchNorm statistics are random
    (not the near-constant init), so every output carries signal.  No training: fast."""
    cfg = RunConfig()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.landmark_head = backbone, False, landmark_head
    cfg.data.image_size, cfg.data.eval_scale = size, eval_scale
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_categories=5, num_attributes=6, level_sizes=(2, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    run = os.path.join(str(root), f"{backbone}_{landmark_head}_{size}_{eval_scale:g}")
    os.makedirs(run, exist_ok=True)
    save_checkpoint(os.path.join(run, "best.pt"), {"model": model.state_dict(), "config": to_dict(cfg),
                                                    "labels": LABELS})
    return run


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of different sizes and aspect ratios (exercise the pad-to-square transform)."""
    rng = np.random.default_rng(seed)
    sizes = [(70, 90), (120, 60), (64, 64), (33, 80), (100, 100)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root)
    return run, export_onnx(run, str(root / "tiny.onnx"))


CASES = [("tiny_cnn", "heatmap", 64), ("tiny_cnn", "regression", 64),
         ("tf_efficientnet_lite0", "heatmap", 96), ("tf_efficientnet_lite0", "regression", 64)]
LOGITS = ("category", "attributes", "visibility", "level_0", "level_1", "heatmaps")


@pytest.mark.parametrize("backbone,head,size", CASES)
def test_onnx_matches_eager(tmp_path, backbone, head, size):
    run = make_run(tmp_path, backbone, head, size)
    path = export_onnx(run, str(tmp_path / "m.onnx"))
    model = load_model(run)[0]
    embedder = OnnxEmbedder(path, threads=1)
    assert ("heatmaps" in embedder.output_names) == (head == "heatmap")
    for batch in (1, 5):
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x)
        got = embedder.model(x)
        assert set(got) == {k for k, v in want.items() if isinstance(v, (torch.Tensor, list))}
        assert len(got["levels"]) == 2
        for a, b in zip(got["levels"], want["levels"]):
            assert a.shape == b.shape and (a - b).abs().max() < 1e-3
        for name, value in want.items():
            if name == "levels":
                continue
            diff = float((got[name] - value).abs().max())
            assert got[name].shape == value.shape, name
            scale = float(value.abs().max()) if name == "features" else 1.0  # unbounded activations: relative
            assert diff < (1e-3 if name in LOGITS else 1e-4) * scale, f"{name}: max abs diff {diff} (scale {scale})"
        assert float(want["embedding"].std()) > 1e-3  # the comparison is not between two constants


def test_predictions_match_predictor(tiny_onnx):
    run, path = tiny_onnx
    torch_pred, onnx_pred = Predictor.load(run), OnnxEmbedder(path, threads=1)
    images = photos(5)
    np.testing.assert_allclose(onnx_pred.embed(images), torch_pred.embed(images), atol=1e-4)
    for a, b in zip(onnx_pred.predict(images), torch_pred.predict(images)):
        assert a["category"] == b["category"] and (a["width"], a["height"]) == (b["width"], b["height"])
        assert [x["name"] for x in a["attributes"]] == [x["name"] for x in b["attributes"]]
        np.testing.assert_allclose([[p["x"], p["y"]] for p in a["landmarks"]],
                                   [[p["x"], p["y"]] for p in b["landmarks"]], atol=0.11)  # answers round to 0.1 px
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.11)


def test_export_runs_at_the_eval_size(tmp_path):
    run = make_run(tmp_path, size=48, eval_scale=1.5)  # trained at 48 px, evaluated at 72
    path = export_onnx(run, str(tmp_path / "fixres.onnx"))
    proto = onnx.load(path)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, 72, 72]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["fashionlens.preprocessing"])["image_size"] == 72
    torch_pred, onnx_pred = Predictor.load(run), OnnxEmbedder(path, threads=1)
    assert torch_pred.size == 72
    images = photos(4)
    np.testing.assert_allclose(onnx_pred.embed(images), torch_pred.embed(images), atol=1e-4)
    assert [a["category"] for a in onnx_pred.predict(images)] == [b["category"] for b in torch_pred.predict(images)]


def test_metadata_round_trips(tiny_onnx):
    run, path = tiny_onnx
    _, cfg, labels = load_model(run)
    got_cfg, got_labels, outputs = read_metadata(path)
    assert to_dict(got_cfg) == to_dict(cfg) and got_labels == labels
    assert outputs[0] == "embedding" and {"category", "attributes", "landmarks", "visibility", "bbox",
                                          "level_0", "level_1"} <= set(outputs)
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    pre = json.loads(meta["fashionlens.preprocessing"])
    assert pre["image_size"] == 64 and pre["mean"] == list(cfg.data.mean) and pre["std"] == list(cfg.data.std)
    assert pre["resize_mode"] == "pad" and pre["pad_fill"] == [124, 116, 104]
    assert [o.name for o in proto.graph.output] == outputs and proto.graph.input[0].name == INPUT_NAME
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert OnnxEmbedder(path).transform.mean.tolist() == pytest.approx(list(cfg.data.mean))


def test_static_batch_and_option_errors(tmp_path, tiny_onnx, monkeypatch):
    run, _ = tiny_onnx
    path = export_onnx(run, str(tmp_path / "static.onnx"), dynamic_batch=False)
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    with pytest.raises(ValueError, match="exporter must be one of"):
        export_onnx(run, str(tmp_path / "x.onnx"), exporter="tensorrt")
    with pytest.raises(ValueError, match="opset 13 is too old"):
        export_onnx(run, str(tmp_path / "x.onnx"), opset=13)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the package were not installed
    with pytest.raises(ValueError, match="needs the onnxscript package"):
        export_onnx(run, str(tmp_path / "x.onnx"), exporter="dynamo")
    assert not os.path.exists(tmp_path / "x.onnx") and os.listdir(tmp_path) == ["static.onnx"]  # no leftovers
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_onnx(str(tmp_path / "no_run"), str(tmp_path / "y.onnx"))


def test_verify_catches_a_wrong_graph(tmp_path, tiny_onnx):
    run, path = tiny_onnx
    model = load_model(run)[0]
    names = read_metadata(path)[2]
    x = torch.randn(2, 3, 64, 64)
    assert max(verify_export(path, FlatOutputs(model, names), x).values()) < 1e-4
    with torch.no_grad():
        model.category.bias.add_(1.0)  # the eager model now differs from the exported graph
    with pytest.raises(RuntimeError, match="'category' differs"):
        verify_export(path, FlatOutputs(model, names), x)


def test_bad_onnx_files_give_clear_errors(tmp_path, tiny_onnx):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf" * 20)
    with pytest.raises(ValueError, match=r"corrupt\.onnx: not a readable ONNX model"):
        OnnxEmbedder(str(corrupt))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(tiny_onnx[1], "rb").read()[:5000])
    with pytest.raises(ValueError, match=r"truncated\.onnx: not a readable ONNX model"):
        OnnxEmbedder(str(truncated))
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OnnxEmbedder(str(tmp_path / "missing.onnx"))
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX graph that fashionlens did not write
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(ValueError, match="no fashionlens metadata"):
        OnnxEmbedder(str(foreign))


def test_load_predictor_picks_the_runtime(tiny_onnx):
    run, path = tiny_onnx
    assert isinstance(load_predictor(path), OnnxEmbedder)
    assert type(load_predictor(run)) is Predictor


def run_cli(argv: list[str]) -> int:
    return cli.main(argv)


def test_cli_export_onnx(tmp_path, tiny_onnx, capsys):
    run, _ = tiny_onnx
    out = tmp_path / "cli.onnx"
    assert run_cli(["export-onnx", "--model", run, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["onnx"] == str(out) and summary["bytes"] == out.stat().st_size and summary["categories"] == 5
    assert summary["outputs"][0] == "embedding"
    assert run_cli(["export-onnx", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
