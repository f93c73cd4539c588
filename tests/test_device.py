"""``--device`` end to end (resolve, Predictor, embedding, CLI, serving) and ``--crop`` with a model that has no
box head (library, catalog, CLI, API): an error naming the model, never a silent whole-image embedding.

CPU only (CI has no GPU): CUDA is simulated by monkeypatching ``torch.cuda`` where the code only asks
about it, and the "moved to its device" checks use the ``meta`` device or a spy on ``Tensor.to``.
"""

import contextlib
import copy
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_catalog import DIM, make_run  # the tiny random-weight run of the catalog tests

from fashionlens.cli import main
from fashionlens.inference import Predictor, crop_garments
from fashionlens.utils import resolve_device

NO_BOX = "this model has no box head (model.use_bbox is off)"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny forwards, one torch thread


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight small JPEGs with a coloured block on a grey ground (enough variety for BatchNorm statistics)."""
    folder = tmp_path_factory.mktemp("device") / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        pixels = np.full((64, 48, 3), 128, np.uint8)
        pixels[10 + i:40 + i, 8:36] = rng.integers(0, 255, 3, dtype=np.uint8)
        path = folder / f"p{i}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def boxed_run(photos, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("device") / "boxed", photos)


@pytest.fixture(scope="module")
def boxless_run(photos, tmp_path_factory):
    """A run of a model trained without the box head (``model.use_bbox=false``): random weights, no training."""
    return make_run(tmp_path_factory.mktemp("device") / "boxless", photos, use_bbox=False)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- resolve_device ---------------------------------------------------------------------------------------
def test_resolve_device_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu") and resolve_device("CPU") == torch.device("cpu")


def test_resolve_device_auto_on_this_machine():
    """Unpatched: the CPU on a machine without a GPU (CI), the GPU where there is one."""
    mps = getattr(torch.backends, "mps", None)
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_resolve_device_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0) and resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun: the local rank's GPU
    assert resolve_device("auto") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_resolve_device_absent_or_unknown_is_a_value_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


# -- Predictor on a device --------------------------------------------------------------------------------
def test_predictor_on_cpu_matches_the_default(boxed_run, photos):
    default = Predictor.load(boxed_run)
    on_cpu = Predictor.load(boxed_run, device="cpu")
    assert default.device == on_cpu.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in on_cpu.model.parameters())
    pictures = [Image.open(f).convert("RGB") for f in photos[:3]]
    a, b = default.predict(pictures), on_cpu.predict(pictures)
    for x, y in zip(a, b):
        assert x["category"] == y["category"] and x["bbox"] == y["bbox"]
        assert np.array_equal(x["embedding"], y["embedding"]) and x["embedding"].dtype == np.float32
    assert np.array_equal(default.embed(pictures, crop=True), on_cpu.embed(pictures, crop=True))
    explicit = Predictor.load(boxed_run, device=torch.device("cpu"))
    assert np.array_equal(explicit.embed(pictures), default.embed(pictures))


class RecordingModel(torch.nn.Module):
    """Stands on any device (one parameter), records the device of each input and answers with a CPU copy of
    the real model run on zeros of the input's shape (so that a ``meta`` device still gives numbers)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.inner = [inner]  # a list: not a submodule, so it stays on the CPU when this module moves
        self.seen: list[torch.device] = []

    def forward(self, x: torch.Tensor) -> dict:
        self.seen.append(x.device)
        return self.inner[0](torch.zeros(x.shape))


def test_predictor_moves_model_and_input_batch_to_its_device(boxed_run, photos, monkeypatch):
    from fashionlens.embedding import embed_batch

    base = Predictor.load(boxed_run)
    model = RecordingModel(copy.deepcopy(base.model))
    predictor = Predictor(model, base.cfg, base.labels, device="meta")
    assert predictor.device == torch.device("meta") and model.anchor.device.type == "meta"
    moves = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kw):
        moves.append((args, kw))
        return real_to(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    pictures = [Image.open(f).convert("RGB") for f in photos[:2]]
    answers = predictor.predict(pictures)
    assert model.seen == [torch.device("meta")] and len(answers) == 2 and "bbox" in answers[0]
    assert ((torch.device("meta"),), {"non_blocking": True}) in moves
    batch = torch.stack([predictor.preprocess(p)[0] for p in pictures])
    vectors = embed_batch(predictor, batch)  # the data-set embedding path moves its batches too
    assert model.seen[-1] == torch.device("meta") and vectors.shape == (2, DIM) and vectors.dtype == np.float32


def test_embed_spec_loads_on_the_device_asked(boxed_run, photos, monkeypatch):
    from fashionlens import embedding

    asked = []
    real = embedding.load_predictor

    def spy(model, **kw):
        asked.append(kw.get("device"))
        return real(model, **kw)

    monkeypatch.setattr(embedding, "load_predictor", spy)
    folder = os.path.dirname(photos[0])
    _, cpu_vectors = embedding.embed_spec(boxed_run, folder, progress=False, device="cpu")
    _, default_vectors = embedding.embed_spec(boxed_run, folder, progress=False)
    assert asked == ["cpu", None] and np.array_equal(cpu_vectors, default_vectors)


# -- --device on the command line --------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["predict", "--model", "{run}", "{image}"],
    ["embed", "--model", "{run}", "--images", "{folder}", "--out", "{tmp}/e.npz", "--quiet"],
    ["catalog", "build", "--model", "{run}", "--images", "{folder}", "--out", "{tmp}/cat", "--quiet"],
    ["catalog", "add", "{tmp}/no-catalog", "{image}"],
    ["search", "--catalog", "{tmp}/no-catalog", "{image}"],
    ["serve", "--model", "{run}", "--port", "9"],
])
def test_device_cuda_without_a_gpu_is_one_clear_error(command, boxed_run, photos, tmp_path, capsys, monkeypatch):
    import fashionlens.serving

    def no_serving(*args, **kw):
        raise AssertionError("serve started (a port would be bound) despite the absent device")

    monkeypatch.setattr(fashionlens.serving, "serve", no_serving)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI (a no-op on this machine)
    values = {"run": boxed_run, "image": photos[0], "folder": os.path.dirname(photos[0]), "tmp": str(tmp_path)}
    code, out, err = run_cli([part.format(**values) for part in command] + ["--device", "cuda"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("fashionlens: error: device 'cuda' asked for, but this PyTorch sees no CUDA GPU")
    assert len(err.strip().splitlines()) == 1 and "--device cpu" in err
    assert not os.path.exists(tmp_path / "cat") and not os.path.exists(tmp_path / "e.npz")  # nothing done


@pytest.mark.parametrize("command", ["predict", "embed", "catalog build", "catalog add", "search", "serve"])
def test_device_option_is_offered(command, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    assert "--device" in capsys.readouterr().out


def test_device_cpu_on_the_command_line(boxed_run, photos, tmp_path, capsys):
    code, out, _ = run_cli(["predict", "--model", boxed_run, photos[0], "--device", "cpu"], capsys)
    assert code == 0 and json.loads(out)["image"] == photos[0]
    code, out, _ = run_cli(["embed", "--model", boxed_run, "--images", os.path.dirname(photos[0]),
                            "--out", tmp_path / "e.npz", "--quiet", "--device", "auto"], capsys)
    assert code == 0 and json.loads(out)["num_images"] == len(photos)
    code, _, err = run_cli(["predict", "--model", boxed_run, photos[0], "--device", "tpu"], capsys)
    assert code == 2 and "unknown device 'tpu'" in err


def test_onnx_embed_refuses_a_gpu_device(tmp_path, capsys):
    code, _, err = run_cli(["embed", "--model", tmp_path / "m.onnx", "--images", tmp_path, "--out", tmp_path / "e.npz",
                            "--device", "cuda"], capsys)
    assert code == 2 and "an exported .onnx model runs on the CPU" in err


def test_serve_settings_carry_the_device(boxed_run, monkeypatch):
    pytest.importorskip("fastapi")
    from fashionlens.serving import ServeSettings, create_app

    app = create_app(ServeSettings(boxed_run, device="cpu"))
    try:
        assert app.state.service.predictor.device == torch.device("cpu")
    finally:
        app.state.service.close()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="ServeSettings.device: device 'cuda:1' asked for, but .* no CUDA GPU"):
        create_app(ServeSettings(boxed_run, device="cuda:1"))


# -- --crop with a model that has no box head --------------------------------------------------------------
def test_boxless_predictor_refuses_crop(boxless_run, photos):
    predictor = Predictor.load(boxless_run)
    pictures = [Image.open(f).convert("RGB") for f in photos[:2]]
    assert not predictor.has_box and "bbox" not in predictor.predict(pictures)[0]
    for call in (lambda: predictor.analyse(pictures, crop=True), lambda: predictor.analyse(pictures, crop=[False, True]),
                 lambda: predictor.embed(pictures, crop=True), lambda: predictor.crop_garments(pictures),
                 lambda: crop_garments(predictor, pictures)):
        with pytest.raises(ValueError, match=re.escape(f"model {boxless_run}: {NO_BOX}: ")):
            call()
    assert predictor.analyse(pictures)[0]["crop"] is None  # no crop asked: fine
    assert predictor.embed(pictures).shape == (2, DIM)
    assert Predictor.load(boxless_run).has_box is False and Predictor.load(boxless_run).run == boxless_run


def test_crop_garments_of_a_predictor_without_boxes():
    class NoBoxes:
        def predict(self, images):
            return [{"category": "Tee"} for _ in images]

    with pytest.raises(ValueError, match="has no box head"):
        crop_garments(NoBoxes(), [Image.new("RGB", (20, 20))])


def test_boxless_catalog_refuses_crop_before_any_work(boxless_run, photos, tmp_path):
    from fashionlens.catalog import Catalog, build

    with pytest.raises(ValueError, match=re.escape(NO_BOX)):
        build(str(tmp_path / "cat"), boxless_run, os.path.dirname(photos[0]), progress=False, crop=True)
    assert not os.path.exists(tmp_path / "cat")  # the catalog was not even created
    build(str(tmp_path / "cat"), boxless_run, os.path.dirname(photos[0]), progress=False)
    with Catalog.open(str(tmp_path / "cat")) as catalog:
        before = len(catalog)
        with pytest.raises(ValueError, match=re.escape(NO_BOX)):
            catalog.add([photos[0]], crop=True)
        with pytest.raises(ValueError, match=re.escape(NO_BOX)):
            catalog.search(photos[0], k=2, crop=True)
        assert len(catalog) == before and len(catalog.search(photos[0], k=2)) == 2


def test_boxless_crop_on_the_command_line(boxless_run, photos, tmp_path, capsys):
    folder = os.path.dirname(photos[0])
    code, out, err = run_cli(["catalog", "build", "--model", boxless_run, "--images", folder,
                              "--out", tmp_path / "cat", "--crop", "--quiet"], capsys)
    assert code == 2 and out == "" and not os.path.exists(tmp_path / "cat")
    assert err.strip() == (f"fashionlens: error: model {boxless_run}: {NO_BOX}: --crop cannot localise the garment")
    assert run_cli(["catalog", "build", "--model", boxless_run, "--images", folder, "--out", tmp_path / "cat",
                    "--quiet"], capsys)[0] == 0
    for command in (["catalog", "add", tmp_path / "cat", photos[0], "--crop"],
                    ["search", "--catalog", tmp_path / "cat", photos[0], "--crop"]):
        code, out, err = run_cli(command, capsys)
        assert code == 2 and out == "" and f"{NO_BOX}: --crop cannot localise the garment" in err
    code, out, _ = run_cli(["catalog", "list", tmp_path / "cat", "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == len(photos)  # the refused add stored nothing


def test_boxless_api_answers_422_for_crop(boxless_run, photos, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fashionlens.catalog import build
    from fashionlens.serving import ServeSettings, create_app

    with contextlib.redirect_stderr(io.StringIO()):
        build(str(tmp_path / "cat"), boxless_run, os.path.dirname(photos[0]), progress=False)
    app = create_app(ServeSettings(boxless_run, str(tmp_path / "cat")))
    with open(photos[0], "rb") as f:
        data = f.read()
    try:
        with TestClient(app) as client:
            files = {"image": ("p.jpg", data, "image/jpeg")}
            refused = client.post("/v1/search", files=files, data={"crop": "true"})
            assert refused.status_code == 422
            error = refused.json()["error"]
            assert error["code"] == "no_box_head" and NO_BOX in error["message"]
            assert os.path.basename(boxless_run) in error["message"] and str(tmp_path) not in error["message"]
            plain = client.post("/v1/search", files=files, data={"k": "2"})
            assert plain.status_code == 200 and plain.json()["query"]["bbox"] is None  # the page hides the option
            assert plain.json()["classification"]["bbox"] is None and len(plain.json()["results"]) == 2
    finally:
        app.state.service.close()
