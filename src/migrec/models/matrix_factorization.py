"""ALS and BPR matrix factorisation through the `implicit` library.

At prediction time ALS re-solves a user's factors from the given history (exact, cheap),
so the test history (train + valid item) is used; BPR keeps the user factors it fitted
(a history passed at prediction time does not change them).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from .base import Recommender


def _history_matrix(histories, n_items) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate(histories) if len(histories) else np.array([], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class _ImplicitMF(Recommender):
    def _build(self):
        raise NotImplementedError

    def fit(self, train, valid=None):
        self._remember(train)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # implicit runs its own threads, so BLAS is held to one thread here; its start-up
            # check still warns about the global OpenBLAS setting, which does not apply.
            warnings.filterwarnings("ignore", message="OpenBLAS is configured")
            model = self._build()
            model.fit(train.csr(binary=True) * float(getattr(self, "alpha", 1.0)), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def _user_vectors(self, users, histories):
        return self.user_factors_[users]

    def score_histories(self, users, histories):
        return self._user_vectors(np.asarray(users), histories) @ self.item_factors_.T


class ALS(_ImplicitMF):
    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0, threads: int = 0):
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed, self.threads = iterations, seed, threads

    def _build(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=1.0,
                                       iterations=self.iterations, num_threads=self.threads,
                                       random_state=self.seed)

    def _user_vectors(self, users, histories):
        # Closed-form ALS user step, as implicit solves it: each event has confidence alpha,
        # A = Y'Y + sum (alpha - 1) y y' + reg I, b = sum alpha y.
        y = self.item_factors_
        yty = y.T @ y
        reg = self.regularization * np.eye(y.shape[1], dtype=np.float32)
        out = np.empty((len(histories), y.shape[1]), dtype=np.float32)
        for row, h in enumerate(histories):
            items = np.unique(h)
            yi = y[items]
            a = yty + (self.alpha - 1.0) * (yi.T @ yi) + reg
            b = self.alpha * yi.sum(axis=0)
            out[row] = np.linalg.solve(a, b)
        return out


class BPR(_ImplicitMF):
    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, threads: int = 0):
        self.factors, self.learning_rate, self.regularization = factors, learning_rate, regularization
        self.iterations, self.seed, self.threads = iterations, seed, threads

    def _build(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate,
                                           regularization=self.regularization, iterations=self.iterations,
                                           num_threads=self.threads, random_state=self.seed)
