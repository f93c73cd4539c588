"""Serving an exported .onnx model: every command and the HTTP service take it through one loader, the run's
calibration travels in the file (hedged answers equal the run's), a GPU asked of it is one clear error, and
INT8 quantisation (static QDQ / dynamic) gives a model that loads, keeps the labels and mostly agrees."""

import json
import os

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from test_catalog import make_run

from fashionlens.cli import main
from fashionlens.export import (
    OnnxEmbedder,
    compare_onnx,
    export_onnx,
    load_predictor,
    network_inputs,
    quantize_onnx,
    same_model,
    shifted_inputs,
)
from fashionlens.hierarchy.calibration import calibrate_outputs
from fashionlens.inference import Predictor
from fashionlens.runs import calibration_path, load_calibration

LABELS = {
    "categories": ["Dress", "Shorts", "Tee"],  # sorted, as the folder reader names the classes
    "category_paths": ["full.dresses.dress", "lower.shorts.shorts", "upper.tops.tee"],
    "category_types": [3, 2, 1], "attributes": ["solid", "striped", "dotted"], "attribute_groups": [1, 1, 1],
    "group_names": {"1": "texture"}, "single_choice_groups": True, "items": [],
}
TARGETS = (0.8, 0.9, 0.95, 0.99)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


def write_photos(root, per_class: int = 8, seed: int = 0) -> list[str]:
    """A ``folder:`` data set root/{train,val}/<category>/*.jpg of coloured shapes of varied sizes."""
    rng = np.random.default_rng(seed)
    files = []
    for split in ("train", "val"):
        for c, name in enumerate(LABELS["categories"]):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(per_class):
                w, h = int(rng.integers(40, 110)), int(rng.integers(40, 110))
                pixels = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                pixels[y0:y0 + h // 2, x0:x0 + w // 2] = (80 * c, 255 - 60 * c, int(rng.integers(0, 256)))
                pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
                path = os.path.join(root, split, name, f"{i}.jpg")
                Image.fromarray(pixels).save(path, quality=92)
                files.append(path)
    return files


def tiny_run(out, images, *, seed: int = 0, tta_flip: bool = False, labels=None, dim: int = 32) -> str:
    """A random-weight tiny_cnn FashionNet run (box head on, weights jittered) whose BatchNorm statistics are
    measured on ``images``, so that its answers differ between images; ``seed`` gives another model."""
    return make_run(out, images, dim, True, seed=seed, tta_flip=tta_flip, labels=labels or LABELS, jitter=0.05)


def calibrate(run: str, images: list[str]) -> dict:
    """Write a calibration.json for ``run`` fitted on ``images`` with labels that are right 2 times in 3 (so every
    target from 0.8 up needs hedging), as ``fashionlens calibrate`` would."""
    from fashionlens.data.decode import load_image

    predictor = Predictor.load(run)
    logits = predictor.forward([load_image(f) for f in images])[0]["category"]
    labels = logits.argmax(1)
    labels[::3] = (labels[::3] + 1) % logits.shape[1]
    state = calibrate_outputs(logits, labels, predictor.labels, [], folds=3)
    with open(calibration_path(run), "w", encoding="utf-8") as f:
        json.dump(state, f, allow_nan=False)
    return state


def pictures(files: list[str]) -> list[Image.Image]:
    return [Image.open(f).convert("RGB") for f in files]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_serving")
    files = write_photos(str(root / "photos"))
    run = tiny_run(root / "run", files, tta_flip=True)  # mirror TTA: the export must not bake the batch size in
    state = calibrate(run, files)
    onnx_path = export_onnx(run, str(root / "model.onnx"))
    plain_run = tiny_run(root / "plain", files, seed=3)  # not calibrated
    plain_onnx = export_onnx(plain_run, str(root / "plain.onnx"))
    return {"root": root, "files": files, "run": run, "state": state, "onnx": onnx_path, "plain_run": plain_run,
            "plain_onnx": plain_onnx, "data": f"folder:{root / 'photos'}"}


# -- the calibration travels in the file -----------------------------------------------------------------
def test_the_calibration_travels_in_the_onnx_metadata(world):
    meta = {p.key: p.value for p in onnx.load(world["onnx"]).metadata_props}
    assert json.loads(meta["fashionlens.calibration"]) == load_calibration(world["run"])
    embedder = OnnxEmbedder(world["onnx"], threads=1)
    assert embedder.calibration() == world["state"] and embedder.run == world["onnx"]
    assert embedder.temperature == pytest.approx(world["state"]["temperature"])
    assert abs(embedder.temperature - 1.0) > 0.01  # a real temperature, so that it matters below
    assert "fashionlens.calibration" not in {p.key for p in onnx.load(world["plain_onnx"]).metadata_props}


def test_onnx_answers_and_hedges_exactly_like_the_run(world):
    images = pictures(world["files"][::4])
    run, model = Predictor.load(world["run"]), load_predictor(world["onnx"])
    assert isinstance(model, OnnxEmbedder)
    np.testing.assert_allclose(model.embed(images), run.embed(images), atol=1e-4)
    hedged = set()
    for target in TARGETS:
        for a, b in zip(model.predict(images, target), run.predict(images, target)):
            assert a["category"] == b["category"]
            np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-4)
            np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.11)  # answers round to 0.1 px
            assert (a["hedged"]["name"], a["hedged"]["path"]) == (b["hedged"]["name"], b["hedged"]["path"])
            assert a["hedged"]["probability"] == pytest.approx(b["hedged"]["probability"], abs=1e-4)
            hedged.add(a["hedged"]["name"])
    assert len(hedged) >= 2  # the targets move the answers up the taxonomy: a comparison with substance


def test_the_tta_export_takes_any_batch_size(world):
    images = pictures(world["files"][:5])
    run, model = Predictor.load(world["run"]), OnnxEmbedder(world["onnx"], threads=1)
    assert run.model.tta_flip
    want = run.forward(images)[0]
    for batch in ([images[0]], images[:3], images):
        got = model.forward(batch)[0]
        for key in ("category", "embedding", "bbox", "attributes"):
            np.testing.assert_allclose(got[key], want[key][:len(batch)], atol=1e-4, err_msg=key)


def test_an_uncalibrated_onnx_refuses_hedged_answers(world):
    model = OnnxEmbedder(world["plain_onnx"], threads=1)
    assert model.calibration() is None and model.temperature == 1.0
    with pytest.raises(FileNotFoundError, match="carries no calibration.*fashionlens calibrate"):
        model.predict(pictures(world["files"][:1]), target_accuracy=0.9)


# -- every command takes the .onnx -----------------------------------------------------------------------
def test_predict_cli_with_an_onnx_model(world, capsys):
    image = world["files"][1]
    answers = {}
    for model in (world["run"], world["onnx"]):
        code, out, _ = run_cli(["predict", "--model", model, image, "--target-accuracy", "0.95", "--device", "auto"],
                               capsys)
        assert code == 0
        answers[model] = json.loads(out)
    a, b = answers[world["onnx"]], answers[world["run"]]
    assert a["image"] == image and a["category"] == b["category"] and a["hedged"]["name"] == b["hedged"]["name"]
    assert [s["name"] for s in a["category_scores"]] == [s["name"] for s in b["category_scores"]]
    np.testing.assert_allclose([s["score"] for s in a["category_scores"]], [s["score"] for s in b["category_scores"]],
                               atol=2e-4)


def test_catalog_build_add_and_search_with_an_onnx_model(world, capsys, tmp_path):
    folder = os.path.join(str(world["root"]), "photos", "train")
    hits = {}
    for name, model in (("run", world["run"]), ("onnx", world["onnx"])):
        catalog = tmp_path / name
        code, out, _ = run_cli(["catalog", "build", "--model", model, "--images", folder, "--out", catalog, "--quiet"],
                               capsys)
        assert code == 0 and json.loads(out)["added"] == 24
        with open(catalog / "catalog.json", encoding="utf-8") as f:
            assert same_model(json.load(f)["model_run"], model)
        query = world["files"][30]  # a val image: added below, then found first
        code, out, _ = run_cli(["catalog", "add", catalog, query], capsys)
        assert code == 0 and json.loads(out)["source"] == os.path.abspath(query)
        code, out, _ = run_cli(["search", "--catalog", catalog, query, "--json", "-k", "5"], capsys)
        assert code == 0
        hits[name] = json.loads(out)
    assert hits["onnx"][0]["source"] == os.path.abspath(world["files"][30]) and hits["onnx"][0]["score"] > 0.999
    assert [h["source"] for h in hits["onnx"]] == [h["source"] for h in hits["run"]]
    np.testing.assert_allclose([h["score"] for h in hits["onnx"]], [h["score"] for h in hits["run"]], atol=1e-4)


def test_serve_an_onnx_model_answers_target_accuracy_like_the_run(world):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.serving import ServeSettings, create_app

    bodies = {}
    for model in (world["run"], world["onnx"]):
        with TestClient(create_app(ServeSettings(model_run=model))) as client:
            bodies[model] = []
            for path in world["files"][::6]:
                with open(path, "rb") as f:
                    r = client.post("/v1/classify", files={"image": ("x.jpg", f.read(), "image/jpeg")},
                                    data={"target_accuracy": "0.9"})
                assert r.status_code == 200, r.text
                bodies[model].append(r.json())
            labels = client.get("/v1/labels").json()
            assert labels["hedging"]["calibrated"] and 0.9 in labels["hedging"]["targets"]
    for a, b in zip(bodies[world["onnx"]], bodies[world["run"]]):
        assert a["category"] == b["category"] and a["hedged"]["name"] == b["hedged"]["name"]
        assert a["hedged"]["probability"] == pytest.approx(b["hedged"]["probability"], abs=1e-4)
    with TestClient(create_app(ServeSettings(model_run=world["plain_onnx"]))) as client:
        with open(world["files"][0], "rb") as f:
            r = client.post("/v1/classify", files={"image": ("x.jpg", f.read(), "image/jpeg")},
                            data={"target_accuracy": "0.9"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_calibrated"


# -- a GPU asked of an .onnx model -----------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["predict", "--model", "{onnx}", "{image}"],
    ["serve", "--model", "{onnx}", "--port", "9"],
    ["catalog", "build", "--model", "{onnx}", "--images", "{folder}", "--out", "{tmp}/cat", "--quiet"],
])
def test_a_gpu_asked_of_an_onnx_model_is_one_clear_error(command, world, tmp_path, capsys):
    values = {"onnx": world["onnx"], "image": world["files"][0], "folder": os.path.dirname(world["files"][0]),
              "tmp": tmp_path}
    code, out, err = run_cli([str(p).format(**values) for p in command] + ["--device", "cuda"], capsys)
    assert code == 2 and out == "" and "an exported .onnx model runs on the CPU" in err
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "cat")


def test_the_library_refuses_a_gpu_for_onnx_and_takes_auto(world):
    from fashionlens.serving import ServeSettings

    with pytest.raises(ValueError, match="an exported .onnx model runs on the CPU"):
        load_predictor(world["onnx"], device="cuda")
    with pytest.raises(ValueError, match="ServeSettings.device: .*runs on the CPU"):
        ServeSettings(model_run=world["onnx"], device="cuda:0").validate()
    assert isinstance(load_predictor(world["onnx"], device="auto"), OnnxEmbedder)
    assert isinstance(load_predictor(world["onnx"], device=torch.device("cpu")), OnnxEmbedder)


# -- INT8 ------------------------------------------------------------------------------------------------
def test_static_int8_loads_keeps_the_labels_and_agrees(world, tmp_path):
    float_model = OnnxEmbedder(world["onnx"], threads=1)
    inputs, labels, _ = network_inputs(float_model, world["data"], split="train,val")
    assert inputs.shape == (48, 3, 48, 48) and sorted(set(labels.tolist())) == [0, 1, 2]
    path = quantize_onnx(world["onnx"], str(tmp_path / "int8.onnx"), method="static", calibration=inputs[::2])
    graph = onnx.load(path).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 5  # really quantised (QDQ)
    model = load_predictor(path)
    assert model.labels == float_model.labels and model.quantization["method"] == "static"
    assert model.quantization["calibration_images"] == 24
    assert model.calibration() == float_model.calibration()  # hedged answers survive quantisation
    report = compare_onnx(world["onnx"], path, inputs[1::2], labels[1::2], threads=1, seconds=0.05, rounds=1)
    assert report["images"] == 24 and report["top1_agreement"] >= 0.75
    assert report["embedding_cosine_mean"] > 0.95
    assert report["accuracy_change"] == pytest.approx(report["int8_accuracy"] - report["float_accuracy"])
    assert report["float_images_per_s"] > 0 and report["int8_over_float"] > 0
    answers = model.predict(pictures(world["files"][:4]), target_accuracy=0.9)
    assert all(a["category"] in LABELS["categories"] and "hedged" in a for a in answers)


def test_static_int8_can_keep_the_first_convolutions_float(world, tmp_path):
    float_model = OnnxEmbedder(world["onnx"], threads=1)
    inputs = network_inputs(float_model, world["data"], split="train")[0]
    path = quantize_onnx(world["onnx"], str(tmp_path / "int8.onnx"), method="static", calibration=inputs,
                         float_first_convs=2)
    graph = onnx.load(path).graph
    weights = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # a float Conv reads its weight initializer itself; a quantised one through DequantizeLinear (QDQ). The
    # mirror-TTA export runs each convolution twice on one weight: both stay float.
    order = list(dict.fromkeys(c.input[1] for c in convs))
    raw = {w: all(c.input[1] in weights for c in convs if c.input[1] == w) for w in order}
    assert [raw[w] for w in order[:2]] == [True, True] and not any(raw[w] for w in order[2:]), raw
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    assert gemms and all(n.input[1] in weights for n in gemms)  # the heads stay float too
    assert load_predictor(path).quantization["float_first_convs"] == 2


def test_shifted_inputs_are_each_photo_under_each_shift(world):
    from fashionlens.data.decode import load_image
    from fashionlens.evaluation.distortions import SHIFTS, shift

    model = OnnxEmbedder(world["onnx"], threads=1)
    paths = world["files"][:3]
    x = shifted_inputs(model, paths)
    plain = network_inputs(model, world["data"], split="train", limit=3)[0]
    assert x.shape == (len(SHIFTS) * 3, *plain.shape[1:]) and x.dtype == np.float32
    for k, kind in enumerate(SHIFTS):  # kind-major; photo i seeded 2000 + i
        for i, p in enumerate(paths):
            np.testing.assert_array_equal(x[k * 3 + i], model.preprocess(shift(load_image(p), kind, 2000 + i))[0])
    zoomed = shifted_inputs(model, paths[:1], ["zoomout"], seed=1000)
    assert not np.array_equal(zoomed[0], x[0])  # another seed places the photo elsewhere
    np.testing.assert_array_equal(zoomed, shifted_inputs(model, paths[:1], ["zoomout"], seed=1000))
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        shifted_inputs(model, paths, ["fog"])


def test_int8_calibration_on_shifted_copies_from_the_cli(world, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code, text, _ = run_cli(["export-onnx", "--model", world["run"], "--out", out, "--int8", "--data", world["data"],
                             "--calibration-images", "6", "--eval-images", "10", "--seconds", "0.05",
                             "--threads", "1", "--calibration-shifts"], capsys)
    assert code == 0
    summary = json.loads(text)
    assert summary["calibration_images"] == 30 and summary["calibration_shifts"] is True  # 6 photos x (1 + 4 shifts)
    assert summary["quantization"]["calibration_images"] == 30  # what the file says it was calibrated on
    assert summary["comparison"]["images"] == 10
    code, _, err = run_cli(["export-onnx", "--model", world["run"], "--out", tmp_path / "d.onnx", "--int8",
                            "--quantization", "dynamic", "--calibration-shifts"], capsys)
    assert code == 2 and "--calibration-shifts needs static quantization" in err
    assert not os.path.exists(tmp_path / "d.onnx")


def test_dynamic_int8_and_static_without_images(world, tmp_path):
    path = quantize_onnx(world["onnx"], str(tmp_path / "dyn.onnx"), method="dynamic")
    model = OnnxEmbedder(path, threads=1)
    assert model.quantization["method"] == "dynamic" and model.embed(pictures(world["files"][:2])).shape == (2, 32)
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize_onnx(world["onnx"], str(tmp_path / "x.onnx"), method="static")
    assert not os.path.exists(tmp_path / "x.onnx")


def test_export_onnx_int8_cli_reports_agreement_and_speed(world, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code, text, _ = run_cli(["export-onnx", "--model", world["run"], "--out", out, "--int8", "--data", world["data"],
                             "--calibration-images", "12", "--eval-images", "20", "--seconds", "0.05",
                             "--threads", "1", "--float-out", tmp_path / "f.onnx", "--float-first-convs", "1",
                             "--float-sensitive", "1"], capsys)
    assert code == 0
    summary = json.loads(text)
    comparison = summary["comparison"]
    assert summary["quantization"]["method"] == "static" and summary["quantization"]["calibration_images"] == 12
    assert summary["quantization"]["float_first_convs"] == 1
    assert summary["quantization"]["float_sensitive"] == 1 and len(summary["quantization"]["float_tensors"]) == 1
    assert comparison["images"] == 20 and comparison["labelled_images"] == 20 and comparison["top1_agreement"] >= 0.7
    assert {"float_accuracy", "int8_accuracy", "accuracy_change", "int8_over_float"} <= comparison.keys()
    assert os.path.isfile(out) and os.path.isfile(tmp_path / "f.onnx") and summary["float_bytes"] > 0
    code, _, err = run_cli(["export-onnx", "--model", world["run"], "--out", tmp_path / "r.onnx", "--int8",
                            "--quantization", "static"], capsys)
    assert code == 2 and "needs --data SPEC" in err and not os.path.exists(tmp_path / "r.onnx")


def test_static_int8_can_keep_the_depthwise_convolutions_float(world, tmp_path):
    """An EfficientNet-Lite (random weights, 32 px): with float_depthwise every depthwise convolution (group > 1)
    and the heads read their float weights; the pointwise ones are quantised; the calibration method is recorded."""
    from test_catalog import make_run

    run = make_run(tmp_path / "lite", world["files"][:8], backbone="tf_efficientnet_lite0", image_size=32)
    float_path = export_onnx(run, str(tmp_path / "lite.onnx"))
    inputs = network_inputs(OnnxEmbedder(float_path, threads=1), world["data"], split="train", limit=8)[0]
    path = quantize_onnx(float_path, str(tmp_path / "lite-int8.onnx"), method="static", calibration=inputs,
                         float_depthwise=True, calibration_method="percentile")
    graph = onnx.load(path).graph
    weights = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    group = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs}
    depthwise = [n for n in convs if group[n.name] > 1]
    pointwise = [n for n in convs if group[n.name] == 1]
    assert depthwise and pointwise
    assert all(n.input[1] in weights for n in depthwise)  # float: the weight initializer itself
    assert not any(n.input[1] in weights for n in pointwise)  # INT8: through DequantizeLinear
    info = load_predictor(path).quantization
    assert info["float_depthwise"] is True and info["calibration_method"] == "percentile"
    with pytest.raises(ValueError, match="calibration_method"):
        quantize_onnx(float_path, str(tmp_path / "x.onnx"), method="static", calibration=inputs,
                      calibration_method="mse")


def test_static_int8_keeps_the_most_sensitive_activations_float(world, tmp_path):
    """float_sensitive=N: the N activations with the lowest signal-to-quantisation-noise ratio in the fully
    quantised model (measured with ONNX Runtime's qdq_loss_debug) are no longer quantised, their convolutions
    read float weights, and the metadata names them with their ratios."""
    from test_catalog import make_run

    from fashionlens.export import quantisation_sensitivity

    run = make_run(tmp_path / "lite", world["files"][:8], backbone="tf_efficientnet_lite0", image_size=32)
    float_path = export_onnx(run, str(tmp_path / "lite.onnx"))
    inputs = network_inputs(OnnxEmbedder(float_path, threads=1), world["data"], split="train", limit=8)[0]
    full = quantize_onnx(float_path, str(tmp_path / "full.onnx"), method="static", calibration=inputs)
    ranked = quantisation_sensitivity(float_path, full, inputs)
    ratios = [r for _, r in ranked]
    assert len(ranked) > 10 and ratios == sorted(ratios) and np.isfinite(ratios).all()
    path = quantize_onnx(float_path, str(tmp_path / "mixed.onnx"), method="static", calibration=inputs,
                         float_sensitive=2)
    info = load_predictor(path).quantization
    assert info["float_sensitive"] == 2 and list(info["float_tensors"]) == [name for name, _ in ranked[:2]]
    assert info["float_nodes"] >= 2
    graph = onnx.load(path).graph
    quantised = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert not quantised & set(info["float_tensors"])  # no longer quantised
    assert quantised & {name for name, _ in ranked[2:]}  # the rest still is
    weights = {i.name for i in graph.initializer}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm") and set(n.input) & set(info["float_tensors"])]
    assert layers and all(n.input[1] in weights for n in layers)  # float weights where a chosen tensor flows
    remaining = dict(quantisation_sensitivity(float_path, path, inputs))
    assert not set(remaining) & set(info["float_tensors"])
    with pytest.raises(ValueError, match="float_sensitive"):
        quantize_onnx(float_path, str(tmp_path / "x.onnx"), method="static", calibration=inputs, float_sensitive=-1)


def test_static_int8_leaves_the_padding_arithmetic_float(world, tmp_path):
    """timm's 'SAME' padding is float arithmetic on the feature map's size: it must not be quantised. Before,
    its Sub / Mul / Add tensors got QuantizeLinear pairs and, run as written (graph optimisations off), the
    INT8 model failed on a 5x5 convolution over an unpadded 4x4 map."""
    import onnxruntime as ort

    run = make_run(tmp_path / "lite", world["files"][:8], backbone="tf_efficientnet_lite0", image_size=32)
    float_path = export_onnx(run, str(tmp_path / "lite.onnx"))
    inputs = network_inputs(OnnxEmbedder(float_path, threads=1), world["data"], split="train", limit=8)[0]
    path = quantize_onnx(float_path, str(tmp_path / "int8.onnx"), method="static", calibration=inputs)
    graph = onnx.load(path).graph
    pads = [n.input[1] for n in graph.node if n.op_type == "Pad"]
    assert pads
    quantised = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert not any("/conv_dw/" in t and "Pad_output" not in t for t in quantised)  # no pad arithmetic in INT8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    outputs = {}
    for name, model in (("float", float_path), ("int8", path)):
        proto = onnx.load(model)
        proto.graph.output.extend(onnx.helper.make_tensor_value_info(p, onnx.TensorProto.INT64, None) for p in pads)
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs[name] = session.run(pads, {session.get_inputs()[0].name: inputs})
    for a, b in zip(outputs["float"], outputs["int8"]):
        np.testing.assert_array_equal(a, b)  # the same pads, exactly
