"""EMCDR with matrix factorisation: the classic ID-based cross-domain cold-start baseline.

Man et al. (IJCAI 2017): factorise each domain separately (here ALS via `implicit`),
learn a mapping from source user factors to target user factors on the overlapping
users, then give a user who has no target history the mapped factor of their source one.

Scoring a history (global item indices, mixed domains):
  - it has target-domain items -> the target user factor is re-solved from them (ALS);
  - else it has source-domain items -> the source factor is re-solved and mapped;
  - else -> the mean target factor of the training users with target history, each
    folded in from that history (a popularity-like answer; an aggregate, no user data).
Only target-domain items get scores; every other item scores -inf. Source and target
ALS scores live on different scales, so mixing them in one ranking would mean nothing,
and the transfer evaluator ranks among target-domain items anyway.

Saved, the two ALS models are nested folders and the mapping's weights numeric arrays.
"""
from __future__ import annotations

import numpy as np

from ..data.schema import DOMAIN
from ..data.split import TrainSet
from ..models.base import Recommender
from ..models.matrix_factorization import ALS
from .domains import restrict
from .mapping import EMCDRMapping, pack_mapping, unpack_mapping


class EMCDRMF(Recommender):
    name = "emcdr-mf"
    registry = "emcdr-mf"
    _state_apart = ("mapping_",)     # saved by _state/_restore below

    def __init__(self, source_domain, target_domain: str, factors: int = 64, regularization: float = 0.05,
                 alpha: float = 10.0, iterations: int = 15, mapping: str = "mlp", mapping_loss: str = "mse",
                 hidden: int = 128, epochs: int = 300, lr: float = 3e-3, min_overlap: int = 10, seed: int = 0,
                 threads: int = 0):
        self.source_domain, self.target_domain = source_domain, target_domain
        self.factors, self.regularization, self.alpha, self.iterations = factors, regularization, alpha, iterations
        self.mapping, self.mapping_loss, self.hidden, self.epochs, self.lr = mapping, mapping_loss, hidden, epochs, lr
        self.min_overlap, self.seed, self.threads = min_overlap, seed, threads

    def _masks(self, train: TrainSet):
        if DOMAIN not in train.catalogue.columns:
            raise ValueError(f"train.catalogue has no {DOMAIN!r} column: EMCDRMF needs each item's domain")
        domains = train.catalogue[DOMAIN].astype(str).to_numpy()
        known = sorted(set(domains))
        source = [self.source_domain] if isinstance(self.source_domain, str) else list(self.source_domain)
        missing = [d for d in [*source, self.target_domain] if d not in known]
        if missing:
            raise ValueError(f"domain(s) {missing} not in the catalogue; its domains are {known}")
        if self.target_domain in source:
            raise ValueError(f"target domain {self.target_domain!r} is also a source domain")
        return np.isin(domains, source), domains == self.target_domain

    def _als(self) -> ALS:
        return ALS(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                   iterations=self.iterations, seed=self.seed, threads=self.threads)

    def fit(self, train: TrainSet, valid=None) -> "EMCDRMF":
        source_mask, target_mask = self._masks(train)
        self._summarise(train)
        src = [s[source_mask[s]] for s in train.sequences]
        tgt = [s[target_mask[s]] for s in train.sequences]
        both = np.flatnonzero([len(a) > 0 and len(b) > 0 for a, b in zip(src, tgt)])
        if len(both) < self.min_overlap:
            raise ValueError(f"only {len(both)} training users have events in both {self.source_domain!r} and "
                             f"{self.target_domain!r}; EMCDRMF needs at least min_overlap={self.min_overlap}")
        self.source_mask_, self.target_mask_ = source_mask, target_mask
        self.source_als_ = self._als().fit(restrict(train, source_mask))
        self.target_als_ = self._als().fit(restrict(train, target_mask))
        # The mapping learns from factors re-solved against the final item factors, exactly
        # as prediction computes them (the fitted ones lag one ALS half-step behind).
        s_vec = self.source_als_.user_vectors([src[u] for u in both])
        t_vec = self.target_als_.user_vectors([tgt[u] for u in both])
        self.mapping_ = EMCDRMapping(kind=self.mapping, loss=self.mapping_loss, hidden=self.hidden,
                                     epochs=self.epochs, lr=self.lr, seed=self.seed).fit(s_vec, t_vec)
        self.n_overlap_ = len(both)
        with_target = np.flatnonzero([len(b) > 0 for b in tgt])
        self.default_factor_ = self.target_als_.user_vectors([tgt[u] for u in with_target]).mean(0)
        return self

    def user_factors(self, histories) -> tuple[np.ndarray, np.ndarray]:
        """Target-domain factor of each history and how it was made: 0 target, 1 mapped, 2 default."""
        self._check_fitted()
        hs = [np.asarray(h, dtype=np.int64) for h in histories]
        tgt = [h[self.target_mask_[h]] for h in hs]
        src = [h[self.source_mask_[h]] for h in hs]
        how = np.where([len(t) > 0 for t in tgt], 0, np.where([len(s) > 0 for s in src], 1, 2))
        out = np.tile(self.default_factor_, (len(hs), 1)).astype(np.float32)
        rows = np.flatnonzero(how == 0)
        if len(rows):
            out[rows] = self.target_als_.user_vectors([tgt[r] for r in rows])
        rows = np.flatnonzero(how == 1)
        if len(rows):
            out[rows] = self.mapping_.predict(self.source_als_.user_vectors([src[r] for r in rows]))
        return out, how

    def score_histories(self, histories):
        factors, _ = self.user_factors(histories)
        scores = factors @ self.target_als_.item_factors_.T
        scores[:, ~self.target_mask_] = -np.inf
        return scores.astype(np.float32, copy=False)

    # -- persistence: the ALS models are nested folders (base class), the mapping is numbers --------
    def _state(self):
        state, arrays, children = super()._state()
        pack_mapping(self.mapping_, "mapping_", state, arrays)
        return state, arrays, children

    def _restore(self, state, arrays, children):
        state = dict(state)
        mapping = unpack_mapping("mapping_", state, arrays)
        super()._restore(state, arrays, children)
        self.mapping_ = mapping
