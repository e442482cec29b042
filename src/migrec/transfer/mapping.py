"""Map a user's source-domain interest vector to their target-domain interest vector.

Both mappings are learnt on overlapping users only (users with history in both domains)
and then serve users known only in the source domain (cold start in the target).

- `EMCDRMapping`: one mapping shared by every user, in the spirit of EMCDR (Man et al.,
  IJCAI 2017): embed each domain separately, then regress target vectors on source
  vectors with an MLP (or a linear map) trained with MSE, or with a cosine loss for
  vectors that are scored by cosine.
- `PersonalizedBridge`: every user gets their own bridge matrix, produced by a meta
  network from their source history, in the spirit of PTUPCDR (Zhu et al., WSDM 2022).
  It is trained on the task itself: the mapped vector must rank the user's target items
  high (full-softmax cross-entropy over the target domain's item vectors).

Both keep a share of the overlapping users apart for early stopping and restore the
weights of the best validation epoch. Torch on the CPU, seeded.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EMCDRMapping", "PersonalizedBridge", "pack_mapping", "unpack_mapping"]


# -- input checks ------------------------------------------------------------------------
def _matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [users, dim], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr


def _missing_rows(arr: np.ndarray) -> np.ndarray:
    # A user with no events in a domain has no vector there: NaN, or exactly zero as an
    # ALS solve from an empty history gives.
    return np.flatnonzero(~np.isfinite(arr).all(axis=1) | ~arr.any(axis=1))


def _no_missing(rows: np.ndarray, name: str, what: str) -> None:
    if len(rows):
        raise ValueError(f"{len(rows)} user(s) have no {what} ({name} rows {rows[:5].tolist()}"
                         f"{' ...' if len(rows) > 5 else ''}); a mapping is learnt on overlapping users "
                         f"only: pass just the users with data in both domains")


def _histories(histories, n_users: int, n_items: int, name: str) -> list:
    if len(histories) != n_users:
        raise ValueError(f"{name} has {len(histories)} histories for {n_users} users")
    out = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
    for i, h in enumerate(out):
        if len(h) and (h.min() < 0 or h.max() >= n_items):
            raise ValueError(f"{name}[{i}] has item index {int(h.max() if h.max() >= n_items else h.min())} "
                             f"outside the {n_items} item vectors")
    return out


def _split(n: int, share: float, seed: int, min_users: int = 20):
    """Train / validation user positions; no validation (no early stopping) for tiny sets."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"val_share must be in [0, 1), got {share}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(share * n)) if n >= min_users else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _train(net: nn.Module, batch_loss, valid_loss, n_train: int, epochs: int, batch_size: int, lr: float,
           weight_decay: float, patience: int, seed: int) -> dict:
    """Mini-batch Adam; keeps the weights of the epoch with the lowest validation loss."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, stale, last = np.inf, None, 0, 0, np.nan
    for epoch in range(1, epochs + 1):
        net.train()
        total = 0.0
        for idx in torch.randperm(n_train, generator=gen).split(batch_size):
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        last = total / n_train
        net.eval()
        with torch.no_grad():
            val = valid_loss()
        has_valid = val is not None
        score = last if val is None else val   # no validation users: keep the last epoch
        if val is None or score < best - 1e-6:
            best, best_state, best_epoch, stale = score, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return {"best_epoch": best_epoch, "epochs_run": epoch, "train_loss": last,
            "valid_loss": float(best) if has_valid else None}


# -- one shared mapping (EMCDR) ----------------------------------------------------------------
class EMCDRMapping:
    """Learn f(source vector) ~ target vector on overlapping users; predict for anyone.

    kind: "mlp" (one tanh hidden layer, as in EMCDR) or "linear".
    loss: "mse" (inputs and outputs standardised per dimension) or "cosine" (1 - cos;
    only the direction of the prediction is learnt, for vectors scored by cosine).
    """

    def __init__(self, kind: str = "mlp", hidden: int = 128, loss: str = "mse", epochs: int = 300,
                 lr: float = 3e-3, weight_decay: float = 1e-5, batch_size: int = 256, val_share: float = 0.1,
                 patience: int = 20, seed: int = 0):
        self.kind, self.hidden, self.loss, self.epochs, self.lr = kind, hidden, loss, epochs, lr
        self.weight_decay, self.batch_size, self.val_share = weight_decay, batch_size, val_share
        self.patience, self.seed = patience, seed

    def fit(self, source_vectors, target_vectors) -> "EMCDRMapping":
        if self.kind not in ("mlp", "linear"):
            raise ValueError(f"kind must be 'mlp' or 'linear', got {self.kind!r}")
        if self.loss not in ("mse", "cosine"):
            raise ValueError(f"loss must be 'mse' or 'cosine', got {self.loss!r}")
        x, y = _matrix(source_vectors, "source_vectors"), _matrix(target_vectors, "target_vectors")
        if len(x) != len(y):
            raise ValueError(f"source_vectors has {len(x)} users but target_vectors has {len(y)}")
        _no_missing(_missing_rows(y), "target_vectors", "target-domain data")
        _no_missing(_missing_rows(x), "source_vectors", "source-domain data")
        if len(x) < 2:
            raise ValueError(f"need at least 2 overlapping users to learn a mapping, got {len(x)}")
        self.n_users_ = len(x)
        self.x_mean_, self.x_scale_ = x.mean(0), _scale(x)
        if self.loss == "mse":
            self.y_mean_, self.y_scale_ = y.mean(0), _scale(y)
        else:   # centring would change directions, which is all a cosine loss sees
            self.y_mean_, self.y_scale_ = np.zeros(y.shape[1], np.float32), np.ones(y.shape[1], np.float32)
        xs = torch.from_numpy((x - self.x_mean_) / self.x_scale_)
        ys = torch.from_numpy((y - self.y_mean_) / self.y_scale_)
        tr, va = _split(len(x), self.val_share, self.seed)
        self.n_train_users_, self.n_valid_users_ = len(tr), len(va)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self.kind == "linear":
                net = nn.Linear(x.shape[1], y.shape[1])
            else:
                net = nn.Sequential(nn.Linear(x.shape[1], self.hidden), nn.Tanh(), nn.Linear(self.hidden, y.shape[1]))
        xt, yt, xv, yv = xs[tr], ys[tr], xs[va], ys[va]
        info = _train(net, lambda i: self._loss(net(xt[i]), yt[i]),
                      lambda: float(self._loss(net(xv), yv)) if len(va) else None,
                      len(tr), self.epochs, self.batch_size, self.lr, self.weight_decay, self.patience, self.seed)
        self.net_ = net
        self.best_epoch_, self.epochs_run_ = info["best_epoch"], info["epochs_run"]
        self.train_loss_, self.valid_loss_ = info["train_loss"], info["valid_loss"]
        return self

    def _loss(self, pred, y):
        if self.loss == "mse":
            return F.mse_loss(pred, y)
        return (1.0 - F.cosine_similarity(pred, y, dim=1, eps=1e-8)).mean()

    @torch.no_grad()
    def predict(self, source_vectors) -> np.ndarray:
        """Target-domain vectors [m, d_t] (with loss="cosine" only their direction is meaningful)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("EMCDRMapping is not fitted: call fit() first")
        x = _matrix(source_vectors, "source_vectors")
        if x.shape[1] != len(self.x_mean_):
            raise ValueError(f"source_vectors have {x.shape[1]} dimensions, the mapping was fitted on "
                             f"{len(self.x_mean_)}")
        out = self.net_(torch.from_numpy((x - self.x_mean_) / self.x_scale_)).numpy()
        return (out * self.y_scale_ + self.y_mean_).astype(np.float32)

    # -- persistence: numbers only (a model that holds a mapping saves it through these) ----------
    _FITTED = ("n_users_", "n_train_users_", "n_valid_users_", "best_epoch_", "epochs_run_", "train_loss_",
               "valid_loss_")
    _ARRAYS = ("x_mean_", "x_scale_", "y_mean_", "y_scale_")

    def to_arrays(self) -> tuple[dict, dict]:
        """(JSON: hyper-parameters and fit summary, float32 arrays: standardisation and weights)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("EMCDRMapping is not fitted: call fit() first")
        params = {k: getattr(self, k) for k in ("kind", "hidden", "loss", "epochs", "lr", "weight_decay",
                                                 "batch_size", "val_share", "patience", "seed")}
        info = {"params": params, "fitted": {k: getattr(self, k) for k in self._FITTED}}
        arrays = {k: np.asarray(getattr(self, k), dtype=np.float32) for k in self._ARRAYS}
        arrays.update({f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()})
        return info, arrays

    @classmethod
    def from_arrays(cls, info: dict, arrays: dict) -> "EMCDRMapping":
        """The fitted mapping that `to_arrays` described."""
        model = cls(**info["params"])
        model.__dict__.update(info["fitted"])
        for key in cls._ARRAYS:
            setattr(model, key, np.asarray(arrays[key], dtype=np.float32))
        d_s, d_t = len(model.x_mean_), len(model.y_mean_)
        with torch.random.fork_rng(devices=[]):
            net = nn.Linear(d_s, d_t) if model.kind == "linear" else \
                nn.Sequential(nn.Linear(d_s, model.hidden), nn.Tanh(), nn.Linear(model.hidden, d_t))
        net.load_state_dict({k[len("net."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                             if k.startswith("net.")})
        model.net_ = net.eval()
        return model

    def __repr__(self) -> str:
        return (f"EMCDRMapping(kind={self.kind!r}, hidden={self.hidden}, loss={self.loss!r}, epochs={self.epochs}, "
                f"lr={self.lr}, seed={self.seed})")


def _scale(a: np.ndarray) -> np.ndarray:
    s = a.std(0)
    return np.where(s > 1e-8, s, 1.0).astype(np.float32)


# -- a personal bridge per user (PTUPCDR-style) ------------------------------------------------
class _BridgeNet(nn.Module):
    def __init__(self, d_s: int, d_t: int, hidden: int, rank: int | None, personalized: bool):
        super().__init__()
        self.d_s, self.d_t, self.rank, self.personalized = d_s, d_t, rank, personalized
        # The shared part is the mean bridge; the meta network adds each user's deviation.
        self.base = nn.Parameter(torch.randn(d_s, d_t) / d_s ** 0.5)
        self.attend = nn.Sequential(nn.Linear(d_s, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        out = d_s * d_t if rank is None else rank * (d_s + d_t)
        self.meta = nn.Sequential(nn.Linear(d_s, hidden), nn.ReLU(), nn.Linear(hidden, out))
        nn.init.normal_(self.meta[2].weight, std=0.01)   # start close to the shared bridge
        nn.init.zeros_(self.meta[2].bias)

    def characteristic(self, hist_vecs, mask):
        """Attention-weighted mean of the source history's item vectors: [b, d_s]."""
        logits = self.attend(hist_vecs).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (torch.softmax(logits, dim=1).unsqueeze(-1) * hist_vecs).sum(1)

    def forward(self, user_vecs, hist_vecs, mask):
        mapped = user_vecs @ self.base
        if not self.personalized:
            return mapped
        w = self.meta(self.characteristic(hist_vecs, mask))
        if self.rank is None:
            return mapped + torch.bmm(user_vecs.unsqueeze(1), w.view(-1, self.d_s, self.d_t)).squeeze(1)
        p = w[:, :self.d_s * self.rank].view(-1, self.d_s, self.rank)
        q = w[:, self.d_s * self.rank:].view(-1, self.rank, self.d_t)
        return mapped + torch.bmm(torch.bmm(user_vecs.unsqueeze(1), p), q).squeeze(1)


class PersonalizedBridge:
    """Source user vector x a bridge made from the user's own source history.

    rank: None for a full d_s x d_t personal bridge, else a rank-`rank` one (P Q).
    personalized: False keeps only the shared bridge (one linear map for everybody,
    trained the same way): the ablation to compare against.
    score: "dot" (logits = mapped . item vector, e.g. for MF factors) or "cosine"
    (cosine / temperature, for interest models that score by cosine).
    max_history: the most recent items of each source history that are attended to.
    """

    def __init__(self, rank: int | None = None, hidden: int = 64, score: str = "dot", temperature: float = 0.07,
                 personalized: bool = True, max_history: int = 50, epochs: int = 50, lr: float = 3e-3,
                 weight_decay: float = 1e-6, batch_size: int = 256, val_share: float = 0.1, patience: int = 5,
                 seed: int = 0):
        self.rank, self.hidden, self.score, self.temperature = rank, hidden, score, temperature
        self.personalized, self.max_history, self.epochs, self.lr = personalized, max_history, epochs, lr
        self.weight_decay, self.batch_size, self.val_share = weight_decay, batch_size, val_share
        self.patience, self.seed = patience, seed

    def fit(self, source_user_vectors, source_histories, source_item_vectors, target_histories,
            target_item_vectors) -> "PersonalizedBridge":
        if self.score not in ("dot", "cosine"):
            raise ValueError(f"score must be 'dot' or 'cosine', got {self.score!r}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be None (full bridge) or >= 1, got {self.rank}")
        u = _matrix(source_user_vectors, "source_user_vectors")
        s_items = _matrix(source_item_vectors, "source_item_vectors")
        t_items = _matrix(target_item_vectors, "target_item_vectors")
        if s_items.shape[1] != u.shape[1]:
            raise ValueError(f"source_item_vectors have {s_items.shape[1]} dimensions, source_user_vectors "
                             f"{u.shape[1]}")
        s_hist = _histories(source_histories, len(u), len(s_items), "source_histories")
        t_hist = _histories(target_histories, len(u), len(t_items), "target_histories")
        _no_missing(np.flatnonzero([len(h) == 0 for h in t_hist]), "target_histories", "target-domain events")
        _no_missing(np.flatnonzero([len(h) == 0 for h in s_hist]), "source_histories", "source-domain events")
        _no_missing(_missing_rows(u), "source_user_vectors", "source-domain vector")
        self.n_users_ = len(u)
        # One global scale per space (not per dimension), so dot products keep their geometry.
        self.user_scale_ = float(np.sqrt((u ** 2).sum(1).mean()))
        self.source_item_scale_ = float(np.sqrt((s_items ** 2).sum(1).mean())) or 1.0
        self.target_item_scale_ = float(np.sqrt((t_items ** 2).sum(1).mean())) or 1.0
        self.source_item_vectors_ = s_items
        items = torch.from_numpy(t_items / self.target_item_scale_)
        if self.score == "cosine":
            items = F.normalize(items, dim=1)
        users = torch.from_numpy(u / self.user_scale_)
        hist, mask = self._pad(s_hist)
        tr, va = _split(len(u), self.val_share, self.seed)
        self.n_train_users_, self.n_valid_users_ = len(tr), len(va)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _BridgeNet(u.shape[1], t_items.shape[1], self.hidden, self.rank, self.personalized)

        def pairs(rows):   # one (user, target item) example per distinct target event
            us = [np.full(len(np.unique(t_hist[r])), r) for r in rows]
            its = [np.unique(t_hist[r]) for r in rows]
            return torch.from_numpy(np.concatenate(us)), torch.from_numpy(np.concatenate(its))

        tr_u, tr_i = pairs(tr)
        va_u, va_i = pairs(va) if len(va) else (None, None)

        def ce(uid, iid):
            logits = self._logits(net(users[uid], hist[uid], mask[uid]), items)
            return F.cross_entropy(logits, iid)

        info = _train(net, lambda b: ce(tr_u[b], tr_i[b]),
                      lambda: None if va_u is None else float(ce(va_u, va_i)),
                      len(tr_u), self.epochs, self.batch_size, self.lr, self.weight_decay, self.patience, self.seed)
        self.net_ = net
        self.best_epoch_, self.epochs_run_ = info["best_epoch"], info["epochs_run"]
        self.train_loss_, self.valid_loss_ = info["train_loss"], info["valid_loss"]
        return self

    def _logits(self, mapped, items):
        if self.score == "cosine":
            return F.normalize(mapped, dim=1) @ items.T / self.temperature
        return mapped @ items.T

    def _pad(self, histories):
        """Right-padded source item vectors of each history's last `max_history` items, and the mask."""
        hs = [h[-self.max_history:] for h in histories]
        length = max(1, max(len(h) for h in hs))
        idx = np.zeros((len(hs), length), dtype=np.int64)
        mask = np.zeros((len(hs), length), dtype=bool)
        for r, h in enumerate(hs):
            idx[r, :len(h)], mask[r, :len(h)] = h, True
        vecs = torch.from_numpy(self.source_item_vectors_ / self.source_item_scale_)[torch.from_numpy(idx)]
        return vecs, torch.from_numpy(mask)

    @torch.no_grad()
    def predict(self, source_user_vectors, source_histories) -> np.ndarray:
        """Mapped target-domain vectors [m, d_t], in the target item vectors' own units.

        With score="dot", mapped @ target_item_vectors.T are the scores the model was
        trained on; with score="cosine" only the direction counts.
        """
        if not hasattr(self, "net_"):
            raise RuntimeError("PersonalizedBridge is not fitted: call fit() first")
        u = _matrix(source_user_vectors, "source_user_vectors")
        if u.shape[1] != self.net_.d_s:
            raise ValueError(f"source_user_vectors have {u.shape[1]} dimensions, the bridge was fitted on "
                             f"{self.net_.d_s}")
        s_hist = _histories(source_histories, len(u), len(self.source_item_vectors_), "source_histories")
        empty = np.flatnonzero([len(h) == 0 for h in s_hist])
        if len(empty):
            raise ValueError(f"source_histories rows {empty[:5].tolist()} are empty: a personal bridge is made "
                             f"from the source history")
        hist, mask = self._pad(s_hist)
        out = self.net_(torch.from_numpy(u / self.user_scale_), hist, mask).numpy()
        return (out / self.target_item_scale_).astype(np.float32)

    def __repr__(self) -> str:
        return (f"PersonalizedBridge(rank={self.rank}, hidden={self.hidden}, score={self.score!r}, "
                f"personalized={self.personalized}, epochs={self.epochs}, lr={self.lr}, seed={self.seed})")


def pack_mapping(mapping: EMCDRMapping, key: str, state: dict, arrays: dict) -> None:
    """Put a fitted mapping into a model artifact's JSON state and arrays under `key` (no pickle)."""
    info, weights = mapping.to_arrays()
    state[key] = info
    arrays.update({f"{key}.{k}": v for k, v in weights.items()})


def unpack_mapping(key: str, state: dict, arrays: dict) -> EMCDRMapping:
    """Take the mapping saved by pack_mapping out of `state` and `arrays` (both are changed)."""
    info = state.pop(key)
    weights = {k[len(key) + 1:]: arrays.pop(k) for k in list(arrays) if k.startswith(f"{key}.")}
    return EMCDRMapping.from_arrays(info, weights)
