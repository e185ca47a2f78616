"""Market regimes: what kind of day the simulator plays, chosen per session by a schedule.

Regimes exist so a demo, a backtest or a fault rehearsal can *script* the market: a calm
week, then a crash day with a >3 % drop and an IV spike, then elevated vol while it
decays. A schedule maps dates to regimes; days it does not name are drawn from a seeded
mix, so an unscripted year still has trends, vol clusters and the odd crash. The simulator
plays the regimes it has a spec for (`REGIME_SPECS`), of `core.domain.regimes.Regime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np

from core.domain.regimes import Regime


@dataclass(frozen=True, slots=True)
class RegimeSpec:
    """How a regime moves the market (annualised numbers; drifts are per session, log)."""

    realized_vol: float  # annualised vol of the market factor over the whole session
    vix_target: float  # level VIX reverts toward during the day
    vix_half_life_min: float  # mean-reversion half-life of log VIX, in Globex minutes
    trend_range: tuple[float, float] = (0.0, 0.0)  # |drift| over regular hours, drawn uniform
    crash_range: tuple[float, float] = (0.0, 0.0)  # log drop over regular hours, drawn uniform


REGIME_SPECS: Final[Mapping[Regime, RegimeSpec]] = {
    Regime.CALM: RegimeSpec(0.11, 14.0, 3 * 1380.0),
    Regime.TRENDING: RegimeSpec(0.13, 16.0, 3 * 1380.0, trend_range=(0.006, 0.012)),
    Regime.HIGH_VOL: RegimeSpec(0.28, 27.0, 1380.0),
    Regime.CRASH: RegimeSpec(0.38, 42.0, 120.0, crash_range=(0.045, 0.07)),
}

DEFAULT_WEIGHTS: Final[Mapping[Regime, float]] = {
    Regime.CALM: 0.57,
    Regime.TRENDING: 0.30,
    Regime.HIGH_VOL: 0.12,
    Regime.CRASH: 0.01,
}


def _simulated(value: Regime | str, what: str) -> Regime:
    """`value` as a regime the simulator plays (one with a spec); `what` names it in the error."""
    try:
        regime: Regime | None = Regime(value)
    except ValueError:
        regime = None
    if regime is None or regime not in REGIME_SPECS:
        allowed = ", ".join(REGIME_SPECS)
        raise ValueError(
            f"{what} {value!r} is not a regime the simulator plays; use one of {allowed}"
        )
    return regime


class RegimeSchedule:
    """Regime per session: explicit `overrides` first, then `default`, else a seeded draw.

    `RegimeSchedule.fixed(Regime.CALM)` plays calm every day; `RegimeSchedule(seed=7)`
    plays the default mix; `overrides={date(2026, 3, 10): Regime.CRASH}` scripts a day.
    """

    def __init__(
        self,
        *,
        default: Regime | None = None,
        overrides: Mapping[date, Regime | str] | None = None,
        weights: Mapping[Regime, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.default = None if default is None else _simulated(default, "regime schedule default")
        self.overrides = {
            day: _simulated(reg, f"regime schedule: {day} ->")
            for day, reg in (overrides or {}).items()
        }
        w = dict(weights or DEFAULT_WEIGHTS)
        bad = {k: v for k, v in w.items() if not v >= 0}
        if bad or sum(w.values()) <= 0:
            raise ValueError(
                f"regime weights must be >= 0 and sum to > 0, got {w}; e.g. {{'calm': 1.0}}"
            )
        self._regimes = tuple(_simulated(k, "regime weight") for k in w)
        total = sum(w.values())
        self._cum = np.cumsum([w[k] / total for k in w])
        self.seed = seed

    @classmethod
    def fixed(
        cls, regime: Regime | str, overrides: Mapping[date, Regime | str] | None = None
    ) -> RegimeSchedule:
        return cls(default=Regime(regime), overrides=overrides)

    def regime_on(self, day: date) -> Regime:
        hit = self.overrides.get(day)
        if hit is not None:
            return hit
        if self.default is not None:
            return self.default
        u = np.random.default_rng([self.seed, day.toordinal(), 0x5E]).random()
        i = int(np.searchsorted(self._cum, u, side="right"))
        return self._regimes[min(i, len(self._regimes) - 1)]
