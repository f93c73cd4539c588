"""The trainer on any device: device resolution, batches moved where the model is, mixed precision by device,
loader sizing, SyncBatchNorm and compile switches, and a cross-rank metric loss whose data-parallel gradients
equal those of one process on the joint batch (two gloo processes under torchrun)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fashionlens.training.fit as fit_module
import fashionlens.training.loop as loop
from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
from fashionlens.losses.metric import build_metric_loss
from fashionlens.training import distributed as ddp
from fashionlens.training.distributed import shard_batch
from fashionlens.training.fit import Trainer, fit, loader_workers, make_loader
from fashionlens.training.loop import Precision, precision_for, to_device, train_one_epoch


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    from fashionlens.data.garments import render_dataset

    root = tmp_path_factory.mktemp("garments")
    render_dataset(str(root), items=14, views=3, size=48, seed=0, progress=False)
    return f"garments:{root}"


def tiny(spec: str, **train) -> RunConfig:
    return RunConfig(data=DataConfig(spec=spec, image_size=32),
                     model=ModelConfig(backbone="tiny_cnn", pretrained=False, hidden_dim=16, embedding_dim=8),
                     train=TrainConfig(epochs=1, batch_size=8, checkpoint_every=0, **train))


# ---------------------------------------------------------------- devices and precision


def test_precision_follows_the_device(monkeypatch):
    assert not precision_for(torch.device("cpu"), amp=False).enabled
    cpu = precision_for(torch.device("cpu"), amp=True)
    assert (cpu.device_type, cpu.dtype, cpu.enabled, cpu.scaler) == ("cpu", torch.bfloat16, True, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision_for(torch.device("cuda", 0), amp=True).dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    old = precision_for(torch.device("cuda", 0), amp=True)
    assert old.dtype == torch.float16 and isinstance(old.scaler, torch.amp.GradScaler)
    assert old.describe() == "float16 autocast + gradient scaler"
    assert not precision_for(torch.device("mps"), amp=True).enabled


def test_to_device_moves_every_tensor_and_sets_the_layout():
    batch = {"image": torch.zeros(2, 3, 4, 4), "category": torch.tensor([1, 2]), "name": ["a", "b"]}
    moved = to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last) and moved["name"] == ["a", "b"]
    assert torch.equal(moved["category"], batch["category"])


def test_the_trainer_runs_where_the_config_says_and_refuses_an_absent_gpu(spec, tmp_path, monkeypatch):
    trainer = Trainer(tiny(spec, device="auto"), str(tmp_path / "auto"), progress=False, log=lambda *_: None)
    assert trainer.device == torch.device("cpu")  # no GPU here: auto is the CPU
    assert all(p.device.type == "cpu" for p in trainer.model.parameters())
    trainer.close()
    with pytest.raises(ValueError, match="no CUDA GPU"):
        Trainer(tiny(spec, device="cuda"), str(tmp_path / "gpu"), progress=False)
    assert not (tmp_path / "gpu").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="unknown device 'tpu7'"):
        Trainer(tiny(spec, device="tpu7"), str(tmp_path / "tpu"), progress=False)


def test_every_training_and_validation_batch_goes_to_the_trainers_device(spec, tmp_path, monkeypatch):
    asked, moved = [], []
    real_resolve, real_move = fit_module.resolve_device, loop.to_device

    def resolve(name):
        asked.append(name)
        return real_resolve("cpu")

    def move(batch, device, channels_last=False):
        moved.append(device)
        return real_move(batch, device, channels_last)

    monkeypatch.setattr(fit_module, "resolve_device", resolve)
    monkeypatch.setattr(loop, "to_device", move)
    summary = fit(tiny(spec, device="cuda:1"), str(tmp_path / "run"), progress=False, log=lambda *_: None)
    assert asked == ["cuda:1"]  # train.device reaches the trainer as written
    n_train = summary["last"]["train_images"]
    steps = summary["steps"]
    assert steps >= 2 and n_train > 0
    assert len(moved) > steps and set(moved) == {torch.device("cpu")}  # train steps + validation batches


def test_gpu_loaders_pin_memory_and_prefetch_and_workers_follow_the_machine(spec, monkeypatch):
    cfg = tiny(spec)
    cfg.data.num_workers = 2
    ds = torch.utils.data.TensorDataset(torch.zeros(4, 1))
    gpu = make_loader(ds, cfg, device="cuda")
    assert gpu.pin_memory and gpu.prefetch_factor == 4 and gpu.num_workers == 2
    assert not make_loader(ds, cfg, device="cpu").pin_memory
    monkeypatch.setattr(ddp, "local_threads", lambda n=0: 2)
    assert loader_workers(-1, "cpu") == 0 and loader_workers(3, "cpu") == 3
    monkeypatch.setattr(ddp, "local_threads", lambda n=0: 16)
    assert loader_workers(-1, "cuda") == 8 and loader_workers(-1, "cpu") == 8
    monkeypatch.setattr(ddp, "local_threads", lambda n=0: 4)
    assert loader_workers(-1, "cuda") == 3


def test_sync_batchnorm_converts_for_gpus_and_refuses_the_cpu():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert ddp.sync_batchnorm(model, torch.device("cpu"), world=1, log=lambda *_: None) is model
    with pytest.raises(ValueError, match="sync_bn needs CUDA"):
        ddp.sync_batchnorm(model, torch.device("cpu"), world=2)
    converted = ddp.sync_batchnorm(model, torch.device("cuda", 0), world=2)
    assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[0], nn.Conv2d)


def test_compile_switch_compiles_the_model_and_keeps_checkpoint_names(spec, tmp_path, monkeypatch):
    calls = []
    real = nn.Module.compile

    def compile_eagerly(self, *args, **kwargs):  # inductor would take minutes on 2 cores: same path, eager backend
        calls.append(type(self).__name__)
        return real(self, backend="eager")

    monkeypatch.setattr(nn.Module, "compile", compile_eagerly)
    fit(tiny(spec, compile=True), str(tmp_path / "run"), progress=False, log=lambda *_: None)
    assert calls == ["FashionNet"]
    from fashionlens.training.checkpoint import load_checkpoint

    keys = load_checkpoint(str(tmp_path / "run" / "last.pt"))["model"].keys()
    assert keys and not any("_orig_mod" in k for k in keys)


def test_a_gradient_scaler_step_equals_a_plain_step():
    torch.manual_seed(0)
    images, targets = torch.randn(8, 3), torch.randn(8, 1)

    class Joint(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

        def forward(self, x, batch, weights):
            return {}, {"loss": (self.net(x) - batch["y"]).square().mean()}

    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        torch.manual_seed(1)
        joint = Joint()
        opt = torch.optim.SGD(joint.parameters(), lr=0.1)
        loader = [{"image": images[:4], "y": targets[:4]}, {"image": images[4:], "y": targets[4:]}]
        _, step = train_one_epoch(joint, loader, opt, step=0, lr_fn=lambda s: 0.1, grad_clip=1.0,
                                  precision=Precision("cpu", torch.float32, False, scaler), progress=False)
        results.append(joint.net.weight.detach().clone())
        assert step == 2
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_the_loop_stops_when_asked_before_a_batch():
    class Joint(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x, batch, weights):
            return {}, {"loss": (self.w * x).sum()}

    joint = Joint()
    checks = iter([False, False, True, True])
    loader = [{"image": torch.ones(2)} for _ in range(4)]
    metrics, step = train_one_epoch(joint, loader, torch.optim.SGD(joint.parameters(), lr=0.1), step=5,
                                    lr_fn=lambda s: 0.1, stop=lambda: next(checks), progress=False)
    assert step == 7 and metrics["train_images"] == 4


# ---------------------------------------------------------------- cross-rank metric loss (two processes)

LABELS = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]

WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    import fashionlens.losses.metric as metric
    from fashionlens.config import LossConfig
    from fashionlens.training.distributed import shard_batch

    kinds, out = sys.argv[1].split(","), sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    x, labels = torch.randn(12, 6), torch.tensor(%s)
    mine = shard_batch(list(range(12)), rank, 2, group=2)  # whole items per rank, as RankBatches cuts them
    results = {}
    for kind in kinds:
        for mode in ("global", "local"):
            torch.manual_seed(1)
            net = DistributedDataParallel(torch.nn.Linear(6, 4))
            loss_fn = metric.build_metric_loss(LossConfig(metric_loss=kind))
            if mode == "local":
                loss_fn.cross_rank = False
            loss = loss_fn(F.normalize(net(x[mine]), dim=1), labels[mine])
            loss.backward()
            results[(kind, mode)] = (float(loss), net.module.weight.grad.clone())
    torch.save(results, f"{out}/grads{rank}.pt")
    dist.destroy_process_group()
    print(f"rank {rank} done", flush=True)
""" % LABELS)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is needed")
def test_two_ranks_with_a_cross_rank_metric_loss_get_the_gradients_of_one_process_on_the_joint_batch(tmp_path):
    kinds = ["triplet", "multi_similarity", "supcon"]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(script), ",".join(kinds), str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in (0, 1)]

    torch.manual_seed(0)
    x, labels = torch.randn(12, 6), torch.tensor(LABELS)
    for kind in kinds:  # the reference: one process, the joint batch of 12
        torch.manual_seed(1)
        net = nn.Linear(6, 4)
        loss = build_metric_loss(LossConfig(metric_loss=kind))(nn.functional.normalize(net(x), dim=1), labels)
        loss.backward()
        for rank in ranks:
            value, grad = rank[(kind, "global")]
            assert value == pytest.approx(float(loss), rel=1e-5), kind  # the value is the global batch's loss
            assert torch.allclose(grad, net.weight.grad, atol=1e-6), f"{kind}: {(grad - net.weight.grad).abs().max()}"
            _, local = rank[(kind, "local")]
            assert not torch.allclose(local, net.weight.grad, atol=1e-4), kind  # without the gather they differ
        assert torch.equal(ranks[0][(kind, "global")][1], ranks[1][(kind, "global")][1])


def test_proxy_losses_stay_local_and_the_others_gather():
    assert not build_metric_loss(LossConfig(metric_loss="proxy_anchor"), num_items=3).cross_rank
    assert build_metric_loss(LossConfig(metric_loss="triplet")).cross_rank
    assert shard_batch(list(range(12)), 1, 2, group=2) == [6, 7, 8, 9, 10, 11]


def test_cli_train_refuses_an_absent_gpu(spec, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fashionlens", "train", "--data", spec, "--out", str(tmp_path / "r"),
                           "--device", "cuda", "--backbone", "tiny_cnn", "--no-pretrained"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "no CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
