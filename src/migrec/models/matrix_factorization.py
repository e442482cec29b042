"""ALS and BPR matrix factorisation through the `implicit` library.

Neither keeps per-user parameters: a user is scored by *folding in* the history given at
prediction time against the fitted item factors, so any history (a new user's included)
can be scored and no user data is stored.

- ALS: the exact closed-form ALS user step (confidence alpha per event).
- BPR: the user vector that maximises BPR's own objective with the item factors fixed,
  mean log sigmoid(x_ui - x_uj) - reg/2 |u|^2 over the history's items i and a fixed set of
  negatives j (drawn at fit time in proportion to item popularity, excluding the
  history), solved by damped Newton steps per history (so a history's vector never
  depends on the others scored with it); the stationary point of implicit's SGD user update.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.nn import functional as F

from .base import Recommender
from .incremental import coerce_events
from .retrieval import DEFAULT_THRESHOLD


class _ImplicitMF(Recommender):
    def _build(self):
        raise NotImplementedError

    def _fit_implicit(self, train):
        from threadpoolctl import threadpool_limits

        self._summarise(train)
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # implicit runs its own threads, so BLAS is held to one thread here; its start-up
            # check still warns about the global OpenBLAS setting, which does not apply.
            warnings.filterwarnings("ignore", message="OpenBLAS is configured")
            model = self._build()
            matrix = train.csr(binary=True)
            matrix.data *= float(getattr(self, "alpha", 1.0))      # in place: no second copy of the matrix
            model.fit(matrix, show_progress=False)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)   # user factors: folded in

    def user_vectors(self, histories) -> np.ndarray:
        """The user factors folded in from each item-index history."""
        raise NotImplementedError

    def score_histories(self, histories):
        return self.user_vectors(histories) @ self.item_factors_.T

    def query_vectors(self, histories) -> np.ndarray:
        return self.user_vectors(histories)

    def item_matrix(self) -> np.ndarray:
        return self.item_factors_


class ALS(_ImplicitMF):
    name = "als"
    registry = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, threads: int = 0,
                 ann_threshold: int | None = DEFAULT_THRESHOLD):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed, self.threads = iterations, seed, threads
        self.ann_threshold = ann_threshold   # from this many items recommend uses a FAISS index

    def _build(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=1.0,
                                       iterations=self.iterations, num_threads=self.threads,
                                       random_state=self.seed)

    def fit(self, train, valid=None):
        self._fit_implicit(train)
        return self

    def user_vectors(self, histories):
        # Closed-form ALS user step, as implicit solves it: each event has confidence alpha,
        # A = Y'Y + sum (alpha - 1) y y' + reg I, b = sum alpha y.
        y = self.item_factors_
        yty = y.T @ y
        reg = self.regularization * np.eye(y.shape[1], dtype=np.float32)
        out = np.empty((len(histories), y.shape[1]), dtype=np.float32)
        for row, h in enumerate(histories):
            yi = y[np.unique(np.asarray(h, dtype=np.int64))]
            a = yty + (self.alpha - 1.0) * (yi.T @ yi) + reg
            out[row] = np.linalg.solve(a, self.alpha * yi.sum(axis=0))
        return out

    def partial_fit(self, new_interactions, histories=None, **_):
        """One exact ALS item step for the items the new events touch.

        histories: every user's history before the update (a `migrec.data.Histories`);
        the touched items' factors are re-solved from the folded-in factors of all users,
        as the ALS item step does (confidence alpha per event). New users need nothing
        more: ALS folds in any history at prediction time.
        """
        from ..data.histories import Histories

        self._check_fitted()
        frame = coerce_events(new_interactions)
        touched = np.unique(self.item_index(frame["item_id"]))   # refuses items outside the catalogue, naming them
        merged = histories.copy() if histories is not None else Histories()
        merged.extend(frame)
        hists = [self.item_index(merged[u]) for u in merged]
        x = self.user_vectors(hists)                 # current user factors
        xtx = x.T @ x
        reg = self.regularization * np.eye(x.shape[1], dtype=np.float32)
        holders = {int(i): [] for i in touched}
        for u, h in enumerate(hists):
            for i in np.intersect1d(h, touched):
                holders[int(i)].append(u)
        factors = self.item_factors_.copy()
        for i, users in holders.items():
            xu = x[users]
            a = xtx + (self.alpha - 1.0) * (xu.T @ xu) + reg
            factors[i] = np.linalg.solve(a, self.alpha * xu.sum(axis=0))
        self.item_factors_ = factors                 # one assignment: readers see old or new, never half
        return self


class BPR(_ImplicitMF):
    name = "bpr"
    registry = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, threads: int = 0, fold_in_negatives: int = 128,
                 fold_in_iterations: int = 8, ann_threshold: int | None = DEFAULT_THRESHOLD):
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.iterations, self.seed, self.threads = iterations, seed, threads
        self.fold_in_negatives, self.fold_in_iterations = fold_in_negatives, fold_in_iterations
        self.ann_threshold = ann_threshold   # from this many items recommend uses a FAISS index

    def _build(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           num_threads=self.threads, random_state=self.seed)

    def fit(self, train, valid=None):
        self._fit_implicit(train)
        counts = train.item_counts().astype(np.float64)
        rng = np.random.default_rng(self.seed)
        p = counts / counts.sum() if counts.sum() > 0 else None
        self.fold_negatives_ = np.sort(rng.choice(len(counts), self.fold_in_negatives, p=p)).astype(np.int64)
        return self

    def user_vectors(self, histories, batch: int = 64):
        y = torch.from_numpy(self.item_factors_).double()   # [n, f + 1]; the last column is the item bias
        f = y.shape[1] - 1
        neg = torch.from_numpy(self.fold_negatives_)
        out = np.zeros((len(histories), f + 1), dtype=np.float32)
        out[:, f] = 1.0                                      # implicit's users carry a constant 1 for the bias
        rows = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
        order = np.argsort([len(r) for r in rows], kind="stable")    # similar lengths: little padding
        for lo in range(0, len(order), batch):
            pick = order[lo:lo + batch]
            part = [rows[i] for i in pick]
            if not any(len(r) for r in part):
                continue
            out[pick, :f] = self._fold_in(y, neg, part, f).astype(np.float32)
        return out

    def _fold_in(self, y, neg, part, f) -> np.ndarray:
        """Damped Newton steps on each row's own objective (rows never share a step or a stop)."""
        width = max(1, max(len(r) for r in part))
        pos = torch.zeros(len(part), width, dtype=torch.long)
        pos_mask = torch.zeros(len(part), width, dtype=y.dtype)
        for i, r in enumerate(part):
            pos[i, :len(r)] = torch.from_numpy(r)
            pos_mask[i, :len(r)] = 1.0
        # a negative that is in the history is no negative for that user
        clash = ((neg[None, None, :] == pos[:, :, None]) & (pos_mask[:, :, None] > 0)).any(1)
        mask = pos_mask[:, :, None] * (~clash).to(y.dtype)[:, None, :]          # [B, W, N] valid pairs
        mask = mask / mask.sum((1, 2), keepdim=True).clamp(min=1.0)             # mean over each row's pairs
        yp, yn = y[pos], y[neg]                                                  # [B, W, f+1], [N, f+1]
        ypf, ynf = yp[..., :f], yn[:, :f]
        bias = yp[..., f][:, :, None] - yn[:, f][None, None, :]                  # b_i - b_j
        reg = self.regularization
        eye = torch.eye(f, dtype=y.dtype)

        def margins(u):                                                          # x_ui - x_uj  [B, W, N]
            return torch.einsum("bwf,bf->bw", ypf, u)[:, :, None] - (u @ ynf.T)[:, None, :] + bias

        def loss(u):
            return (F.softplus(-margins(u)) * mask).sum((1, 2)) + 0.5 * reg * (u ** 2).sum(1)

        u = torch.zeros(len(part), f, dtype=y.dtype)
        with torch.no_grad():
            for _ in range(self.fold_in_iterations):
                x = margins(u)
                s = torch.sigmoid(-x)                                            # d(-log sig(x))/dx = -s
                a, b = (s * mask).sum(2), (s * mask).sum(1)
                grad = -(torch.einsum("bw,bwf->bf", a, ypf) - b @ ynf) + reg * u
                c = s * (1 - s) * mask
                cross = torch.einsum("bwf,bwn,ng->bfg", ypf, c, ynf)
                hess = (torch.einsum("bw,bwf,bwg->bfg", c.sum(2), ypf, ypf)
                        + torch.einsum("bn,nf,ng->bfg", c.sum(1), ynf, ynf)
                        - cross - cross.transpose(1, 2) + reg * eye)
                step = torch.linalg.solve(hess, grad[..., None])[..., 0]
                # per-row backtracking: the largest of 1, 1/2, 1/4, 1/8 that lowers that row's loss
                now, chosen = loss(u), torch.zeros(len(part), dtype=y.dtype)
                for t in (1.0, 0.5, 0.25, 0.125):
                    better = (loss(u - t * step) < now) & (chosen == 0)
                    chosen = torch.where(better, torch.full_like(chosen, t), chosen)
                u = u - chosen[:, None] * step
        result = u.numpy().copy()
        result[(pos_mask.sum(1) == 0).numpy()] = 0.0
        return result
