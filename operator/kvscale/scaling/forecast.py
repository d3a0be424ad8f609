"""The forecast term: size for the demand expected one cold start ahead (ADR 0009).

A replica asked for now serves only after its cold start, so the reactive terms, which size for
the demand measured over the last signal window, arrive late on a ramp. This term sizes for the
demand `forecast_horizon_s` ahead, by the larger of two forecasts:

* **trend** — a least-squares line through the recent demand samples (`TREND_WINDOW_S`),
  extrapolated over the horizon. Only a rise that stands out of the noise, is still going on
  and is no single step counts (see `trend_forecast`), so a flat but bursty load does not read
  as a ramp.
* **seasonal** — a profile of demand by time of day (`SEASON_BINS` bins, each blending the
  same time yesterday and the days before), learned from the ticks themselves and seeded from
  Prometheus history. The forecast is today's level times the profile's change from now to the
  horizon ("yesterday it rose 30 % in the next two minutes"), so a day busier than yesterday is
  still sized by today's level.

Demand is counted in replicas' worth at full use: KV tokens in use over one replica's pool and
prompt tokens per second over one replica's prefill rate; the term asks for the replicas that
put the forecast at the KV and prefill targets. Like every term it only ever adds capacity
through the pipeline's max; a scale-down therefore needs the forecast to agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kvscale.scaling import reasons
from kvscale.scaling.types import SEASON_BINS, ScalerState, SeasonProfile, StepResult

TREND_WINDOW_S = 300.0  # the demand samples a trend is fitted through (5 policy minutes)
MIN_TREND_SAMPLES = 6  # fewer points do not make a line worth extrapolating
MAX_DEMAND_SAMPLES = 64  # kept at most (bounded status: a 5 s interval fills the window with 61)
TREND_CONFIDENCE_SIGMAS = 2.0  # slope counted beyond this many standard errors (≈ 95 %)
SEASON_S = 86_400.0  # one day
SEASON_BIN_S = SEASON_S / SEASON_BINS
SEASON_BLEND_FRAC = 0.5  # weight of the newest day in a bin (yesterday 1/2, the day before 1/4…)


@dataclass(frozen=True)
class Demand:
    """Demand in replicas' worth at full use (None: that signal is unknown)."""

    kv_units: float | None
    prefill_units: float | None


def season_bin(t_s: float) -> int:
    return int((t_s % SEASON_S) // SEASON_BIN_S)


def fold_sample(profile: SeasonProfile, t_s: float, demand: Demand) -> SeasonProfile:
    """Add one tick's demand to the open bin; on entering a new bin, blend the closed one in.
    An unknown (or censored) demand adds nothing: it is no evidence of a quiet time of day."""
    index = season_bin(t_s)
    if profile.open_bin is not None and index != profile.open_bin:
        profile = _close_bin(profile)
    if profile.open_bin != index:
        profile = replace(profile, open_bin=index)
    kv, prefill = demand.kv_units, demand.prefill_units
    return replace(
        profile,
        open_kv_sum=profile.open_kv_sum + (kv or 0.0),
        open_kv_count=profile.open_kv_count + (kv is not None),
        open_prefill_sum=profile.open_prefill_sum + (prefill or 0.0),
        open_prefill_count=profile.open_prefill_count + (prefill is not None),
    )


def seed_profile(samples: Sequence[tuple[float, Demand]]) -> SeasonProfile:
    """A profile from a history (e.g. Prometheus `query_range`), oldest first."""
    profile = SeasonProfile()
    for t_s, demand in samples:
        profile = fold_sample(profile, t_s, demand)
    return profile


def _close_bin(profile: SeasonProfile) -> SeasonProfile:
    index = profile.open_bin
    if index is None:
        return SeasonProfile(profile.kv_units, profile.prefill_units)
    kv, prefill = profile.kv_units, profile.prefill_units
    if profile.open_kv_count > 0:
        kv = _blend(kv, index, profile.open_kv_sum / profile.open_kv_count)
    if profile.open_prefill_count > 0:
        prefill = _blend(prefill, index, profile.open_prefill_sum / profile.open_prefill_count)
    return SeasonProfile(kv_units=kv, prefill_units=prefill)


def _blend(bins: tuple[float | None, ...], index: int, mean: float) -> tuple[float | None, ...]:
    old = bins[index]
    new = mean if old is None else SEASON_BLEND_FRAC * mean + (1 - SEASON_BLEND_FRAC) * old
    # 4 significant digits: the profile is an estimate, and it is stored compactly in status
    return (*bins[:index], float(f"{new:.4g}"), *bins[index + 1 :])


def profile_at(bins: Sequence[float | None], t_s: float) -> float | None:
    """The profile at `t_s`, linear between bin centres (None when either neighbour is unseen)."""
    position = (t_s % SEASON_S) / SEASON_BIN_S - 0.5
    lower = math.floor(position)
    frac = position - lower
    a, b = bins[lower % SEASON_BINS], bins[(lower + 1) % SEASON_BINS]
    if a is None or b is None:
        return None
    return a + (b - a) * frac


def seasonal_forecast(
    bins: Sequence[float | None], now_s: float, horizon_s: float, level: float
) -> tuple[float, float] | None:
    """(forecast, growth factor): today's level times the profile's change over the horizon.

    The growth is the largest over the horizon (checked at its end and at each bin centre
    inside it), so a ramp that starts within the horizon is not averaged away.
    """
    now_value = profile_at(bins, now_s)
    if now_value is None or now_value <= 0:
        return None
    ahead = [profile_at(bins, now_s + horizon_s)]
    first = math.ceil((now_s % SEASON_S) / SEASON_BIN_S - 0.5)
    centre_s = now_s - (now_s % SEASON_S) + (first + 0.5) * SEASON_BIN_S
    while centre_s < now_s + horizon_s:
        ahead.append(profile_at(bins, centre_s))
        centre_s += SEASON_BIN_S
    known = [value for value in ahead if value is not None]
    if not known:
        return None
    growth = max(known) / now_value
    return level * growth, growth


def trend_forecast(
    samples: Sequence[tuple[float, float]], now_s: float, horizon_s: float
) -> tuple[float, float] | None:
    """(forecast, slope per second counted) from a line through the window's samples.

    The newest level plus the slope that is sure to be there times the horizon. Two spans are
    tried, the whole window and its newer half (a rise that began inside the window: flat, then
    climbing, which neither one line nor one step fits), and the larger sure slope counts:

    * the whole window counts the smaller of its lower confidence bound (slope − 2 standard
      errors) and the slope of its newer half — the rise must still be going on (a burst that
      arrived and stays, or a fleet that grew out of saturation, has a flat newer half), and an
      accelerating rise (a queue building up) counts at the window's average pace;
    * the newer half counts its own lower confidence bound.

    Noise is no trend, and neither is a step: on each span the line must fit the samples
    better than the best single step does. None when no rise is sure or there are too few
    samples. A falling trend is not extrapolated: the reactive terms size for the demand now,
    and a forecast below it could only ever be outvoted.
    """
    inside = [(t, y) for t, y in samples if now_s - t <= TREND_WINDOW_S]
    newer_half = inside[len(inside) // 2 :]
    whole, newer = _sure_slope(inside), _fit_line(newer_half)
    sure = [_sure_slope(newer_half)]
    if whole is not None and newer is not None:
        sure.append(min(whole, newer[0]))
    counted = max((slope for slope in sure if slope is not None), default=0.0)
    if counted <= 0:
        return None
    return inside[-1][1] + counted * horizon_s, counted


def _sure_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """The slope's lower confidence bound, when a line beats every single step (else None)."""
    fit = _fit_line(points)
    if fit is None:
        return None
    slope, stderr, residual = fit
    if residual >= _best_step_residual([y for _, y in points]):
        return None
    return slope - TREND_CONFIDENCE_SIGMAS * stderr


def _best_step_residual(values: Sequence[float]) -> float:
    """Squared error of the best two-level step through `values` (split anywhere)."""
    best = math.inf
    for split in range(1, len(values)):
        best = min(best, _sse(values[:split]) + _sse(values[split:]))
    return best


def _sse(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values)


def _fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float, float] | None:
    """Least squares through `points`: (slope, its standard error, squared error)."""
    n = len(points)
    if n < MIN_TREND_SAMPLES // 2:
        return None
    mean_t = sum(t for t, _ in points) / n  # centred: epoch seconds lose no digits
    mean_y = sum(y for _, y in points) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    if sxx <= 0:
        return None
    slope = sum((t - mean_t) * (y - mean_y) for t, y in points) / sxx
    residual = sum((y - (mean_y + slope * (t - mean_t))) ** 2 for t, y in points)
    return slope, math.sqrt(residual / max(1, n - 2) / sxx), residual


def record_demand(state: ScalerState, now_s: float, demand: Demand) -> ScalerState:
    """Remember this tick's demand: the trend window's samples and the seasonal profile."""
    kept = tuple(sample for sample in state.demand_samples if now_s - sample[0] <= TREND_WINDOW_S)
    sample = (now_s, demand.kv_units, demand.prefill_units)
    profile = fold_sample(state.season or SeasonProfile(), now_s, demand)
    samples = (*kept, sample)[-MAX_DEMAND_SAMPLES:]
    return replace(state, demand_samples=samples, season=profile)


def series(
    samples: Sequence[tuple[float, float | None, float | None]], which: int
) -> list[tuple[float, float]]:
    """(t, value) of one demand series (1: KV, 2: prefill), unknown values left out."""
    return [(s[0], value) for s in samples for value in (s[which],) if value is not None]


def sure_fall(state: ScalerState, now_s: float) -> float | None:
    """The slowest sure fall (per second, < 0) of the demand, when every known series falls.

    The mirror of the trend's rise test (`trend_forecast` on the negated series: beyond two
    standard errors, still going on, no single step), required of the KV and the prompt
    series alike — a replica sized by the one that does not fall is still needed. None when
    any known series does not surely fall, or none is known.
    """
    falls: list[float] = []
    for which in (1, 2):
        points = series(state.demand_samples, which)
        if not points:
            continue
        mirrored = trend_forecast([(t, -y) for t, y in points], now_s, 0.0)
        if mirrored is None:
            return None
        falls.append(-mirrored[1])
    return max(falls) if falls else None


@dataclass(frozen=True)
class Forecast:
    """One series' forecast one horizon ahead, and what drove it."""

    units: float
    source: str  # "trend" | "seasonal"
    detail: str


def forecast_series(
    state: ScalerState, which: int, now_s: float, horizon_s: float
) -> Forecast | None:
    """The larger of the trend and seasonal forecasts of one demand series, if either rises."""
    points = series(state.demand_samples, which)
    if not points:
        return None
    level = points[-1][1]
    best: Forecast | None = None
    trend = trend_forecast(points, now_s, horizon_s)
    if trend is not None and trend[0] > level:
        best = Forecast(trend[0], "trend", f"trend +{trend[1] * 60:.2f}/min")
    profile = state.season
    if profile is not None:
        bins = profile.kv_units if which == 1 else profile.prefill_units
        seasonal = seasonal_forecast(bins, now_s, horizon_s, level)
        if (
            seasonal is not None
            and seasonal[0] > level
            and (best is None or seasonal[0] > best.units)
        ):
            best = Forecast(seasonal[0], "seasonal", f"daily profile ×{seasonal[1]:.2f}")
    return best


def propose_forecast_units(
    forecasts: Sequence[tuple[str, Forecast | None, float]], horizon_s: float
) -> StepResult | None:
    """The replicas that put each forecast at its target; the largest wins the message."""
    best: tuple[int, str] | None = None
    for name, forecast, target in forecasts:
        if forecast is None or target <= 0:
            continue
        needed = max(0, math.ceil(forecast.units / target - 1e-9))
        message = (
            f"forecast {name} {forecast.units:.2f} replica(s) in {horizon_s:.0f}s by"
            f" {forecast.detail}, at target {target:.2f} → {needed}"
        )
        if best is None or needed > best[0]:
            best = (needed, message)
    if best is None:
        return None
    return StepResult("forecast", best[0], reasons.FORECAST, best[1])
