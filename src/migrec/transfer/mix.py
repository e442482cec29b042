"""A transfer regime that cannot lose to target-only on validation, by construction.

    mix = ValidatedMix(target_only, transferred, candidates=task.candidates).fit(train, task.valid)
    mix.weight_        # the transferred model's share, chosen on validation (0 = target-only itself)

Scores are (1 - w) * z(base) + w * z(other), where z standardises each history's scores over the
candidate items (the two models' scales differ), and w is the grid value with the best validation
NDCG@10 (ties go to the smaller w). w = 0 is the base model's own ranking, so on the validation
cases the mix is never below it; whether that holds on test is what the benchmark measures.
With `items` (e.g. the items without training events), only those items' scores are mixed and
the others keep the base model's: text neighbours can lift never-clicked items without touching
how known ones rank.
"""
from __future__ import annotations

import numpy as np

from ..evaluation import metrics as M
from ..evaluation.evaluator import check_repeats, policy_ranks
from ..models.base import Recommender
from .domains import same_universe

GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 11))


class ValidatedMix(Recommender):
    """Two fitted models over one item universe, mixed with a weight chosen on validation.

    Both models are hyper-parameters (nested folders when saved); `candidates` (item indices or
    None = all) are the items the scores are standardised over and the validation ranks among;
    `grid`: the weights tried (None: 0, 0.1, ..., 1), 0 among them; `items` (item indices or None =
    all): the items whose scores are mixed, every other item keeps its standardised base score.
    """

    name = "transfer-mix"
    registry = "validated-mix"

    def __init__(self, base: Recommender, other: Recommender, candidates=None, grid=None, k: int = 10,
                 repeats: str = "exclude", batch_size: int = 256, items=None):
        self.base, self.other, self.candidates = base, other, candidates
        self.grid, self.k, self.repeats, self.batch_size = grid, k, repeats, batch_size
        self.items = items

    @property
    def item_ids_(self) -> np.ndarray:
        return self.base.item_ids_

    def _set_items(self, item_ids) -> None:
        same_universe(self.base, item_ids, "the base model")
        same_universe(self.other, item_ids, "the other model")

    def encoder_info(self) -> dict | None:
        return self.base.encoder_info()

    def _allowed(self) -> np.ndarray:
        if self.candidates is None:
            return np.arange(self.base.n_items)
        return np.asarray(self.candidates, dtype=np.int64)

    def _standardised(self, histories) -> tuple[np.ndarray, np.ndarray]:
        """Both models' scores, each row standardised over the candidates (others at -inf)."""
        allowed = self._allowed()
        out = []
        for model in (self.base, self.other):
            raw = np.asarray(model.score_histories(histories), dtype=np.float64)
            part = raw[:, allowed]
            part = np.where(np.isfinite(part), part, np.nan)
            mean = np.nanmean(part, axis=1, keepdims=True)
            std = np.nanstd(part, axis=1, keepdims=True)
            z = np.full_like(raw, -np.inf)
            z[:, allowed] = np.nan_to_num((part - mean) / np.where(std > 0, std, 1.0), nan=-np.inf)
            out.append(z)
        return out[0], out[1]

    def fit(self, train, valid=None):
        """Choose the weight on `valid` (required): NDCG@k of every grid value, ties to the smaller."""
        if valid is None or len(valid) == 0:
            raise ValueError("ValidatedMix needs validation cases (valid=) to choose its weight")
        grid = sorted(float(w) for w in (GRID if self.grid is None else self.grid))
        if not grid or grid[0] != 0.0 or grid[-1] > 1.0:
            raise ValueError(f"grid must start at 0 (the base model alone) and stay within [0, 1]; got {self.grid}")
        check_repeats(self.repeats)
        self._summarise(train)
        gains = {w: [] for w in grid}
        for lo in range(0, len(valid), self.batch_size):
            hists = [np.asarray(h, dtype=np.int64) for h in valid.histories[lo:lo + self.batch_size]]
            targs = valid.targets[lo:lo + self.batch_size]
            za, zb = self._standardised(hists)
            for w in grid:
                ranks = policy_ranks(self._mixed(za, zb, w), hists, targs, self.repeats)
                gains[w].append(M.accuracy_per_user(ranks, self.k)["NDCG"])
        self.valid_ndcg_ = {str(w): float(np.mean(np.concatenate(g))) for w, g in gains.items()}
        best = max(self.valid_ndcg_.values())
        self.weight_ = next(w for w in grid if self.valid_ndcg_[str(w)] == best)
        return self

    def _check_fitted(self) -> None:
        super()._check_fitted()
        if "weight_" not in self.__dict__:
            raise RuntimeError("ValidatedMix is not fitted: call fit() first")

    def score_histories(self, histories):
        self._check_fitted()
        za, zb = self._standardised([np.asarray(h, dtype=np.int64) for h in histories])
        return self._mixed(za, zb, self.weight_).astype(np.float32)

    def _mixed(self, za: np.ndarray, zb: np.ndarray, w: float) -> np.ndarray:
        """(1 - w) za + w zb on the mixed items (all, or `items`), za elsewhere."""
        if self.items is None:
            return _blend(za, zb, w)
        cols = np.asarray(self.items, dtype=np.int64)
        out = za.copy()
        out[:, cols] = _blend(za[:, cols], zb[:, cols], w)
        return out


def _blend(za: np.ndarray, zb: np.ndarray, w: float) -> np.ndarray:
    """(1 - w) za + w zb as a new array; at w = 0 or 1 the one model alone (no 0 x -inf)."""
    return za.copy() if w == 0 else zb.copy() if w == 1 else (1 - w) * za + w * zb
