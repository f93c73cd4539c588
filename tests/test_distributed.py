"""Data-parallel training: two CPU processes under torchrun (gloo) end with identical weights, only rank 0
writes the run directory, and a time limit + resume works across ranks without deadlocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from fashionlens.training.checkpoint import load_checkpoint
from fashionlens.training.distributed import (ModelWithLoss, RankBatches, merge_train_metrics, shard_batch,
                                              shard_range, unused_parameters)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")

STEPS = 2 * (51 // 8)  # 2 epochs of 51 training images in global batches of 8 (4 items x 2 images)

WORKER = textwrap.dedent("""
    import os, sys, time
    import torch
    import fashionlens.training.fit as F
    from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
    from fashionlens.training import distributed as ddp

    mode, spec, out = sys.argv[1:4]
    rank = int(os.environ["RANK"])

    def cfg(**train):
        return RunConfig(data=DataConfig(spec=spec, image_size=48),
                         model=ModelConfig(backbone="tiny_cnn", pretrained=False, hidden_dim=32, embedding_dim=16),
                         loss=LossConfig(metric_loss="proxy_anchor"),
                         train=TrainConfig(batch_size=8, pk_items=4, pk_images=2, **train))

    def train(config, run_dir):
        trainer = F.Trainer(config, os.path.join(out, run_dir), progress=False)
        init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        summary = trainer.fit()
        owned = trainer._owns_group
        trainer.close()
        return {"init": init, "model": trainer.model.state_dict(), "loss": trainer.loss_fn.state_dict(),
                "summary": summary, "owned": owned, "train_module": type(trainer.train_module).__name__,
                "threads": torch.get_num_threads(), "group_left": torch.distributed.is_initialized()}

    class Clock:  # fit's clock: the time limit passes after the third batch check
        calls = 0

        def time(self):
            self.calls += 1
            return 0.0 if self.calls <= 4 else 1e9

    if mode == "owned":  # the trainer joins the group from the torchrun environment and leaves it
        torch.save(train(cfg(epochs=2, checkpoint_every=2), "run"), os.path.join(out, f"owned{rank}.pt"))
    else:  # several runs in one group the caller set up
        assert ddp.init_distributed() == (rank, 2)
        F.time = Clock()
        limited = train(cfg(epochs=2, max_minutes=1.0, checkpoint_every=0), "limited")
        F.time = time
        resumed = train(cfg(epochs=2, max_minutes=0.0, checkpoint_every=0), "limited")
        other_world = train(cfg(epochs=2, checkpoint_every=0), "single")  # saved by one process, resumed by two
        torch.save({"limited": limited, "resumed": resumed, "other_world": other_world},
                   os.path.join(out, f"shared{rank}.pt"))
        ddp.cleanup()
    print(f"rank {rank} done", flush=True)
""")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    from fashionlens.data.garments import render_dataset

    root = tmp_path_factory.mktemp("garments")
    render_dataset(str(root), items=24, views=3, size=64, seed=0, progress=False)
    return f"garments:{root}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(mode: str, spec: str, out) -> str:
    """Run the worker in two CPU processes; returns the combined output."""
    script = out / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(script), mode, spec, str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "rank 0 done" in output and "rank 1 done" in output
    return output


def assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name}: max abs diff {(a[name].float() - b[name].float()).abs().max()}"


def test_two_ranks_end_with_identical_weights_and_rank0_writes_the_run(spec, tmp_path):
    output = torchrun("owned", spec, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"owned{r}.pt", weights_only=True) for r in (0, 1))
    for r in (r0, r1):
        assert r["train_module"] == "DistributedDataParallel" and r["owned"] and not r["group_left"]
        assert r["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert "metric.loss.proxies" in r0["loss"]  # the loss's own parameters are trained (and all-reduced) too
    assert_equal_states(r0["init"], r1["init"])
    assert_equal_states(r0["model"], r1["model"])
    assert_equal_states(r0["loss"], r1["loss"])
    assert any(not torch.equal(r0["init"][k], r0["model"][k]) for k in r0["init"])  # it did train
    assert r0["summary"] == r1["summary"] and r0["summary"]["steps"] == STEPS

    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == ["best.pt", "config.yaml", "curves.png", "last.pt", "metrics.jsonl"]
    last = load_checkpoint(str(run / "last.pt"))
    assert_equal_states(last["model"], r0["model"])
    assert len(last["rng"]) == 2 and not torch.equal(last["rng"][0], last["rng"][1])  # own augmentations per rank
    assert [h["epoch"] for h in last["history"]] == [1, 2]
    assert all(h["train_images"] == STEPS // 2 * 8 for h in last["history"])  # both shards counted, once
    assert (run / "metrics.jsonl").read_text().count("\n") == 2
    assert output.count("epoch 2:") == 1  # only rank 0 logs


def test_time_limit_then_resume_across_ranks(spec, tmp_path):
    from fashionlens.config import DataConfig, LossConfig, ModelConfig, RunConfig, TrainConfig
    from fashionlens.training.fit import fit

    single = RunConfig(data=DataConfig(spec=spec, image_size=48),
                       model=ModelConfig(backbone="tiny_cnn", pretrained=False, hidden_dim=32, embedding_dim=16),
                       loss=LossConfig(metric_loss="proxy_anchor"),
                       train=TrainConfig(epochs=1, batch_size=8, pk_items=4, pk_images=2, checkpoint_every=0))
    fit(single, str(tmp_path / "single"), progress=False, log=lambda *_: None)  # epoch 1 in one process
    output = torchrun("shared", spec, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"shared{r}.pt", weights_only=True) for r in (0, 1))
    limited, resumed = r0["limited"], r0["resumed"]
    assert not limited["owned"] and limited["group_left"]  # the caller's group is used, not left
    assert limited["summary"] == r1["limited"]["summary"] and resumed["summary"] == r1["resumed"]["summary"]
    stopped_at = limited["summary"]["steps"]
    assert limited["summary"]["stopped"] == "time limit of 1.0 min" and 0 < stopped_at < STEPS // 2
    assert f"resuming from {tmp_path / 'limited' / 'last.pt'}: epoch 1, batch {stopped_at}" in output
    assert resumed["summary"]["steps"] == STEPS and resumed["summary"]["stopped"] is None
    assert_equal_states(limited["model"], r1["limited"]["model"])
    assert_equal_states(resumed["model"], r1["resumed"]["model"])
    assert_equal_states(resumed["loss"], r1["resumed"]["loss"])
    history = load_checkpoint(str(tmp_path / "limited" / "last.pt"))["history"]
    assert [(h["epoch"], h.get("batches")) for h in history] == [(1, stopped_at), (1, None), (2, None)]
    # any world size resumes: one process trained epoch 1, two processes trained epoch 2 on from its last.pt
    other = r0["other_world"]
    assert "saved by 1 process(es), resumed by 2: new augmentation streams" in output
    assert other["summary"]["steps"] == STEPS and other["summary"]["epochs"] == 2
    assert_equal_states(other["model"], r1["other_world"]["model"])
    assert [h["epoch"] for h in load_checkpoint(str(tmp_path / "single" / "last.pt"))["history"]] == [1, 2]


# ---------------------------------------------------------------- sharding (no processes needed)


def test_shards_cover_each_batch_once_and_keep_whole_pk_items():
    batch = [10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61]  # 6 items x 2 images
    shards = [shard_batch(batch, r, 4, group=2) for r in range(4)]
    assert sum(shards, []) == batch and all(shards)
    assert all(len({i // 10 for i in s}) * 2 == len(s) for s in shards)  # whole items only
    assert sum((shard_batch(batch[:7], r, 2, group=2) for r in range(2)), []) == batch[:7]  # uneven: by image
    assert [list(shard_range(10, r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    sampler = RankBatches([[0, 1], [2, 3], [4]], rank=0, world=2)
    with pytest.raises(ValueError, match="cannot be shared by 2 processes"):
        list(sampler)


def test_unused_parameter_probe_finds_exactly_the_parameters_without_gradient():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return {"y": self.used(x)}

    class Loss(nn.Module):  # a loss with its own parameter (like ProxyAnchor's proxies)
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, outputs, batch, weights):
            return {"loss": (outputs["y"] * self.scale).square().mean()}

    joint = ModelWithLoss(Net(), Loss())
    assert unused_parameters(joint, torch.randn(4, 3), {}, {}) == ["model.spare.weight", "model.spare.bias"]
    assert all(p.grad is None for p in joint.parameters())  # the probe leaves no gradients behind


def test_train_metrics_of_all_ranks_are_weighted_by_images():
    parts = [{"train_loss": 1.0, "train_images": 8, "train_seconds": 2.0, "train_images_per_s": 4.0},
             {"train_loss": 4.0, "train_images": 4, "train_seconds": 3.0, "train_images_per_s": 1.3}]
    merged = merge_train_metrics(parts)
    assert merged == {"train_loss": 2.0, "train_images": 12, "train_seconds": 3.0, "train_images_per_s": 4.0}
    assert merge_train_metrics(parts[:1]) == parts[0]


def test_cleanup_leaves_the_group_but_keeps_the_group_object_alive():
    """Freeing a gloo group joins its threads under the GIL, which can deadlock with a worker thread still
    releasing the last collective's tensors; cleanup therefore leaves the group without freeing it."""
    import gc
    import weakref

    from fashionlens.training import distributed as ddp

    torch.distributed.init_process_group("gloo", rank=0, world_size=1, store=torch.distributed.HashStore())
    try:
        torch.distributed.barrier()
        group = weakref.ref(torch.distributed.group.WORLD)
    finally:
        ddp.cleanup()
    gc.collect()
    assert not torch.distributed.is_initialized()
    assert group() is not None
    ddp.cleanup()  # a no-op once left
