"""Interest-migration detection: an online score per event and a calibrated alarm rule.

At event t the *recent window* is the last `short` events (t-short+1 .. t) and the
*reference window* is up to `long` events just before it, all after the last alarm.
The score says how far the recent window is from the reference:

    statistic="shift"  standardised mean shift (a two-sample statistic, ~1 when nothing moved):
                       ||mean_recent - mean_ref||^2 / (total variance of ref * (1/n_recent + 1/n_ref)).
                       Dividing by the user's own spread is what lets one threshold serve both
                       narrow and eclectic users. Works for text vectors and topic one-hots.
    statistic="js"     Jensen-Shannon divergence (bits) between the recent and reference topic
                       distributions (rows must be non-negative; each row is normalised).
    statistic="cusum"  CUSUM of per-event surprise: each event's squared distance to the reference
                       mean over the reference's variance, minus 1 + `drift`, accumulated and
                       floored at zero (Page's CUSUM; the reference excludes the recent window).

Alarm rule: an alarm fires at the first event whose score exceeds `threshold_`; the reference
then restarts at the estimated change point (t - short + 1), so the next alarm needs
`min_history` events of the new regime first. Without the restart one migration would keep
alarming for `long` events.

Calibration (fit): the null model is "no migration" = the same user's events in random order.
`threshold_` is the (1 - false_alarm) quantile of the largest score of each time-shuffled copy,
so **false_alarm is the share of null sequences with at least one alarm** (per sequence, not
per event). Longer sequences give more chances of an alarm: calibrate on sequences as long as
the ones you will monitor.
"""
from __future__ import annotations

import numpy as np

STATISTICS = ("shift", "js", "cusum")
_EPS = 1e-12


def _check_vectors(vectors, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_events, d]; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has {x.shape[1]} columns but the detector was fitted on {dim}")
    return x


def _window_sums(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of rows lo..hi-1 for each pair, from a cumulative sum with a leading zero row."""
    return cum[hi] - cum[lo]


def _js_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.maximum(b, _EPS)), 0.0).sum(axis=-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class MigrationDetector:
    """Online interest-migration detector for sequences of per-event vectors (oldest first).

    Parameters
    ----------
    short : events in the recent window.
    long : most events in the reference window (the user's history before the recent window).
    false_alarm : target share of time-shuffled (null) sequences with any alarm.
    statistic : "shift", "js" or "cusum" (see the module docstring).
    min_history : fewest reference events before a score is given (NaN before).
    n_null : shuffled copies of each calibration sequence.
    drift : CUSUM allowance subtracted per event (statistic="cusum" only).
    smoothing : pseudo-count mass mixed into JS distributions so divergences stay finite.
    null : "shuffle" (default) calibrates on time-shuffled copies; "as-is" calibrates on the
        sequences in their real order, treating the ordinary ups and downs of real histories as
        noise (then false_alarm is the share of *real* sequences with any alarm).
    seed : random seed of the shuffles.
    """

    def __init__(self, short: int = 10, long: int = 50, false_alarm: float = 0.05, statistic: str = "shift",
                 min_history: int = 20, n_null: int = 5, drift: float = 0.5, smoothing: float = 0.01,
                 null: str = "shuffle", seed: int = 0):
        self.short = short
        self.long = long
        self.false_alarm = false_alarm
        self.statistic = statistic
        self.min_history = min_history
        self.n_null = n_null
        self.drift = drift
        self.smoothing = smoothing
        self.null = null
        self.seed = seed

    # -- parameters ---------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {self.statistic!r}; choose from {STATISTICS}")
        for name in ("short", "long", "min_history", "n_null"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.min_history > self.long:
            raise ValueError(f"min_history ({self.min_history}) cannot exceed long ({self.long})")
        if self.null not in ("shuffle", "as-is"):
            raise ValueError(f"null must be 'shuffle' or 'as-is'; got {self.null!r}")
        if not 0 < self.false_alarm < 1:
            raise ValueError(f"false_alarm must lie in (0, 1); got {self.false_alarm!r}")

    # -- scoring --------------------------------------------------------------------------
    def _sums(self, x: np.ndarray) -> tuple:
        """Running sums of one history, shared by all its segments (one pass, not one per restart)."""
        if self.statistic == "js":
            p = x / np.maximum(x.sum(axis=1, keepdims=True), _EPS)
            return np.vstack([np.zeros((1, x.shape[1])), np.cumsum(p, axis=0)]), None
        return (np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)]),
                np.concatenate([[0.0], np.cumsum((x * x).sum(axis=1))]))

    def _segment_scores(self, x: np.ndarray, start: int, sums: tuple | None = None) -> np.ndarray:
        """Scores of events start..n-1 with the reference restricted to events >= start."""
        n = len(x)
        out = np.full(n - start, np.nan)
        t = np.arange(start, n)
        hi = t - self.short + 1                      # reference ends where the recent window begins
        lo = np.maximum(start, hi - self.long)
        ok = hi - lo >= self.min_history
        if not ok.any():
            return out
        t, hi, lo = t[ok], hi[ok], lo[ok]
        n_ref = (hi - lo)[:, None].astype(float)
        cum, sq = self._sums(x) if sums is None else sums
        if self.statistic == "js":
            d = x.shape[1]
            recent = _window_sums(cum, hi, t + 1) / self.short
            ref = _window_sums(cum, lo, hi) / n_ref
            a = self.smoothing
            out[ok] = _js_bits((1 - a) * recent + a / d, (1 - a) * ref + a / d)
            return out
        mean_ref = _window_sums(cum, lo, hi) / n_ref
        # total variance (trace of the covariance) of the reference window, unbiased
        var_ref = (_window_sums(sq, lo, hi) / n_ref[:, 0] - (mean_ref ** 2).sum(axis=1)) \
            * n_ref[:, 0] / np.maximum(n_ref[:, 0] - 1, 1)
        var_ref = np.maximum(var_ref, 1e-6)
        if self.statistic == "shift":
            recent = _window_sums(cum, hi, t + 1) / self.short
            gap = ((recent - mean_ref) ** 2).sum(axis=1)
            out[ok] = gap / (var_ref * (1.0 / self.short + 1.0 / n_ref[:, 0]))
            return out
        # cusum: surprise of each event against the reference that precedes its recent window
        surprise = ((x[t] - mean_ref) ** 2).sum(axis=1) / var_ref - 1.0 - self.drift
        s, acc = np.empty(len(t)), 0.0
        for i, v in enumerate(surprise):
            acc = max(0.0, acc + v)
            s[i] = acc
        out[ok] = s
        return out

    def _run(self, x: np.ndarray, threshold: float | None) -> tuple[np.ndarray, list[int]]:
        """Scores with restarts after every alarm (no alarms when threshold is None)."""
        scores = np.full(len(x), np.nan)
        alarms: list[int] = []
        start, sums = 0, self._sums(x)
        while start < len(x):
            seg = self._segment_scores(x, start, sums)
            keep = alarms[-1] + 1 if alarms else 0    # an alarm keeps the score that raised it
            scores[keep:] = seg[keep - start:]
            if threshold is None:
                break
            above = np.flatnonzero(seg > threshold)
            if not len(above):
                break
            t = start + int(above[0])
            alarms.append(t)
            start = t - self.short + 1           # the new regime began with the recent window
        return scores, alarms

    # -- public API -----------------------------------------------------------------------
    def fit(self, sequences) -> "MigrationDetector":
        """Calibrate `threshold_` on time-shuffled copies of `sequences` (list of [n_events, d])."""
        self._check_params()
        if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            raise ValueError("fit wants a list of sequences; wrap a single [n_events, d] array in a list")
        seqs = [_check_vectors(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
        if not seqs:
            raise ValueError("fit needs at least one sequence")
        dims = {s.shape[1] for s in seqs}
        if len(dims) > 1:
            raise ValueError(f"all sequences must have the same number of columns; got {sorted(dims)}")
        if self.statistic == "js" and any((s < 0).any() for s in seqs):
            raise ValueError("statistic='js' needs non-negative rows (topic distributions or one-hots)")
        rng = np.random.default_rng(self.seed)
        maxima = []
        copies = 1 if self.null == "as-is" else self.n_null
        for s in seqs:
            for _ in range(copies):
                order = np.arange(len(s)) if self.null == "as-is" else rng.permutation(len(s))
                sc = self._segment_scores(s[order], 0)
                if np.isfinite(sc).any():
                    maxima.append(float(np.nanmax(sc)))
                else:
                    maxima.append(-np.inf)        # too short to score: can never alarm
        usable = int(np.isfinite(maxima).sum())
        if usable == 0:
            need = self.short + self.min_history
            raise ValueError(f"no calibration sequence is long enough to score (need >= {need} events)")
        self.null_maxima_ = np.asarray(maxima)
        self.threshold_ = float(np.quantile(self.null_maxima_, 1.0 - self.false_alarm))
        self.n_features_in_ = dims.pop()
        self.n_calibration_ = len(maxima)
        return self

    def _fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise RuntimeError("MigrationDetector is not fitted; call fit(sequences) first")

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Migration score at every event, shape [n_events]; NaN where the history is too short.

        Reference windows restart after each detected migration, as in `detect`.
        """
        self._fitted()
        x = _check_vectors(vectors, dim=self.n_features_in_)
        return self._run(x, self.threshold_)[0]

    def detect(self, vectors: np.ndarray) -> list[int]:
        """Event indices where a migration is detected (the event that raised the alarm)."""
        self._fitted()
        x = _check_vectors(vectors, dim=self.n_features_in_)
        return self._run(x, self.threshold_)[1]

    def change_points(self, vectors: np.ndarray) -> list[int]:
        """Estimated first event of each new regime: alarm index - short + 1."""
        return [max(0, t - self.short + 1) for t in self.detect(vectors)]


class OfflineChangePointDetector:
    """Offline reference: binary segmentation (the `ruptures` library, l2 cost) over the whole
    sequence. It sees future events, so it finds *where* a regime changed, not *when* it could
    have been noticed; it is not an online detector.

    The split gain (cost of one segment minus cost of two) is divided by the sequence's total
    variance so one penalty serves narrow and eclectic users alike. fit() sets `threshold_` to
    the (1 - false_alarm) quantile of the best single-split gain on time-shuffled copies: a share
    `false_alarm` of null sequences then get any change point.
    """

    def __init__(self, false_alarm: float = 0.05, min_size: int = 10, n_null: int = 5, seed: int = 0):
        self.false_alarm = false_alarm
        self.min_size = min_size
        self.n_null = n_null
        self.seed = seed

    @staticmethod
    def _scaled(x: np.ndarray) -> np.ndarray:
        var = ((x - x.mean(axis=0)) ** 2).sum(axis=1).mean()
        return x / np.sqrt(max(var, 1e-12))

    def _best_gain(self, x: np.ndarray) -> float:
        import ruptures as rpt

        if len(x) < 2 * self.min_size:
            return -np.inf
        algo = rpt.Binseg(model="l2", min_size=self.min_size, jump=1).fit(x)
        (bkp, _end) = algo.predict(n_bkps=1)
        return float(algo.cost.sum_of_costs([len(x)]) - algo.cost.sum_of_costs([bkp, len(x)]))

    def fit(self, sequences) -> "OfflineChangePointDetector":
        if not 0 < self.false_alarm < 1:
            raise ValueError(f"false_alarm must lie in (0, 1); got {self.false_alarm!r}")
        seqs = [_check_vectors(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
        if not seqs:
            raise ValueError("fit needs at least one sequence")
        rng = np.random.default_rng(self.seed)
        gains = [self._best_gain(self._scaled(s[rng.permutation(len(s))])) for s in seqs for _ in range(self.n_null)]
        if not np.isfinite(gains).any():
            raise ValueError(f"no calibration sequence has >= {2 * self.min_size} events")
        self.null_gains_ = np.asarray(gains)
        self.threshold_ = float(np.quantile(self.null_gains_, 1.0 - self.false_alarm))
        self.n_features_in_ = seqs[0].shape[1]
        return self

    def detect(self, vectors: np.ndarray) -> list[int]:
        """First event of each new regime (the change points), in order."""
        import ruptures as rpt

        if not hasattr(self, "threshold_"):
            raise RuntimeError("OfflineChangePointDetector is not fitted; call fit(sequences) first")
        x = self._scaled(_check_vectors(vectors, dim=self.n_features_in_))
        if len(x) < 2 * self.min_size:
            return []
        bkps = rpt.Binseg(model="l2", min_size=self.min_size, jump=1).fit(x).predict(pen=self.threshold_)
        return [int(b) for b in bkps[:-1]]
