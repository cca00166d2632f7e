"""Calibrated, model-agnostic 50 % and 80 % bands from each model's own realised errors.

Every model's point forecast gets its bands from this one layer, so a band means the same thing
whichever model serves:

* **Scale that does not drift with price.** An error is the log return from the point forecast to
  the realised close, divided by the series' recent volatility ``sigma`` (EWMA of one-step log
  returns at the moment the forecast was issued): ``z = log(y / yhat) / sigma``. A band is then
  ``yhat * exp(q * sigma_now)``, so it widens when the market does, at any price level.
* **Volatility term structure.** Volatility mean-reverts: after a storm the next days are calmer
  than the recent EWMA says. Step ``h`` is therefore normalised by the GARCH(1,1)-style average
  variance over its path, ``s_h^2 = sigma_L^2 + m_h (sigma^2 - sigma_L^2)`` with
  ``m_h = (1 - p^h) / (h (1 - p))``, ``p = 0.5 ** (1 / halflife)``: a shock decays with the same
  half-life the EWMA forgets it (Andersen, Bollerslev, Christoffersen & Diebold 2006, §3.6, the
  GARCH variance forecast reverting to its long-run level), so h=1 uses the recent ``sigma``
  and long steps lean toward the long-run ``sigma_L``. ``sigma_L`` is learned in the state: an
  EWMA over issues (``LONG_ISSUES`` half-life) of the ``sigma`` each forecast was issued with,
  so every caller keeps passing one ``sigma`` per forecast.
* **Per horizon step.** Step ``h`` keeps its own window of the last ``window`` normalised errors;
  the band's edges are that window's empirical quantiles (a rolling split-conformal interval).
* **Adaptive conformal inference** (Gibbs & Candès 2021): each step and level carries its own
  miscoverage ``alpha_t``; after every realised outcome ``alpha_t += gamma * (alpha - miss)``, so a
  band that keeps missing widens and one that always covers narrows, which holds the nominal
  level through volatility breaks that a fixed window only catches up with slowly. Step ``h``
  moves by ``gamma * sqrt(h)``: its outcomes arrive ``h`` candles late and overlap ``h - 1``
  candles in ``h`` (about ``T / h`` independent signals in ``T``), and ACI's long-run coverage
  error shrinks as ``1 / (gamma T)`` (Gibbs & Candès 2021, Prop. 4.1), so a constant step left the
  longest steps over-covering for months (Wang & Hyndman 2024, arXiv 2410.13115, show the
  multi-step bound growing with the horizon); ``sqrt(h)`` rather than ``h`` keeps the band's
  jitter at long steps in check.
* **Fallback.** A step with fewer than ``MIN_RESIDUALS`` errors uses a random-walk band
  ``z_level * sigma * sqrt(h)`` on the same scale (``source="volatility"``), never the model's own.

The state is a small JSON document per model and series (``DATA_DIR/bands/<SLUG>/<tf>/<model>.json``)
written atomically; the evaluation engine seeds it from backtest errors and the live scorer
updates it as candles close (``update_bands``). It also counts realised coverage, so each
published band can state its level and how often it has held.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import DataValidationError, ModelError
from ..fsutil import atomic_write_text, safe_child
from ..storage.base import CandleStore
from ..symbols import slug
from ..timeframes import Timeframe, add, parse_timeframe

__all__ = [
    "LEVELS", "WINDOW", "GAMMA", "MIN_RESIDUALS", "VOL_ROWS", "BandOutcome", "LevelStats", "BandState",
    "band_halflife", "sigma_of", "new_band_state", "fit_bands", "update_bands", "apply_bands",
    "LONG_ISSUES", "aci_step", "band_arrays", "band_columns", "band_frame", "band_scale", "band_summary", "band_path", "save_band_state", "load_band_state", "serve_bands", "sigma_at",
]

log = logging.getLogger(__name__)

LEVELS: tuple[float, ...] = (0.5, 0.8)
WINDOW = 200  # errors kept per step: months of 1h origins, most of a year of 1d
GAMMA = 0.02  # ACI step size (Gibbs & Candès use 0.005 over thousands of steps; ours are fewer)
MIN_RESIDUALS = 10
VOL_ROWS = 200  # closes apply_bands wants to estimate sigma (>= 4 half-lives of a 1h horizon)
LONG_ISSUES = 100  # half-life, in issued forecasts, of the long-run volatility sigma_L
_ALPHA_FLOOR = 0.002
BandSource = Literal["conformal", "volatility"]


def band_halflife(horizon: int) -> float:
    """EWMA half-life in candles: volatility over about one forecast horizon (at least 12)."""
    return float(max(12, int(horizon)))


def sigma_of(closes: np.ndarray | Sequence[float], halflife: float) -> float:
    """EWMA standard deviation of one-step log returns of ``closes`` (its last value weighs most)."""
    y = np.asarray(closes, dtype="float64")
    y = y[np.isfinite(y) & (y > 0)]
    if len(y) < 3:
        raise ModelError("need at least 3 positive closes to estimate volatility")
    r = np.diff(np.log(y))
    weights = 0.5 ** (np.arange(len(r))[::-1] / halflife)
    sigma = float(np.sqrt(np.sum(weights * r * r) / np.sum(weights)))
    return max(sigma, 1e-8)  # a flat series must still give a (tiny) band, not a division by 0


@dataclass(frozen=True)
class BandOutcome:
    """One realised forecast point: what the live scorer (or a backtest) feeds back.

    ``covered`` maps a level to whether the band *served* at that level held; leave it empty and
    the current state decides (an approximation for outcomes whose served band is unknown).
    """

    step: int
    yhat: float
    y: float
    sigma: float
    covered: dict[float, bool] | None = None


class LevelStats(BaseModel):
    """ACI miscoverage per step and realised coverage of one level."""

    model_config = ConfigDict(extra="forbid")

    level: float = Field(gt=0, lt=1)
    alpha_t: list[float]
    scored: int = Field(default=0, ge=0)
    covered: int = Field(default=0, ge=0)

    @property
    def coverage(self) -> float | None:
        return self.covered / self.scored if self.scored else None


class BandState(BaseModel):
    """Everything the band layer learns for one model on one series (JSON-able)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 2  # 2 adds sigma_long; a version-1 file loads with none learned yet
    model: str
    horizon: int = Field(ge=1)
    halflife: float = Field(gt=0)
    window: int = Field(default=WINDOW, ge=MIN_RESIDUALS)
    gamma: float = Field(default=GAMMA, ge=0, lt=1)
    residuals: list[list[float]]  # per step (index h-1): normalised errors, oldest first
    levels: list[LevelStats]
    sigma_long: float | None = Field(default=None, gt=0)  # long-run volatility (None: not learned yet)
    updated_at: int | None = None


def new_band_state(model: str, horizon: int, *, window: int = WINDOW, gamma: float = GAMMA) -> BandState:
    return BandState(
        model=model, horizon=horizon, halflife=band_halflife(horizon), window=window, gamma=gamma,
        residuals=[[] for _ in range(horizon)],
        levels=[LevelStats(level=lv, alpha_t=[1 - lv] * horizon) for lv in LEVELS],
    )


def fit_bands(model: str, horizon: int, outcomes: Sequence[BandOutcome], **kwargs: float) -> BandState:
    """A state learned from a batch of (backtest) outcomes, oldest first."""
    return update_bands(new_band_state(model, horizon, **kwargs), outcomes)  # type: ignore[arg-type]


def _quantiles(z: np.ndarray, alpha: float) -> tuple[float, float]:
    """Lower (alpha/2, rounded down) and upper (1 - alpha/2, rounded up) order statistics of the
    sorted ``z``: numpy's ``method="lower"``/``"higher"`` without re-sorting per level."""
    alpha = min(max(alpha, _ALPHA_FLOOR), 1.0)
    last = len(z) - 1
    lo = float(z[int(math.floor(alpha / 2 * last))])
    hi = float(z[int(math.ceil((1 - alpha / 2) * last))])
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _edges(state: BandState, step: int, alpha: float, ordered: np.ndarray | None = None) -> tuple[float, float] | None:
    """Quantiles of step ``step``'s normalised errors for miscoverage ``alpha`` (None: too few)."""
    window = state.residuals[step - 1]
    if len(window) < MIN_RESIDUALS:
        return None
    return _quantiles(ordered if ordered is not None else np.sort(window), alpha)


def band_scale(state: BandState, step: int, sigma: float) -> float:
    """The scale of step ``step``'s errors for a forecast issued with recent volatility ``sigma``:
    the mean per-candle variance over the path, reverting from ``sigma`` toward ``sigma_long``."""
    if state.sigma_long is None or step <= 1:
        return sigma
    p = 0.5 ** (1.0 / state.halflife)
    recent_share = (1.0 - p ** step) / (step * (1.0 - p))
    return math.sqrt(state.sigma_long ** 2 + recent_share * (sigma * sigma - state.sigma_long ** 2))


def _band(state: BandState, stats: LevelStats, step: int, yhat: float, sigma: float,
          ordered: np.ndarray | None = None) -> tuple[float, float]:
    edges = _edges(state, step, stats.alpha_t[step - 1], ordered)
    if edges is None:
        half = NormalDist().inv_cdf(0.5 + stats.level / 2) * math.sqrt(step)
        edges = (-half, half)
    scale = band_scale(state, step, sigma)
    lo, hi = yhat * math.exp(edges[0] * scale), yhat * math.exp(edges[1] * scale)
    return min(lo, yhat), max(hi, yhat)


def band_arrays(state: BandState, yhat: np.ndarray, sigma: float) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Per level: lower and upper edges for point forecasts ``yhat`` (step = position + 1), nested."""
    out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    ordered = [np.sort(state.residuals[i]) for i in range(len(yhat))]
    for stats in sorted(state.levels, key=lambda s: s.level):
        edges = np.array([_band(state, stats, i, float(v), sigma, ordered[i - 1]) for i, v in enumerate(yhat, start=1)])
        lo, hi = edges[:, 0], edges[:, 1]
        if out:  # a wider level never sits inside a narrower one
            inner = out[max(out)]
            lo, hi = np.minimum(lo, inner[0]), np.maximum(hi, inner[1])
        out[stats.level] = (lo, hi)
    return out


def _copy(state: BandState) -> BandState:
    """A cheap deep copy (pydantic's deep copy is most of a backtest's calibration time)."""
    levels = [LevelStats.model_construct(level=s.level, alpha_t=list(s.alpha_t), scored=s.scored, covered=s.covered)
              for s in state.levels]
    return state.model_copy(update={"residuals": [list(w) for w in state.residuals], "levels": levels})


def aci_step(gamma: float, step: int) -> float:
    """ACI step size of horizon step ``step`` (see the module docstring: ``gamma * sqrt(h)``)."""
    return gamma * math.sqrt(step)


def _long_run(previous: float | None, sigma: float) -> float:
    """EWMA of issue-time variances: the level a volatility shock decays toward."""
    if previous is None:
        return sigma
    keep = 0.5 ** (1.0 / LONG_ISSUES)
    return math.sqrt(keep * previous * previous + (1.0 - keep) * sigma * sigma)


def update_bands(state: BandState, outcomes: Sequence[BandOutcome], now_ms: int | None = None) -> BandState:
    """A new state after ``outcomes`` realised (oldest first); the input is left untouched."""
    new = _copy(state)
    for out in outcomes:
        if not 1 <= out.step <= new.horizon:
            raise DataValidationError(f"band outcome step {out.step} outside 1..{new.horizon}")
        if not (out.y > 0 and out.yhat > 0 and out.sigma > 0):
            raise DataValidationError("band outcome needs positive y, yhat and sigma")
        for stats in new.levels:
            covered = (out.covered or {}).get(stats.level)
            if covered is None:
                lo, hi = _band(new, stats, out.step, out.yhat, out.sigma)
                covered = lo <= out.y <= hi
            i = out.step - 1
            step_gamma = aci_step(new.gamma, out.step)
            stats.alpha_t[i] = min(max(stats.alpha_t[i] + step_gamma * ((1 - stats.level) - (not covered)), -0.5), 1.5)
            stats.scored += 1
            stats.covered += int(covered)
        window = new.residuals[out.step - 1]
        window.append(math.log(out.y / out.yhat) / band_scale(new, out.step, out.sigma))
        del window[: max(0, len(window) - new.window)]
        if out.step == 1:  # one per issued forecast: sigma_L averages issues, not steps
            new.sigma_long = _long_run(new.sigma_long, out.sigma)
    if now_ms is not None:
        new.updated_at = now_ms
    return new


def apply_bands(points: pd.DataFrame, state: BandState | None, recent_closes: np.ndarray | Sequence[float],
                *, model: str = "", horizon: int | None = None) -> tuple[pd.DataFrame, float, BandSource]:
    """``points`` (``ts``/``yhat``, step = row order) with 80 % and 50 % bands from ``state``.

    Returns the frame (``yhat_lower``/``yhat_upper`` = 80 %, ``yhat_lower_50``/``yhat_upper_50``),
    the sigma used (feed it back in each :class:`BandOutcome`) and the band's source.
    """
    return band_frame(points["ts"].to_numpy(), points["yhat"].to_numpy(dtype="float64"), state, recent_closes,
                      model=model, horizon=horizon)


def band_columns(ts: np.ndarray, yhat: np.ndarray, state: BandState | None, recent_closes: np.ndarray | Sequence[float],
                 *, model: str = "", horizon: int | None = None) -> tuple[dict[str, np.ndarray], float, BandSource]:
    """:func:`apply_bands` on arrays, returning columns by name: the serving path, which builds no
    frame at all (a frame per model per series cost a cycle more than its bands did)."""
    steps = len(yhat)
    state = state or new_band_state(model or "unknown", max(steps, horizon or 1))
    if steps > state.horizon:
        raise ModelError(f"band state covers {state.horizon} steps, forecast has {steps}")
    sigma = sigma_of(recent_closes, state.halflife)
    yhat = np.asarray(yhat, dtype="float64")
    if not (yhat > 0).all():
        raise ModelError("a calibrated band needs a positive point forecast")
    bands = band_arrays(state, yhat, sigma)
    out = {"ts": np.asarray(ts, dtype="int64"), "yhat": yhat,
           "yhat_lower": bands[0.8][0], "yhat_upper": bands[0.8][1],
           "yhat_lower_50": bands[0.5][0], "yhat_upper_50": bands[0.5][1]}
    calibrated = all(len(state.residuals[i]) >= MIN_RESIDUALS for i in range(steps))
    return out, sigma, ("conformal" if calibrated else "volatility")


def band_frame(ts: np.ndarray, yhat: np.ndarray, state: BandState | None, recent_closes: np.ndarray | Sequence[float],
               *, model: str = "", horizon: int | None = None) -> tuple[pd.DataFrame, float, BandSource]:
    """:func:`band_columns` as one frame."""
    columns, sigma, source = band_columns(ts, yhat, state, recent_closes, model=model, horizon=horizon)
    return pd.DataFrame(columns), sigma, source


def band_summary(state: BandState | None) -> dict[str, object]:
    """What a published band states: each level and its realised coverage so far."""
    if state is None:
        return {"source": "volatility", "levels": [{"level": lv, "coverage": None, "scored": 0} for lv in LEVELS]}
    calibrated = all(len(w) >= MIN_RESIDUALS for w in state.residuals)
    return {
        "source": "conformal" if calibrated else "volatility",
        "levels": [{"level": s.level, "coverage": s.coverage, "scored": s.scored} for s in state.levels],
    }


# ---- persistence -----------------------------------------------------------------------------
def band_path(settings: Settings, symbol: str, tf: Timeframe, model: str) -> Path:
    root = Path(settings.data_dir) / "bands" / slug(symbol) / parse_timeframe(tf)
    try:
        return safe_child(root, f"{model}.json")
    except ValueError as exc:
        raise ModelError(f"invalid model name {model!r} for a band state") from exc


def save_band_state(settings: Settings, symbol: str, tf: Timeframe, state: BandState) -> Path:
    path = band_path(settings, symbol, tf, state.model)
    atomic_write_text(path, state.model_dump_json())
    return path


def load_band_state(settings: Settings, symbol: str, tf: Timeframe, model: str) -> BandState | None:
    """The stored state, None when there is none; a corrupt file is an error naming it."""
    path = band_path(settings, symbol, tf, model)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"band state {path} is unreadable: {exc}") from exc
    try:  # pydantic parses the JSON itself: ~4x faster than json.loads + validate on 200-error windows
        return BandState.model_validate_json(raw)
    except (ValueError, ValidationError) as exc:
        raise DataValidationError(f"band state {path} is corrupt: {str(exc).splitlines()[0]}") from exc


# ---- the serving path ------------------------------------------------------------------------
def serve_bands(settings: Settings, symbol: str, tf: Timeframe, model: str, ts: np.ndarray, yhat: np.ndarray,
                closes: np.ndarray | Sequence[float]) -> dict[str, np.ndarray]:
    """A model's point forecast (``ts``/``yhat``) with the calibrated bands of its stored state
    (``closes``: recent closes).

    A corrupt state file is left as it is for the operator (logged, never reset) and the forecast
    is served with the volatility band meanwhile: a band file must not take a series off the site.
    """
    try:
        state = load_band_state(settings, symbol, tf, model)
    except DataValidationError as exc:
        log.warning("%s; serving the volatility band", exc)
        state = None
    if state is not None and state.horizon < len(yhat):
        state = None
    banded, _, _ = band_columns(ts, yhat, state, closes, model=model, horizon=len(yhat))
    return banded


def sigma_at(store: CandleStore, symbol: str, tf: Timeframe, last_ts: int, horizon: int) -> float:
    """The sigma a forecast issued from candle ``last_ts`` was banded with (for :class:`BandOutcome`)."""
    start = add(int(last_ts), tf, -(VOL_ROWS - 1))
    closes = [page["close"].to_numpy() for page in store.iter_candles(symbol, tf, start, int(last_ts))]
    return sigma_of(np.concatenate(closes) if closes else np.empty(0), band_halflife(horizon))
