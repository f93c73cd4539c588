"""Run configuration: small dataclasses with defaults, read from and written to YAML.

The resolved config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml


@dataclass
class DataConfig:
    spec: str = ""  # data spec string, e.g. "garments:data/garments" (see fashionlens.data.readers)
    image_size: int = 128  # side of the square network input, pixels
    eval_scale: float = 1.0  # evaluation/inference input side = round(image_size * eval_scale); > 1 undoes the object-size gap of random-resized-crop training (FixRes)
    crop_to_bbox: bool = False  # crop to the annotated box (with margin) first; off: the model sees whole photos and learns the box
    bbox_margin: float = 0.1  # margin added around the box, as a fraction of its width/height
    resize_mode: str = "pad"  # "pad": keep aspect, pad to a square with the mean colour; "stretch": squash to a square
    rrc_scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop area range (train only)
    rrc_ratio: tuple[float, float] = (0.75, 1.333)  # RandomResizedCrop aspect range (train only)
    crop_padding: int = 0  # > 0: train crops are the CIFAR crop (resize to image_size, pad by this many pixels, random crop back) instead of RandomResizedCrop
    rotation_degrees: float = 15.0  # random rotation range +-degrees (train only; up to 50)
    hflip_p: float = 0.5  # horizontal flip probability (train only); landmarks swap left/right
    color_jitter: float = 0.3  # brightness/contrast/saturation jitter strength (train only; 0 disables)
    random_erasing: float = 0.0  # probability of random erasing (train only)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # normalisation mean (follows the backbone)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # normalisation std (follows the backbone)
    num_workers: int = 0  # DataLoader worker processes (-1 = sized to the machine: the cores this process may use, less one, up to 8; 0 on a 2-core CPU)
    skip_missing: bool = False  # drop samples whose image file is missing instead of failing


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # images per optimisation step (P x K when metric learning samples by item)
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-5  # learning rate at the end of the cosine decay
    weight_decay: float = 0.05  # decoupled weight decay (AdamW) / L2 (SGD)
    momentum: float = 0.9  # SGD momentum
    warmup_epochs: float = 1.0  # linear warm-up length, in epochs
    backbone_lr_scale: float = 1.0  # learning-rate multiplier of the backbone (< 1 for pretrained weights)
    head_epochs: float = 0.0  # LP-FT: the first N epochs train the heads only (backbone learning rate 0), then all
    layer_decay: float = 1.0  # layer-wise LR: each backbone stage below the last gets this factor once more
    ema_decay: float = 0.0  # weight averaging: exponential moving average of the weights (e.g. 0.998; 0 = off)
    balance: float = 0.0  # class-balanced sampling: draw images with weight 1/count(class)^balance (0 = off, 1 = full)
    grad_clip: float = 5.0  # max gradient norm (0 disables)
    amp: bool = False  # mixed precision: bfloat16 autocast on CPUs and on GPUs that have it, else float16 with a gradient scaler
    device: str = "auto"  # "auto" (a CUDA GPU when present, else MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"
    compile: bool = False  # torch.compile the model for training (first steps are slow while it compiles)
    sync_bn: bool = False  # data-parallel: BatchNorm statistics over the global batch (SyncBatchNorm; needs CUDA)
    channels_last: bool = True  # NHWC memory format (faster convolutions on CPU)
    pk_items: int = 0  # P items per batch for metric learning (0 = plain shuffled batches)
    pk_images: int = 4  # K images per item in a P x K batch
    max_minutes: float = 0.0  # stop training after this many minutes (0 = no limit)
    early_stop_patience: int = 0  # stop after this many epochs without improvement (0 = never)
    select_metric: str = "val_loss"  # metric choosing the best checkpoint ("val_loss" is minimised, others maximised; "last": the latest epoch, no selection on validation)
    checkpoint_every: int = 50  # also save a resumable checkpoint every N steps (0 = epoch ends only)
    val_split: str = "val"  # split used for validation ("" = none)
    train_split: str = "train"  # split used for training
    teachers: list = field(default_factory=list)  # runs (or .pt files) whose averaged category probabilities the student learns (with loss.kd > 0): distil an ensemble into one model
    init_from: str = ""  # run whose backbone (and, for the same label set, heads) initialises this run
    instance_views: int = 0  # self-supervised: each training image is its own item, seen as N views (labels unused)
    log_every: int = 10  # steps between progress-bar updates of the running loss


@dataclass
class ModelConfig:
    name: str = "fashionnet"  # preset: "fashionnet" (global + landmarks + landmark-pooled local) or "global"
    backbone: str = "tf_efficientnet_lite0"  # "tiny_cnn", "preact_resnet" (small images, from scratch), "tf_efficientnet_lite0/1/2" (offline weights), any timm name
    pretrained: bool | str = True  # True: ImageNet weights; False: random init; a path: local weights file
    backbone_kwargs: dict = field(default_factory=dict)  # backbone constructor arguments, e.g. {widths: [32, 64]} (tiny_cnn), {drop_path_rate: 0.1} (timm)
    embedding_dim: int = 128  # size of the L2-normalised retrieval embedding
    embedding_from: str = "fused"  # embedding input: "fused" (the features the classifier reads) or "pooled" (the backbone's pooled map: more general, for search on unseen kinds)
    hidden_dim: int = 256  # width of the global, local and fusion layers
    use_landmarks: bool | None = None  # landmark branch (None = the preset's choice)
    use_local: bool | None = None  # landmark-pooled local branch, needs landmarks (None = the preset's choice)
    use_bbox: bool = True  # garment box head (localisation: crop before embedding, box in predictions)
    landmark_head: str = "heatmap"  # "heatmap" (upsampling + soft-argmax) or "regression" (pooled features -> MLP)
    fuse_conv: bool = False  # also feed the pooled penultimate-stage feature map into the embedding
    spatial_attention: bool = False  # saliency-weighted global pooling (spatial-salience learning)
    local_channels: int = 32  # channels sampled per landmark by the local branch
    local_grid: int = 3  # sampling grid side per landmark (local_grid x local_grid points)
    local_window: float = 0.125  # side of the sampling window around a landmark, fraction of the image side
    local_stride: int = 32  # stride of the backbone map the local branch samples: 32 = the final map; 16 or 8 = a mid-level stage (FashionNet pools conv4), found from the backbone's feature_info
    detach_landmarks: bool = True  # pool at predicted positions without back-propagating into them
    dropout: float = 0.1  # dropout before the heads
    frozen_stages: int = 0  # freeze the backbone's stem and first N stages (train the head plus the last blocks)
    tta_flip: bool = False  # test-time augmentation: eval averages the predictions for the image and its mirror
    search_pooled: float = 0.0  # search vectors: 0 = the embedding alone; w > 0 = normalize([w * normalised pooled backbone features, embedding]), wider by the backbone's channels (general features for kinds never trained on; see README "Garments of kinds never trained on")


@dataclass
class LossConfig:
    category: float = 1.0  # weight of the category cross-entropy
    levels: float = 0.5  # weight of the hierarchy-level cross-entropies (averaged over levels)
    attributes: float = 1.0  # weight of the masked attribute BCE
    landmarks: float = 1.0  # weight of the landmark position loss (visible landmarks only)
    visibility: float = 0.2  # weight of the landmark visibility cross-entropy
    item: float = 0.0  # weight of the item-identity cross-entropy
    bbox: float = 1.0  # weight of the garment box loss (L1 + generalised IoU, images with a box only)
    metric: float = 1.0  # weight of the metric-learning loss on the embedding (item labels)
    distill: float = 0.0  # weight of feature distillation: cosine distance of the pooled features to those of the frozen pretrained backbone (keeps what ImageNet taught, for garments of unseen kinds)
    kd: float = 0.0  # weight of knowledge distillation from train.teachers: KL of the student's softened category probabilities to the teachers' mean
    kd_temperature: float = 2.0  # distillation softmax temperature (teachers and student alike; the term is scaled by T²)
    class_weights: bool = False  # weight the category cross-entropy by inverse class frequency (imbalance)
    label_smoothing: float = 0.1  # category / level / item cross-entropy label smoothing
    attribute_pos_weight: float = 1.0  # BCE weight of positive attribute labels (> 1 counters rare positives)
    landmark_loss: str = "l1"  # "l1" or "mse" on [0, 1] positions, or "heatmap" (Gaussian target vs heatmap softmax)
    heatmap_sigma: float = 1.0  # std of the Gaussian heatmap target, heatmap cells
    metric_loss: str = "triplet"  # "triplet", "contrastive", "ntxent", "proxy_anchor", "multi_similarity", "supcon" or "none"
    metric_labels: str = "item"  # what counts as the same for the metric loss: "item" (same garment) or "category" (same kind)
    temperature: float = 0.1  # NT-Xent / SupCon softmax temperature
    miner: str = "batch_hard"  # triplet miner: "batch_hard" or "semihard"
    margin: float = 0.2  # triplet margin, Euclidean distance between L2-normalised embeddings
    pos_margin: float = 0.0  # contrastive: positive pairs closer than this cost nothing
    neg_margin: float = 1.0  # contrastive: negative pairs farther than this cost nothing
    proxy_margin: float = 0.1  # ProxyAnchor margin (cosine similarity)
    proxy_alpha: float = 32.0  # ProxyAnchor scale
    ms_alpha: float = 2.0  # multi-similarity: positive-pair scale
    ms_beta: float = 50.0  # multi-similarity: negative-pair scale
    ms_base: float = 0.5  # multi-similarity: similarity offset (cosine)
    ms_epsilon: float = 0.0  # multi-similarity miner margin (0 = no miner: the miner stops pushing negatives once they are epsilon below the positives, which left unrelated items at cosine 0.74 instead of 0.34 in tests/test_losses.py)
    landmark_epochs: int = 0  # two-stage schedule: first epochs train landmarks first (0 = single stage)
    landmark_stage_boost: float = 10.0  # landmark/visibility weight multiplier during the first stage
    landmark_stage_others: float = 0.0  # multiplier of every other task weight during the first stage


@dataclass
class IndexConfig:
    """A catalog's vector index (``Catalog.create``, ``catalog build``); not part of a run: the catalog decides."""

    backend: str = "faiss"  # "faiss" (embedded, files on disk) or "milvus" (pymilvus: milvus-lite file or server URI)
    kind: str = "flat"  # "flat" (exact), "ivf" (k-means clusters, nlist/nprobe), "ivfsq" (IVF, float16/8-bit lists),
    #                     "ivfpq" (IVF + product quantization),
    #                     "hnsw" (graph, ef_search) or "auto" (catalog build: chosen by the catalog's size)
    nlist: int = 64  # IVF clusters (0 = auto: about 4 * sqrt(N) at train time; milvus: 128)
    nprobe: int = 8  # IVF clusters scanned per query (0 = auto: about nlist / 8)
    pq_m: int = 8  # PQ sub-quantizers per vector (must divide the embedding size)
    pq_bits: int = 8  # bits per PQ code (8 = 256 centroids per sub-quantizer)
    sq_bits: int = 0  # ivfsq: 16 (float16, faiss) or 8 bits per dimension (0 = backend default: faiss 16, milvus 8)
    refine: int = 0  # ivfpq (faiss): re-rank refine x k PQ candidates with the exact vectors (0 = off)
    uri: str = ""  # milvus: local milvus-lite file "path/index.db" or a server "http://host:19530"
    collection: str = "fashionlens"  # milvus collection name
    hnsw_m: int = 32  # HNSW links per node (memory ~ 2 x hnsw_m x 4 bytes per vector on top of the vector)
    ef_construction: int = 80  # HNSW build breadth (higher: better graph, slower build)
    ef_search: int = 0  # HNSW search breadth (0 = 64; raised to k when smaller)
    min_train: int = -1  # IVF: vectors stored before the index is trained (-1 = 256 x nlist; 39 x 256 at least for PQ)


@dataclass
class RunConfig:
    """Top-level config: one section per concern (more sections join as the system grows)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # global random seed
    threads: int = 0  # torch intra-op threads (0 = library default)


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain dict (tuples become lists, ready for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def _build(cls: type, values: dict, where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def from_dict(values: dict, cls: type = RunConfig) -> Any:
    """Plain dict -> config dataclass; unknown keys raise ValueError naming them."""
    values = dict(values or {})
    if cls is RunConfig:
        values.pop("index", None)  # runs saved before the index settings moved to the catalog carry an unused copy
    return _build(cls, values, cls.__name__)


def apply_overrides(cfg: RunConfig, assignments: Sequence[str]) -> RunConfig:
    """Apply ``section.field=value`` assignments (values parsed as YAML, e.g. ``train.lr=0.01``,
    ``data.rrc_scale=[0.2,1.0]``, ``seed=1``) to ``cfg`` in place, in order; returns ``cfg``.

    The result is checked as a whole (``from_dict``): a bad key or value raises ValueError naming it."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set expects section.field=value, got {assignment!r}")
        values = to_dict(cfg)
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {key}: no config section {part!r}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"--set {key}: unknown field {leaf!r}; known: {sorted(node)}")
        node[leaf] = yaml.safe_load(raw)
        new = from_dict(values)
        for f in dataclasses.fields(new):
            setattr(cfg, f.name, getattr(new, f.name))
    return cfg


def load_yaml(path: str, cls: type = RunConfig) -> Any:
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return from_dict(values, cls)


def save_yaml(cfg: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
