"""TrainSettings: every choice a training run makes, recorded with the run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.features import is_feature_name
from bonmf_pipe.trainer.models import model_batch_lr, model_names, model_overrides

MODELS = model_names()
FEATURES = ("text", "image")
DEFAULT_EPOCHS = 30
PAPER_EPOCHS = 10
SCHEDULES = ("constant", "cosine")
# lr when --batch-size is given without --lr: the default of the rounds when every run used
# batch 512 (so an explicit batch size trains exactly as it did then)
EXPLICIT_BATCH_LR = 1e-3


@dataclass(frozen=True)
class TrainSettings:
    """Settings of one training run (serialised into ``runs/<id>/config.json``).

    The defaults are the best configuration found on the validation slice of ml-latest-small
    (random:0.7, seed 42, MiniLM text + EfficientNet-Lite0 posters): the hybrid of DESIGN.md
    (dot product of the user embedding and the item ID embedding plus projected side
    vectors, with biases) plus an MLP over the user embedding and the projected side
    vectors, L2 on what each batch looks up, dropout 0.2, early stopping.
    """

    model: str = "bonmf"
    """bonmf (IDs + text + poster vectors, MLP), nmf (the same network without side information),
    svd (biased matrix factorisation: global + user + item bias + dot product of factors)."""
    features: tuple[str, ...] = FEATURES
    """Side information for bonmf: feature-set names, each fused through its own projection and
    missing-vector handling: text, image (``encode``'s) and any imported with ``features import``;
    () = none. nmf and svd use none."""
    text_encoder: str | None = None
    """Encoder key (or unique prefix) of the text feature set; None = the newest in the store."""
    image_encoder: str | None = None
    """Encoder key (or unique prefix) of the image feature set; None = the newest in the store."""
    epochs: int | None = None
    """Most epochs to train (early stopping may end sooner); None = the preset's: 30, or the
    paper's 10 with ``paper``."""
    batch_size: int | None = None
    """Ratings per optimiser step; None = the model's default for the device, with its matching
    ``lr`` (trainer/models/catalog.py): on the CPU the model's (e.g. 2,048); on CUDA larger, up to
    32,768 as the split allows (at least 32 steps an epoch). Recorded in config.json's ``effective``."""
    lr: float | None = None
    """Adam(W) learning rate (the peak of the schedule); None = the one measured with the default
    batch size when that is used too, else 1e-3 (the rate tuned for batch 512)."""
    lr_schedule: str = "constant"
    """constant (``lr`` every epoch) or cosine (from ``lr`` down to ``lr / 10`` over ``epochs``)."""
    seed: int = 42
    """Root seed: the split, the initial weights, each epoch's shuffle, dropout and ID dropping
    use independent seeds derived from it (``runtime.derive``)."""
    split: str = "random:0.7"
    """random:F | per-user:F | temporal:F | file[:NAME] (ml-100k u1..u5, ua, ub); F = train share.
    cold-items:F | cold-users:F: a share F of whole items (users), every rating of theirs, held out
    for test (none in train or valid), so the model meets them only through the unknown ID."""
    device: str = "auto"
    """auto (cuda when present), cpu, cuda or cuda:N."""
    threads: int | None = None
    """Intra-op CPU threads of torch while training; None = 1 (the small per-batch operations
    gain little from more, and lose much on a busy machine). Recorded in config.json."""
    name: str | None = None
    """A label for the run (part of its id)."""
    embedding_dim: int = 50
    """Size of the user and item ID embeddings (and of svd's factors)."""
    hidden: tuple[int, ...] = (128, 64)
    """Hidden layers of the fusion MLP (the paper: 128 -> 64 -> 1)."""
    paper: bool = False
    """True = the paper-faithful network: raw vectors concatenated (no projection), no biases,
    no dot-product term, no dropout, no weight decay, no L2, no early stopping, 10 epochs."""
    projection_dim: int = 50
    """Each side vector goes through a linear projection to this size before fusion; 0 = none.
    With ``dot``, the projections use ``embedding_dim`` so they add to the item factor."""
    biases: bool = True
    """Learn a global bias and per-user and per-item biases added to the prediction."""
    dot: bool = True
    """Add the dot product of the user embedding and the item factor (item ID embedding plus the
    projected side vectors) to the MLP's output (the hybrid of DESIGN.md)."""
    mlp_item_embedding: bool = False
    """Feed the item ID embedding to the MLP (the paper does); False = the MLP sees the user
    embedding and the item's side vectors only, and the ID embedding enters through ``dot``."""
    dropout: float = 0.2
    """Dropout after each hidden layer of the MLP."""
    weight_decay: float = 0.0
    """AdamW weight decay on the dense (non-embedding) parameters."""
    side_weight_decay: float = 0.0
    """AdamW weight decay on the side projections (and the learned "missing" vectors)."""
    side_lr_scale: float = 1.0
    """Learning rate of the side projections relative to ``lr``."""
    content_prior: bool = True
    """The item factor is the projected side vectors plus an ID offset, and ``l2`` shrinks only
    the offset, so items with few ratings fall back on their content (True); False = ``l2``
    shrinks the whole factor, content included (the earlier design; worse on every store
    measured, see benchmarks/model_search.py). No effect without side vectors or ``dot``."""
    side_dropout: float = 0.0
    """Modality dropout: in training, each row treats each of its side vectors as missing
    with this probability (drawn per modality), so no pathway leans on one modality alone;
    0 = off. Measured over 3 seeds (benchmarks/model_search.py), 0.25 lowered valid RMSE with
    title+genres text (70% and 50% train) and with pure-noise vectors, changed nothing with
    tags text + posters, and cost cold items up to 0.8% and unseen items much more: off by
    default, a knob for ``tune`` on editions with weak content."""
    l2: float = 0.12
    """Penalty on the squared norms of the user/item embeddings and biases looked up in each
    batch (mean over the batch), added to the MSE loss."""
    unknown_prob: float = 0.02
    """Probability of replacing a training row's user (and, independently, item) ID by the
    "unknown" index 0, so the unknown embedding learns to predict from side information."""
    valid_fraction: float = 0.05
    """Share of the train part carved off (by hash, deterministically) as the validation slice."""
    early_stopping_patience: int = 2
    """Stop after this many epochs without a better valid RMSE and restore the best; 0 = never."""
    memory_budget_mb: int = 128
    """Host memory for the training ratings: when all of them fit they are held as tensors
    (resident mode, about 1 M ratings at 128 MB), else they stream from the split's Parquet
    shards through two shuffle buffers of half of it each. DuckDB (split, id maps, the final
    evaluation) works under a quarter of it, at least 128 and at most 256 MB, and spills to
    ``<store>/tmp`` beyond. Measured at 25 M ratings: train peaks at 1,375 MB with 128 (of which
    768 MB is importing torch and its optimiser), 1,774 MB with 512."""
    shuffle_buffer: int = 0
    """Rows in the streaming shuffle buffer; 0 = as many as half the memory budget allows
    (one buffer trains while the next is read in the background)."""
    normalize: str = "l2"
    """Side vectors before use: l2 (scaled to unit length, so no modality dominates by scale),
    standardize (z-score per dimension over the items that have a vector) or none."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"--model {self.model!r} is not one of {', '.join(MODELS)}.")
        bad = [f for f in self.features if not is_feature_name(f)]
        if bad or len(set(self.features)) != len(self.features):
            raise ConfigError(f"--features: {', '.join(bad) or 'a name given twice'}: name each feature set once: "
                              "text, image or an imported name (`bonmf-pipe features coverage` lists them).")
        runtime.check_device_name(self.device)
        checks = [
            ("epochs", self.epochs is None or self.epochs >= 1, "--epochs must be at least 1"),
            ("batch_size", self.batch_size is None or self.batch_size >= 1, "--batch-size must be at least 1"),
            ("lr", self.lr is None or 0 < self.lr < float("inf"), "--lr must be a positive finite number"),
            ("lr_schedule", self.lr_schedule in SCHEDULES, f"--lr-schedule must be one of {', '.join(SCHEDULES)}"),
            ("seed", self.seed >= 0, "--seed must be non-negative"),
            ("threads", self.threads is None or self.threads >= 1, "--threads must be at least 1"),
            ("embedding_dim", self.embedding_dim >= 1, "embedding_dim must be at least 1"),
            ("hidden", all(h >= 1 for h in self.hidden), "hidden layer sizes must be at least 1"),
            ("projection_dim", self.projection_dim >= 0, "projection_dim must be 0 or more"),
            ("dropout", 0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            ("side_dropout", 0.0 <= self.side_dropout < 1.0, "side_dropout must be in [0, 1)"),
            ("unknown_prob", 0.0 <= self.unknown_prob < 1.0, "unknown_prob must be in [0, 1)"),
            ("valid_fraction", 0.0 <= self.valid_fraction < 0.5, "valid_fraction must be in [0, 0.5)"),
            ("l2", 0.0 <= self.l2 < float("inf"), "l2 must be a finite number, 0 or more"),
            ("weight_decay", 0.0 <= self.weight_decay < float("inf"), "weight_decay must be finite, 0 or more"),
            ("normalize", self.normalize in ("l2", "standardize", "none"), "normalize must be l2, standardize or none"),
            ("memory_budget_mb", self.memory_budget_mb >= 1, "memory_budget_mb must be at least 1"),
        ]
        for name, ok, msg in checks:
            if not ok:
                raise ConfigError(f"{msg} (got {getattr(self, name)!r}).")

    def effective(self, n_train: int | None = None) -> "TrainSettings":
        """The settings that actually run: ``paper`` fixes the paper's network, the model
        forces what it needs (registry overrides), open fields get their defaults (the batch
        size on CUDA by the split's ``n_train`` training ratings when known; ``train`` resolves
        again once it has loaded the split)."""
        s = self
        if s.paper:
            s = dataclasses.replace(
                s, projection_dim=0, biases=False, dot=False, dropout=0.0, side_dropout=0.0, weight_decay=0.0, l2=0.0,
                side_weight_decay=0.0, side_lr_scale=1.0, mlp_item_embedding=True, early_stopping_patience=0,
                epochs=s.epochs if s.epochs is not None else PAPER_EPOCHS,
            )
        s = dataclasses.replace(s, **model_overrides(s.model, s))
        if s.batch_size is None or s.lr is None:
            batch, lr = model_batch_lr(s.model, _device_type(s.device), n_train)
            s = dataclasses.replace(s, lr=s.lr if s.lr is not None else lr if s.batch_size is None else EXPLICIT_BATCH_LR,
                                    batch_size=s.batch_size if s.batch_size is not None else batch)
        if s.epochs is None:
            s = dataclasses.replace(s, epochs=DEFAULT_EPOCHS)
        if s.threads is None:
            s = dataclasses.replace(s, threads=runtime.default_threads())
        return s

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSettings":
        """Settings from their JSON form (config.json, a checkpoint); unknown keys ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


def _device_type(device: str) -> str:
    """cpu or cuda: the type of device ``device`` runs on (``auto``: cuda when torch sees one)."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.partition(":")[0]


def settings_from_json(d: dict[str, Any]) -> TrainSettings:
    """``TrainSettings.from_dict`` (kept under the name the scorer uses)."""
    return TrainSettings.from_dict(d)
