"""Knowledge distillation from trained runs: an ensemble of teachers whose averaged category probabilities
the student learns to match (``train.teachers`` + ``loss.kd``; Hinton et al., "Distilling the Knowledge in a
Neural Network", 2015).

The teachers see the student's own augmented batch (the same crop, flip and erasing: "consistent teaching",
Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", 2022), re-normalised and
resized to each teacher's own input (a Lite2 teacher trained at 260 px gets 260 px).  They run frozen, in eval
mode (their BatchNorm statistics as served), without gradient and without mirror averaging (the student's
batch is already randomly mirrored; averaging would double the teachers' cost for every step).  The ensemble the student
copies is the mean of the teachers' softened probabilities: the aim is one model's serving cost for what two
models give together (on clothing-small at a 30-minute CPU budget it did not get there: README, "Distilling").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fashionlens.config import DataConfig
from fashionlens.training.checkpoint import load_model


class TeacherEnsemble(nn.Module):
    """Frozen teacher models; ``forward(images)`` -> (B, C) mean of ``softmax(logits / temperature)``.

    ``student_data`` is the student's data config (how its batch is normalised); ``data`` each teacher's
    (normalisation and input size)."""

    def __init__(self, models: Sequence[nn.Module], data: Sequence[DataConfig], student_data: DataConfig,
                 temperature: float = 1.0):
        super().__init__()
        if not models:
            raise ValueError("a teacher ensemble needs at least one teacher")
        if temperature <= 0:
            raise ValueError(f"loss.kd_temperature must be > 0, got {temperature}")
        self.models = nn.ModuleList(models).requires_grad_(False).eval()
        self.sizes = [int(d.image_size) for d in data]
        self.temperature = float(temperature)

        def stats(d: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.tensor(d.mean, dtype=torch.float32).view(1, 3, 1, 1),
                    torch.tensor(d.std, dtype=torch.float32).view(1, 3, 1, 1))

        s_mean, s_std = stats(student_data)
        self.register_buffer("student_mean", s_mean, persistent=False)
        self.register_buffer("student_std", s_std, persistent=False)
        for i, d in enumerate(data):
            mean, std = stats(d)
            self.register_buffer(f"mean_{i}", mean, persistent=False)
            self.register_buffer(f"std_{i}", std, persistent=False)

    def train(self, mode: bool = True) -> "TeacherEnsemble":
        super().train(mode)
        self.models.eval()  # always as served
        return self

    def teacher_input(self, images: torch.Tensor, i: int) -> torch.Tensor:
        """The student's normalised batch as teacher ``i`` was trained to see it."""
        raw = images.float() * self.student_std + self.student_mean
        x = (raw - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
        size = self.sizes[i]
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous(memory_format=torch.channels_last) if images.is_contiguous(
            memory_format=torch.channels_last) else x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = [F.softmax(model(self.teacher_input(images, i))["category"].float() / self.temperature, dim=1)
                 for i, model in enumerate(self.models)]
        return torch.stack(probs).mean(0)


def load_teachers(runs: Sequence[str], categories: Sequence[str], student_data: DataConfig,
                  temperature: float) -> TeacherEnsemble:
    """The runs in ``runs`` as a :class:`TeacherEnsemble`; every one must classify into ``categories``
    (the student's, in the same order), else ValueError naming the run."""
    models, data = [], []
    for run in runs:
        model, cfg, labels = load_model(run)
        theirs = list(labels.get("categories") or [])
        if theirs != list(categories):
            raise ValueError(f"teacher {run}: its categories {theirs[:12]} differ from this run's "
                             f"{list(categories)[:12]} (same names, same order needed)")
        if hasattr(model, "tta_flip"):
            model.tta_flip = False  # one forward per step (module docstring)
        models.append(model)
        data.append(cfg.data)
    return TeacherEnsemble(models, data, student_data, temperature)

