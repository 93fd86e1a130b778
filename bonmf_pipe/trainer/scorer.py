"""Scorer: a trained run's model, loaded from its safetensors checkpoint, that predicts ratings."""

from __future__ import annotations

import numpy as np
import torch

from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore import runs
from bonmf_pipe.trainer import data
from bonmf_pipe.trainer.checkpoint import load_checkpoint
from bonmf_pipe.trainer.models import RatingModel as Recommender
from bonmf_pipe.trainer.models import build_model
from bonmf_pipe.trainer.settings import settings_from_json

# What scoring reads of a checkpoint: the kept weights, the id maps and the side-vector
# statistics (not the optimiser state nor the best-epoch copy: 3/4 of an Adam run's file).
SCORER_TENSORS = ("model/", "maps/", "side/")


class Scorer:
    """Predicts ratings for (user, item) pairs. Ids the model never saw in training use the
    learned "unknown" embedding (items still bring their text and poster vectors).

    The item-only terms of the network (factors, biases, the items' share of the MLP's first
    layer) are computed once at load time for the whole catalogue, and the user-only terms
    for just the users asked (not for every trained user: ~0.7 KB each for bonmf, which at
    ML-25M size would be 115 MB held for a 2,000-user evaluation), so scoring a pair or a whole
    catalogue only combines them.
    """

    def __init__(self, model: Recommender, maps: data.IdMaps, lo: float, hi: float, device: torch.device, config: dict):
        self.model = model.eval()
        self.maps = maps
        self.lo, self.hi = lo, hi
        self.device = device
        self.config = config
        self.new_items = 0  # items ingested after the run trained (scored from content alone)
        self.user_ids: np.ndarray = maps.user_ids
        self.item_ids: np.ndarray = maps.item_ids  # every item of the items table
        pos = torch.arange(len(maps.item_ids) + 1, device=device)  # last row = unknown item
        index = torch.from_numpy(np.append(maps.item_index, 0)).to(device)
        self._items = model.item_parts(index, pos)

    @torch.no_grad()
    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray, batch_size: int = 1 << 15) -> np.ndarray:
        """Predicted ratings (float32) of each (user_ids[k], item_ids[k])."""
        users = torch.from_numpy(self.maps.user_idx(np.asarray(user_ids))).to(self.device)
        pos = torch.from_numpy(self.maps.item_pos(np.asarray(item_ids))).to(self.device)
        out = np.empty(len(users), dtype=np.float32)
        for start in range(0, len(users), batch_size):
            u, p = users[start : start + batch_size], pos[start : start + batch_size]
            up = self.model.user_parts(u)
            ip = {k: v[p] for k, v in self._items.items()}
            pred = self.model.combine(up, ip, grid=False)
            out[start : start + len(u)] = pred.clamp(self.lo, self.hi).cpu().numpy()
        return out

    @torch.no_grad()
    def score_items(self, user_ids: np.ndarray, chunk_values: int = 1 << 22) -> np.ndarray:
        """Predicted ratings ``[len(user_ids), len(self.item_ids)]`` of every item for each user.

        Users are combined with the catalogue a few at a time, so that the broadcast
        intermediates (``[users, items, width]``: the factor product, the first layer and its
        activation) hold about ``chunk_values`` numbers whatever the number of users asked.
        """
        users = torch.from_numpy(self.maps.user_idx(np.asarray(user_ids))).to(self.device)
        n_items = len(self.item_ids)
        items = {k: v[:n_items] for k, v in self._items.items()}
        width = 1 + sum(v.shape[1] for k, v in items.items() if k == "factor" and v.dim() == 2)
        if "first" in items:
            width += 2 * items["first"].shape[1]  # the first layer and its activation
        rows = max(1, chunk_values // max(n_items * width, 1))
        out = np.empty((len(users), n_items), dtype=np.float32)
        for start in range(0, len(users), rows):
            up = self.model.user_parts(users[start : start + rows])
            pred = self.model.combine(up, items, grid=True)
            out[start : start + rows] = pred.clamp(self.lo, self.hi).cpu().numpy()
        return out


def load_scorer(store: Store, run_id: str, device: str = "cpu") -> Scorer:
    """The model of run ``run_id`` (the weights it kept), on ``device`` (CPU unless told)."""
    folder = runs.run_dir(store, run_id)
    tensors, meta = load_checkpoint(folder, only=SCORER_TENSORS)
    config = meta["config"]
    s = settings_from_json(config["effective"])
    dev = torch.device(device)
    maps = data.IdMaps(*(tensors[f"maps/{k}"].numpy() for k in ("user_ids", "item_ids", "item_index")))
    maps, new_items = _with_new_items(store, maps)
    sides = {}
    for m in s.features:
        key = config["features"][m]["key"]
        stats = (tensors[f"side/{m}/mean"].numpy(), tensors[f"side/{m}/std"].numpy())
        f = data.load_side_features(store, m, key, maps.item_ids, s.normalize, stats)
        sides[m] = (torch.from_numpy(f.matrix).to(dev), torch.from_numpy(f.found).to(dev))
    model = build_model(s, maps.n_users, maps.n_item_embeddings, sides, config["rating_mean"])
    # the final checkpoint's model/ tensors are the weights the run kept (its best epoch with early stopping)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    lo, hi = config["rating_range"]
    scorer = Scorer(model.to(dev), maps, lo, hi, dev, runs.read_run_config(store, folder.name))
    scorer.new_items = new_items
    return scorer


def _with_new_items(store: Store, maps: data.IdMaps) -> tuple[data.IdMaps, int]:
    """The run's id maps plus the items ingested after it trained (unknown ID 0: they are
    scored from their current side vectors alone), and how many those are."""
    current = store.read_table("items", columns=["item_id"]).column(0).to_numpy().astype(np.int64)
    new = np.setdiff1d(current, maps.item_ids)
    if not new.size:
        return maps, 0
    item_ids = np.union1d(maps.item_ids, new)
    index = np.zeros(len(item_ids), dtype=np.int64)
    index[np.isin(item_ids, maps.item_ids)] = maps.item_index
    return data.IdMaps(maps.user_ids, item_ids, index), int(new.size)
