"""The multi-interest model: K interest vectors per history instead of one (ComiRec-SA style).

The interest model's transformer runs over the history; a self-attentive extractor reads its
per-position states H [L, d] with K attention heads,

    A = softmax_positions(W2 tanh(W1 H^T) + b[distance to the newest event])   [K, L]
    interests V = A H   [K, d]

(padding and, in training, every later position masked; the learnt recency bias b, zero at
first, lets a head follow the newest events, as the single-vector model's newest state does).
Training is the same full-ranking (or sampled) softmax as the other sequential models; each
target is scored by its best-matching interest (argmax_k sim(V_k, e(target)), no gradient
through the choice), as ComiRec trains (objective="max": every item of the softmax by its own
best interest, the scores mode="max" ranks by). Scoring: mode="max" ranks an item by its best
interest; mode="mix" by log sum_k w_k softmax_items(sim(V_k, .)), the mixture over interests
weighted by the user's interest distribution w ("current": the shares of the newest `recent` events each interest
explains; "forecast": next period's distribution from a Markov model over interests).

The interest distribution is read from soft (or hard) assignments of events to interests.
`event_interests` gives each event's assignment to the interests of the history up to it
(causal): a user's interest timeline, what the forecaster is fitted on (population
transitions at fit time, shrunk per user at forecast time). Slot k (head k) may take up
another theme as the history moves on, so for migration detection events are read instead
as shares of the population's M interests (k-means centres of training users' interest
vectors, fitted at fit time): coordinates shared across users and time, where a migration is
an interest rising from nothing and another fading. Nothing about any user is kept on the model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from ..drift.forecast import MarkovForecaster, transition_counts
from .interest import InterestModel
from .transformer import last_position, right_pad

MODES, MIX_WEIGHTS, ASSIGN, OBJECTIVES = ("max", "mix"), ("current", "forecast"), ("soft", "hard"), ("comirec", "max")
GLOBAL_TEMPERATURE = 0.1     # cosine temperature of an event's shares of the population's interests


class InterestExtractor(nn.Module):
    """K self-attention heads over per-position states: A = softmax(W2 tanh(W1 H) + b[distance]), V = A H.

    b_k[distance to the newest event] (starting at zero: plain ComiRec-SA) lets a head learn to
    follow the newest events or the whole history; the transformer's position embeddings count
    from the window's first event, so they alone cannot say which event is the newest.
    """

    def __init__(self, hidden: int, interests: int, width: int, max_len: int):
        super().__init__()
        self.w1 = nn.Linear(hidden, width, bias=False)
        self.w2 = nn.Linear(width, interests, bias=False)
        # multi-scale start (ALiBi-like): head k's bias falls by 8^-k per event back, the last head is flat
        slope = torch.tensor([8.0 ** -k if k < interests - 1 else 0.0 for k in range(interests)])
        self.recency = nn.Parameter(-slope[:, None] * torch.arange(max_len, dtype=torch.float32)[None])

    def forward(self, h: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """h [B, L, d] -> interests of the prefix ending at `last` [B, K, d], or of every prefix
        [B, L, K, d] when last is None (a causal mask: position t reads positions <= t)."""
        a = self.w2(torch.tanh(self.w1(h))).transpose(1, 2).float()         # [B, K, L]
        pos = torch.arange(h.shape[1], device=h.device)
        top = self.recency.shape[1] - 1
        if last is not None:
            dist = (last[:, None] - pos[None]).clamp(0, top)                   # [B, L]
            a = a + self.recency[:, dist].transpose(0, 1).float()
            a = a.masked_fill((pos[None] > last[:, None])[:, None], -torch.inf)
            return torch.einsum("bkl,bld->bkd", torch.softmax(a, -1).to(h.dtype), h)
        dist = (pos[:, None] - pos[None, :]).clamp(0, top)                     # [t, j]
        a = a[:, :, None, :] + self.recency[:, dist][None].float()             # [B, K, L, L]
        w = torch.softmax(a.masked_fill(pos[None, :] > pos[:, None], -torch.inf), -1).to(h.dtype)
        return torch.einsum("bktj,bjd->btkd", w, h)


class MultiInterestModel(InterestModel):
    """InterestModel (text [+ ID] items, MoE adapter) with K interests per history.

    n_interests: K. mode: "max" | "mix"; mix_weights: "current" | "forecast" (mode="mix").
    objective: "comirec" (each target's softmax uses the interest that matches the target best,
    as ComiRec trains) or "max" (every item of the softmax scored by its best interest: the
    training logits are mode="max"'s scores).
    recent: newest events the current distribution reads. assign: "soft" | "hard" event
    assignment. attention_width: W1's width (default 4 x hidden). forecast_every: events per
    period of the interest timelines; forecast_prior / forecast_smoothing: MarkovForecaster's.
    global_interests: M, the population's interests (k-means of training users' interest vectors)
    that `event_interests(space="global")` reads events in.
    """

    name = "multi-interest"
    registry = "multi-interest"

    def __init__(self, n_interests: int = 4, mode: str = "max", mix_weights: str = "current", recent: int = 20,
                 assign: str = "soft", attention_width: int | None = None, forecast_every: int = 10,
                 forecast_prior: float = 20.0, forecast_smoothing: float = 0.01, global_interests: int = 16,
                 objective: str = "comirec", **kw):
        super().__init__(**kw)
        self.n_interests, self.mode, self.mix_weights, self.recent = n_interests, mode, mix_weights, recent
        self.assign, self.attention_width, self.forecast_every = assign, attention_width, forecast_every
        self.forecast_prior, self.forecast_smoothing = forecast_prior, forecast_smoothing
        self.global_interests, self.objective = global_interests, objective

    def _check_params(self) -> None:
        for key, allowed in (("mode", MODES), ("mix_weights", MIX_WEIGHTS), ("assign", ASSIGN),
                             ("objective", OBJECTIVES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, not {getattr(self, key)!r}")
        for key in ("n_interests", "recent", "forecast_every", "global_interests"):
            if not isinstance(getattr(self, key), (int, np.integer)) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer, not {getattr(self, key)!r}")

    # -- network: the interest model's, plus the extractor -------------------------------------
    def _build(self) -> None:
        super()._build()
        width = self.attention_width or 4 * self.hidden
        self.net_["extractor"] = InterestExtractor(self.hidden, self.n_interests, width, self.max_len).to(self.device_)

    def _sims(self, v: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """sim(V_k, e_i) / temperature for interests v [..., K, d] and rows items [..., N, d] -> [..., K, N]."""
        query, items = self.factors(v, items)
        return query @ items.transpose(-1, -2)

    def similarity(self, interest, items):
        if interest.dim() == 3:                              # [n, K, d]: every item by its best interest
            return self._sims(interest, items).amax(1)
        return super().similarity(interest, items)

    def training_queries(self, x, keep, targets):
        v = self.net_["extractor"](self.net_["transformer"](x))[keep]         # [n, K, d]
        if self.objective == "max":
            return v                                         # similarity() scores each item by its best one
        with torch.no_grad():
            best = self._sims(v, targets[:, None, :])[..., 0].argmax(-1)       # the target's best interest
        return v[torch.arange(len(v), device=v.device), best]

    def states_scores(self, states, table):
        """explain attributes the best-interest score (mode="max"), whatever the mode."""
        last = torch.full((len(states),), states.shape[1] - 1, device=states.device)
        return self._sims(self.net_["extractor"](states, last), table[1:]).amax(1)

    # -- fit: the interest model's training, then the population's interests and transitions -------
    def fit(self, train, valid=None):
        self._check_params()
        for key in ("interest_transitions_", "interest_mean_", "global_interests_"):
            self.__dict__.pop(key, None)          # a refit must not forecast with the old ones
        super().fit(train, valid)
        self._fit_population(train.sequences)
        return self

    def fine_tune(self, train, valid=None, trainable: str = "all"):
        super().fine_tune(train, valid, trainable)
        self._fit_population(train.sequences)
        return self

    def _fit_population(self, sequences, sample: int = 20_000) -> None:
        """Population transitions between interests of consecutive periods of the training timelines,
        and the population's interests: k-means centres of (up to `sample`) users' unit interest vectors."""
        from sklearn.cluster import KMeans

        sequences = list(sequences)
        lines = [_periods(a, self.forecast_every) for a in self.event_interests(sequences)]
        lines = [(s, n) for s, n in lines if len(s) >= 2]
        if lines:
            f = MarkovForecaster(self.forecast_prior, self.forecast_smoothing).fit([s for s, _ in lines],
                                                                                   [n for _, n in lines])
            self.interest_transitions_, self.interest_mean_ = f.population_, f.mean_
        else:                       # no user has two periods: the forecast is the last period
            self.interest_transitions_ = np.eye(self.n_interests)
            self.interest_mean_ = np.full(self.n_interests, 1.0 / self.n_interests)
        rng = np.random.default_rng(self.seed)
        users = [sequences[i] for i in rng.permutation(len(sequences))[: max(1, sample // self.n_interests)]]
        v = self.interests(users).reshape(-1, self.hidden)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        m = min(self.global_interests, len(np.unique(v.round(5), axis=0)))
        centres = KMeans(m, n_init=3, random_state=self.seed).fit(v).cluster_centers_
        self.global_interests_ = (centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
                                  ).astype(np.float32)

    # -- interests of histories (read-only) -----------------------------------------------------
    def _newest(self, histories):
        """(interests [n, K, d] of each item-index history, the inference table)."""
        self._check_fitted()
        table = self._inference_table()
        seq = torch.from_numpy(right_pad(histories, self.max_len)).to(self.device_)
        return self.net_["extractor"](self.net_["transformer"](table[seq]), last_position(seq)), table

    def interests(self, histories, batch_size: int = 256) -> np.ndarray:
        """The K interest vectors of each item-index history: [n, K, d]."""
        out = [np.zeros((0, self.n_interests, self.hidden), np.float32)]
        with torch.inference_mode():
            for lo in range(0, len(histories), batch_size):
                out.append(self._newest(histories[lo:lo + batch_size])[0].float().cpu().numpy())
        return np.concatenate(out)

    def _shares(self, v, table, histories) -> torch.Tensor:
        """Share of each history's newest `recent` events each of its interests v explains: [n, K]."""
        idx = torch.from_numpy(right_pad([h[-self.recent:] for h in histories], self.recent)).to(self.device_)
        a = self._assign(self._sims(v, table[idx]).transpose(1, 2))                 # [n, R, K]
        real = (idx > 0).to(a.dtype)[..., None]
        count = real.sum(1)
        return torch.where(count > 0, (a * real).sum(1) / count.clamp(min=1), 1.0 / self.n_interests)

    def _assign(self, sims: torch.Tensor) -> torch.Tensor:
        if self.assign == "hard":
            return F.one_hot(sims.argmax(-1), sims.shape[-1]).to(sims.dtype)
        return torch.softmax(sims.float(), -1)

    def interest_distribution(self, histories, batch_size: int = 256) -> np.ndarray:
        """Share of each item-index history's newest `recent` events each interest explains: [n, K],
        rows sum to one (uniform for an empty history)."""
        out = [np.zeros((0, self.n_interests))]
        with torch.inference_mode():
            for lo in range(0, len(histories), batch_size):
                part = histories[lo:lo + batch_size]
                v, table = self._newest(part)
                out.append(self._shares(v, table, part).double().cpu().numpy())
        return np.concatenate(out)

    def event_interests(self, histories, space: str = "slots", batch_size: int = 64) -> list:
        """Each event read through the interests of the history up to it (causal), per history:

        space="slots": its assignment to those K interests, [len(h), K] (a user's interest
            timeline; slot k is the k-th attention head, which may take up another theme later);
        space="global": the interest that explains it (assignment-weighted unit interest vectors)
            as soft shares of the population's interests (`global_interests_`, fitted at fit time),
            [len(h), M]: coordinates shared by every user and every moment, the space the
            migration detector reads (an interest rising from nothing, another fading).
        Histories longer than max_len are read in windows of max_len events; each event then
        sees at least the max_len // 2 events before it. The vectors depend on the order of the
        events: calibrate a MigrationDetector on the vectors of time-shuffled histories, as they
        come (null="as-is"), not on shuffled vectors of real histories.
        """
        self._check_fitted()
        if space not in ("slots", "global"):
            raise ValueError(f"space must be 'slots' or 'global', not {space!r}")
        centres = None if space == "slots" else torch.from_numpy(self.global_interests_).to(self.device_)
        step = max(1, self.max_len // 2)
        pieces = []                      # (history, window start, window end, first event to keep)
        for row, h in enumerate(histories):
            end = min(len(h), self.max_len)
            pieces.append((row, 0, end, 0))
            while end < len(h):
                start, end = end, min(len(h), end + step)
                pieces.append((row, end - self.max_len, end, start))
        width = self.n_interests if centres is None else len(centres)
        out = [np.zeros((len(h), width), np.float32) for h in histories]
        table = self._inference_table()
        with torch.inference_mode():
            for lo in range(0, len(pieces), batch_size):
                chunk = pieces[lo:lo + batch_size]
                seq = torch.from_numpy(right_pad([histories[r][a:b] for r, a, b, _ in chunk], self.max_len))
                seq = seq[:, : max(1, int((seq > 0).sum(1).max()))].to(self.device_)
                v = self.net_["extractor"](self.net_["transformer"](table[seq])).float()   # [B, L, K, d]
                a = self._assign(self._sims(v, table[seq][:, :, None, :])[..., 0])       # [B, L, K]
                if centres is not None:
                    mixed = F.normalize((a[..., None] * F.normalize(v, dim=-1)).sum(2), dim=-1)   # [B, L, d]
                    a = torch.softmax(mixed @ centres.T / GLOBAL_TEMPERATURE, -1)
                for (row, start, end, keep), rows in zip(chunk, a.cpu().numpy()):
                    out[row][keep:end] = rows[keep - start:end - start]
        return out

    def forecast_distribution(self, histories) -> np.ndarray:
        """Next period's interest distribution of each item-index history: [n, K], rows sum to one.

        The history's interest timeline (periods of `forecast_every` events) gives the last
        period's shares and the user's own transition counts, shrunk to the population
        transitions fitted at fit time (MarkovForecaster, prior `forecast_prior`); an empty
        history gets the population's average distribution.
        """
        forecaster = MarkovForecaster(self.forecast_prior, self.forecast_smoothing)
        forecaster.population_ = getattr(self, "interest_transitions_", np.eye(self.n_interests))  # eye: mid-fit
        mean = getattr(self, "interest_mean_", np.full(self.n_interests, 1.0 / self.n_interests))
        out = np.empty((len(histories), self.n_interests))
        for row, a in enumerate(self.event_interests(histories)):
            if len(a) == 0:
                out[row] = forecaster.predict(mean)
                continue
            shares, n = _periods(a, self.forecast_every)
            counts = transition_counts(shares, n) if len(shares) >= 2 else None
            out[row] = forecaster.predict(a[-self.forecast_every:].mean(0), counts=counts)
        return out

    # -- scoring ----------------------------------------------------------------------------------
    def score_histories(self, histories, batch_size: int = 256):
        self._check_fitted()
        self._check_params()
        out = []
        with torch.inference_mode():
            for lo in range(0, len(histories), batch_size):
                part = histories[lo:lo + batch_size]
                v, table = self._newest(part)
                sims = self._sims(v, table[1:]).float()                          # [n, K, n_items]
                if self.mode == "max":
                    out.append(sims.amax(1).cpu().numpy())
                    continue
                w = self._weights(v, table, part)
                mix = torch.logsumexp(torch.log(w.clamp(min=1e-12))[..., None] + torch.log_softmax(sims, -1), 1)
                out.append(mix.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_items), np.float32)

    def _weights(self, v, table, histories) -> torch.Tensor:
        if self.mix_weights == "forecast":
            return torch.from_numpy(self.forecast_distribution(histories)).float().to(v.device)
        return self._shares(v, table, histories).float()

    def interest_vectors(self, histories):
        raise NotImplementedError("a multi-interest model has K interest vectors per history: use interests()")

    def query_vectors(self, histories):
        raise NotImplementedError("multi-interest scores are not one dot product: no query vector")

    def item_matrix(self):
        return None                      # so recommend always scores exactly (no single-query ANN)

    # -- readable interests and the calibrated list (raw item ids) ---------------------------------
    def _distribution(self, v, table, idx, weights: str) -> np.ndarray:
        if weights == "forecast":
            return self.forecast_distribution([idx])[0]
        if weights != "current":
            raise ValueError(f"weights must be one of {MIX_WEIGHTS}, not {weights!r}")
        return self._shares(v, table, [idx])[0].double().cpu().numpy()

    def _themes(self, history, weights: str, merge: float | None, unknown: str):
        """One raw-id history's interests, near-duplicates (cosine >= merge) merged into themes,
        heaviest first: (item indices, member slots per theme, theme weights, theme scores of every
        item [G, n_items] (the best member's), the newest `recent` events' theme assignments [R, G])."""
        idx = self.item_index(history, unknown)
        with torch.inference_mode():
            v, table = self._newest([idx])
            w = self._distribution(v, table, idx, weights)
            sims = self._sims(v, table[1:])[0].float().cpu().numpy()            # [K, n_items]
            unit = F.normalize(v[0].float(), dim=-1).cpu().numpy()
        groups = []
        for k in np.argsort(-w, kind="stable"):
            home = next((g for g in groups if merge is not None and unit[g[0]] @ unit[k] >= merge), None)
            if home is None:
                groups.append([int(k)])
            else:
                home.append(int(k))
        groups = sorted(groups, key=lambda g: -w[g].sum())
        events = sims[:, idx[-self.recent:]].T                                    # [R, K]
        assign = self._assign(torch.from_numpy(events)).numpy() if len(events) else np.zeros((0, len(w)))
        return (idx, groups, np.array([w[g].sum() for g in groups]), np.stack([sims[g].max(0) for g in groups]),
                np.stack([assign[:, g].sum(1) for g in groups], 1))

    def describe_interests(self, history, catalogue: pd.DataFrame, k_items: int = 3, weights: str = "current",
                           merge: float | None = 0.85, min_weight: float = 0.0, unknown: str = "drop") -> list[dict]:
        """The interests of one raw-id history, heaviest first, interests closer than cosine `merge`
        shown as one (None: never). Each: `weight` (its share of the newest `recent` events),
        `slots` (its interest vectors), `items` (titles of the history's events it explains best),
        `suggestions` (titles of the unseen items it ranks highest), `topics` (category shares of the
        events it explains where the catalogue has a `category` column, else its distinctive title
        words) and `name` (its most distinctive categories, by share x log lift over the catalogue,
        or its words). catalogue: item_id, title [, category], in any order."""
        from ..drift.topics import category_topics, name_topics

        idx, groups, w, sims, assign = self._themes(history, weights, merge, unknown)
        cat = catalogue.set_index(catalogue["item_id"].astype(str)).reindex(self.item_ids_)
        titles = cat["title"].fillna("").astype(str).to_numpy()
        recent, unseen = idx[-self.recent:], np.setdiff1d(np.arange(self.n_items), idx)
        best = assign.argmax(1) if len(assign) else np.zeros(0, int)           # each event's theme
        ranked = [unseen[np.argsort(-sims[g][unseen], kind="stable")] for g in range(len(groups))]
        if "category" in cat.columns and cat["category"].fillna("").astype(str).str.strip().ne("").any():
            space = category_topics(cat.reset_index(drop=True).fillna({"category": ""}))
            shares = assign.T @ space.item_topics[recent] if len(assign) else np.zeros((len(groups), space.n_topics))
            shares = shares / np.maximum(shares.sum(1, keepdims=True), 1e-12)
            topics = [[(space.names[t], float(row[t])) for t in np.argsort(-row)[:3] if row[t] > 0] for row in shares]
            # named by its most distinctive categories: share x log lift over the catalogue (Drama is everywhere)
            base = space.item_topics.mean(0)
            lift = shares * np.log((shares + 1e-3) / (base + 1e-3))
            names = []
            for row, score in zip(shares, lift):
                top = [t for t in np.argsort(-score)[:2] if row[t] >= 0.15 and score[t] > 0]
                names.append(" / ".join(space.names[t] for t in top) if top else None)
        else:               # words that set the theme's events and top suggestions apart from the catalogue
            labels = np.full(self.n_items, len(groups))
            for g in range(len(groups)):
                labels[ranked[g][:10]] = g
            labels[recent] = best
            names = name_topics(titles, labels, len(groups) + 1)[:-1]
            topics = [[(name, 1.0)] for name in names]
        out = []
        for g in range(len(groups)):
            if w[g] < min_weight:
                continue
            mine = np.flatnonzero(best == g)
            mine = mine[np.argsort(-sims[g][recent[mine]], kind="stable")]
            out.append({"slots": groups[g], "weight": float(w[g]),
                        "name": names[g] or (topics[g][0][0] if topics[g] else f"interest {groups[g][0]}"),
                        "topics": topics[g],
                        "items": list(dict.fromkeys(titles[recent[mine]]))[:k_items],
                        "suggestions": titles[ranked[g][:k_items]].tolist()})
        return out

    def recommend_calibrated(self, history, k: int = 10, weights: str = "current", min_weight: float = 0.05,
                             merge: float | None = 0.85, exclude_seen: bool = True, exclude=None, candidates=None,
                             unknown: str = "raise"):
        """A top-k covering the history's active interests (weight >= min_weight; near-duplicates
        closer than cosine `merge` count as one) in proportion to their weights: slot by slot, the
        interest furthest below its share of the slots so far (greedy proportional allocation)
        adds its best remaining item.

        Returns (raw item ids, the model's scores of them, the interest slot that chose each).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        idx, groups, w, sims, _ = self._themes(history, weights, merge, unknown)
        allowed = np.ones(self.n_items, bool)
        if candidates is not None:
            allowed[:] = False
            allowed[self.item_index(candidates)] = True
        if exclude_seen:
            allowed[idx] = False
        if exclude is not None and len(exclude):
            allowed[self.item_index(exclude, "drop")] = False
        active = np.flatnonzero(w >= min(min_weight, w.max()))
        share = w[active] / w[active].sum()
        order = [np.argsort(-sims[a], kind="stable") for a in active]      # each interest's ranking
        head = np.zeros(len(active), dtype=np.int64)                        # its next unread position
        slots, count = [], np.zeros(len(active))
        for n in range(min(k, int(allowed.sum()))):
            for j in np.argsort(-(share * (n + 1) - count), kind="stable"):   # furthest below its share first
                while head[j] < len(order[j]) and not allowed[order[j][head[j]]]:
                    head[j] += 1
                if head[j] < len(order[j]):
                    item = int(order[j][head[j]])
                    allowed[item] = False                                    # taken
                    slots.append((item, groups[active[j]][0]))
                    count[j] += 1
                    break
        items = np.asarray([i for i, _ in slots], dtype=np.int64)
        scores = self.score_histories([idx])[0][items] if len(items) else np.zeros(0, np.float32)
        return self.item_ids_[items], scores, np.asarray([a for _, a in slots], dtype=np.int64)


def _periods(assignments: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole periods of `every` events: (shares [n_periods, K], events per period)."""
    n = len(assignments) // every
    if n == 0:
        return np.zeros((0, assignments.shape[1])), np.zeros(0)
    shares = assignments[: n * every].reshape(n, every, -1).mean(1).astype(np.float64)
    return shares / np.maximum(shares.sum(1, keepdims=True), 1e-12), np.full(n, float(every))


def format_interests(described: list[dict], min_weight: float = 0.05, k_items: int = 3) -> str:
    """'3 interests: Horror 45 % (Scream, Halloween ...), ...' from describe_interests."""
    shown = [d for d in described if d["weight"] >= min_weight]
    parts = [f"{d['name']} {d['weight']:.0%} ({', '.join(d['items'][:k_items] or d['suggestions'][:k_items])}"
             f"{' ...' if d['items'] else ''})" for d in shown]
    return f"{len(shown)} interest{'s' if len(shown) != 1 else ''}: " + ", ".join(parts)
