"""Scorer: a trained run's model, loaded from its safetensors checkpoint, that predicts ratings."""

from __future__ import annotations

import numpy as np
import torch

from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.trainer import data, runs
from bonmf_pipe.trainer.loop import settings_from_json
from bonmf_pipe.trainer.model import Recommender, build_model


class Scorer:
    """Predicts ratings for (user, item) pairs. Ids the model never saw in training use the
    learned "unknown" embedding (items still bring their text and poster vectors)."""

    def __init__(self, model: Recommender, maps: data.IdMaps, lo: float, hi: float, device: torch.device, config: dict):
        self.model = model.eval()
        self.maps = maps
        self.lo, self.hi = lo, hi
        self.device = device
        self.config = config
        self.user_ids: np.ndarray = maps.user_ids
        self.item_ids: np.ndarray = maps.item_ids  # every item of the items table

    @torch.no_grad()
    def predict(self, user_ids: np.ndarray, item_ids: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Predicted ratings (float32) of each (user_ids[k], item_ids[k])."""
        users = self.maps.user_idx(np.asarray(user_ids))
        pos = self.maps.item_pos(np.asarray(item_ids))
        items = np.append(self.maps.item_index, 0)[pos]
        out = np.empty(len(users), dtype=np.float32)
        for start in range(0, len(users), batch_size):
            sl = slice(start, start + batch_size)
            u, i, p = (torch.from_numpy(a[sl]).to(self.device) for a in (users, items, pos))
            out[sl] = self.model(u, i, p)[0].clamp(self.lo, self.hi).cpu().numpy()
        return out

    def score_items(self, user_ids: np.ndarray, chunk_pairs: int = 1 << 20) -> np.ndarray:
        """Predicted ratings ``[len(user_ids), len(self.item_ids)]`` of every item for each user."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        n_items = len(self.item_ids)
        out = np.empty((len(user_ids), n_items), dtype=np.float32)
        rows = max(1, chunk_pairs // max(n_items, 1))
        for start in range(0, len(user_ids), rows):
            block = user_ids[start : start + rows]
            users = np.repeat(block, n_items)
            items = np.tile(self.item_ids, len(block))
            out[start : start + len(block)] = self.predict(users, items).reshape(len(block), n_items)
        return out


def load_scorer(store: Store, run_id: str, device: str = "cpu") -> Scorer:
    """The model of run ``run_id`` (best epoch), on ``device`` (CPU unless told)."""
    folder = runs.run_dir(store, run_id)
    tensors, meta = runs.load_checkpoint(folder)
    config = meta["config"]
    s = settings_from_json(config["effective"])
    dev = torch.device(device)
    maps = data.IdMaps(*(tensors[f"maps/{k}"].numpy() for k in ("user_ids", "item_ids", "item_index")))
    sides = {}
    for m in s.features:
        key = config["features"][m]["key"]
        stats = (tensors[f"side/{m}/mean"].numpy(), tensors[f"side/{m}/std"].numpy())
        f = data.load_side_features(store, m, key, maps.item_ids, s.standardize, stats)
        sides[m] = (torch.from_numpy(f.matrix).to(dev), torch.from_numpy(f.found).to(dev))
    model = build_model(s, maps.n_users, maps.n_item_embeddings, sides, config["rating_mean"])
    prefix = "best/" if any(k.startswith("best/") for k in tensors) else "model/"
    model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    lo, hi = config["rating_range"]
    return Scorer(model.to(dev), maps, lo, hi, dev, runs.read_run_config(store, folder.name))
