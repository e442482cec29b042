"""Interest evolution forecast: a Markov model of topic-to-topic transitions between periods.

Each user's history is a timeline of topic distributions d_1..d_T (one per period). Soft
transition counts C[i, j] = sum_t d_t[i] * d_{t+1}[j] * n_events_{t+1} say how interest in
topic i is followed by interest in topic j. The population matrix pools every user's counts;
a user's matrix is shrunk towards it row by row (a Dirichlet prior of strength `prior`):

    P_user[i] = (C_user[i] + prior * P_pop[i]) / (C_user[i].sum() + prior)

so prior -> infinity (or a user with no counts) gives the population model. The forecast of
the next period is d_T @ P, mixed with a little uniform mass (`smoothing`) so that the
log-likelihood of a topic never seen before stays finite.
"""
from __future__ import annotations

import numpy as np


def _check_timelines(timelines, weights=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    out, ws = [], []
    for i, t in enumerate(timelines):
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 2:
            raise ValueError(f"timelines[{i}] must be [n_periods, n_topics]; got shape {t.shape}")
        if (t < 0).any() or not np.all(np.isfinite(t)):
            raise ValueError(f"timelines[{i}] has negative or non-finite shares")
        if out and t.shape[1] != out[0].shape[1]:
            raise ValueError(f"timelines[{i}] has {t.shape[1]} topics, timelines[0] has {out[0].shape[1]}")
        out.append(t / np.maximum(t.sum(axis=1, keepdims=True), 1e-12))
        ws.append(np.ones(len(t)) if weights is None else np.asarray(weights[i], dtype=np.float64))
    if not out:
        raise ValueError("need at least one timeline")
    return out, ws


def transition_counts(timeline: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Soft counts C[i, j] between consecutive periods, weighted by the later period's events."""
    t = np.asarray(timeline, dtype=np.float64)
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(t) < 2:
        return np.zeros((t.shape[1], t.shape[1]))
    return (t[:-1] * w[1:, None]).T @ t[1:]


def _rows(c: np.ndarray) -> np.ndarray:
    """Row-normalise; an empty row becomes uniform."""
    s = c.sum(axis=1, keepdims=True)
    return np.where(s > 0, c / np.where(s > 0, s, 1), 1.0 / c.shape[1])


class MarkovForecaster:
    """Per-user topic transition matrices shrunk towards the population matrix.

    fit(timelines, weights=None): timelines = list of [n_periods, n_topics] share arrays (one per
    user, oldest first); weights = events per period (default 1). Fitted: `population_` [k, k],
    `mean_` (the population's average distribution) and `user_counts_` (list of [k, k]).
    """

    def __init__(self, prior: float = 20.0, smoothing: float = 0.01):
        self.prior = prior
        self.smoothing = smoothing

    def fit(self, timelines, weights=None) -> "MarkovForecaster":
        if self.prior < 0:
            raise ValueError(f"prior must be >= 0; got {self.prior}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1); got {self.smoothing}")
        ts, ws = _check_timelines(timelines, weights)
        self.user_counts_ = [transition_counts(t, w) for t, w in zip(ts, ws)]
        self.population_ = _rows(np.sum(self.user_counts_, axis=0))
        total = sum((t * w[:, None]).sum(axis=0) for t, w in zip(ts, ws))
        self.mean_ = total / total.sum()
        self.n_topics_ = ts[0].shape[1]
        return self

    def user_matrix(self, user: int | None = None, counts: np.ndarray | None = None) -> np.ndarray:
        """Transition matrix of fitted user `user` (index into the fit list), or for given counts."""
        if not hasattr(self, "population_"):
            raise RuntimeError("MarkovForecaster is not fitted; call fit(timelines) first")
        if counts is None:
            counts = np.zeros_like(self.population_) if user is None else self.user_counts_[user]
        n = counts.sum(axis=1, keepdims=True)
        if self.prior == 0:
            return np.where(n > 0, counts / np.where(n > 0, n, 1), self.population_)
        return (counts + self.prior * self.population_) / (n + self.prior)

    def _smooth(self, p: np.ndarray) -> np.ndarray:
        return (1 - self.smoothing) * p + self.smoothing / p.shape[-1]

    def predict(self, last: np.ndarray, user: int | None = None, counts: np.ndarray | None = None) -> np.ndarray:
        """Next-period distribution from the last period's shares `last` ([k] or [n, k])."""
        last = np.asarray(last, dtype=np.float64)
        if last.shape[-1] != self.population_.shape[0]:
            raise ValueError(f"last has {last.shape[-1]} topics; the model has {self.population_.shape[0]}")
        last = last / np.maximum(last.sum(axis=-1, keepdims=True), 1e-12)
        return self._smooth(last @ self.user_matrix(user, counts))


def log_likelihood(observed: np.ndarray, forecast: np.ndarray) -> float:
    """Mean log-probability (nats) per unit of observed topic mass: sum_k o_k log q_k / sum_k o_k."""
    o = np.asarray(observed, dtype=np.float64)
    q = np.asarray(forecast, dtype=np.float64)
    if (q[o > 0] <= 0).any():
        return -np.inf
    return float((o * np.log(np.where(o > 0, q, 1.0))).sum() / o.sum())


def kl_divergence(observed: np.ndarray, forecast: np.ndarray) -> float:
    """KL(observed || forecast) in nats, observed normalised to a distribution."""
    o = np.asarray(observed, dtype=np.float64)
    o = o / o.sum()
    q = np.asarray(forecast, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(np.where(o > 0, o * (np.log(np.where(o > 0, o, 1.0)) - np.log(q)), 0.0).sum())
