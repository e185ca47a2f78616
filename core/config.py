"""One typed settings tree for all of V6.

Every threshold of every rule and limit lives here, so that a trader can read the
whole behaviour of the system in one file (`v6.example.toml`) and change it without
touching code. Precedence, lowest to highest: defaults < `v6.toml` < `V6_*` environment
variables (nested with `__`, e.g. `V6_BROKER__PORT=4002`) < explicit keyword arguments.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.domain.timezones import MARKET_TZ

CONFIG_ENV_VAR = "V6_CONFIG"
DEFAULT_CONFIG_FILE = "v6.toml"
LIVE_PORTS = frozenset({4001, 7496})
LIVE_OPT_IN_ENV = "V6_BROKER__LIVE_TRADING_ENABLED"

# Upper bounds of the settings: generous for any careful trader, but finite, so that a
# typo (or `inf`) can never switch a limit off. The ranges are printed in v6.example.toml.
MAX_CLIENT_ID = 2**31 - 1  # IB's clientId is a signed 32-bit integer
MAX_DTE = 365  # days to expiry: V6 trades listed monthlies, not LEAPS
MAX_WING_WIDTH = 500  # strike points
MAX_RULE_PCT = 1000  # exit-rule thresholds, % of the entry credit
MAX_VIX = 150  # above VIX's all-time high
MAX_DELTA = 1000  # share-equivalents / 100
WingWidth = Annotated[float, Field(gt=0, le=MAX_WING_WIDTH)]
ProfitPct = Annotated[float, Field(gt=0, le=100)]


class _Section(BaseModel):
    """Base for config sections: unknown keys are errors (a typo must never be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BrokerKind(StrEnum):
    SIM = "sim"
    IB = "ib"


class MarketDataType(StrEnum):
    LIVE = "live"
    FROZEN = "frozen"
    DELAYED = "delayed"
    DELAYED_FROZEN = "delayed_frozen"

    @property
    def ib_code(self) -> int:
        """The integer IB's reqMarketDataType expects."""
        return {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}[self.value]


class BrokerSettings(_Section):
    kind: BrokerKind = Field(
        BrokerKind.SIM, description="sim = in-process simulator; ib = IB Gateway/TWS"
    )
    host: str = Field("127.0.0.1", description="Gateway host")
    port: int = Field(
        4002, ge=1, le=65535, description="Gateway port (4002 paper gateway, 4001 live)"
    )
    client_id_min: int = Field(
        100, ge=0, le=MAX_CLIENT_ID, description="Lowest clientId V6 may use"
    )
    client_id_max: int = Field(
        199, ge=0, le=MAX_CLIENT_ID, description="Highest clientId V6 may use"
    )
    account: str | None = Field(None, description="Account code; None = the only managed account")
    market_data_type: MarketDataType = Field(
        MarketDataType.DELAYED, description="live|frozen|delayed|delayed_frozen"
    )
    allow_entries_on_delayed_data: bool = Field(
        False,
        description="Open positions and walk price ladders on delayed quotes (IB type 3/4, "
        "15-20 min old); false: exits still go out, at natural, and entries are refused",
    )
    paper: bool = Field(True, description="True for a paper account")
    live_trading_enabled: bool = Field(
        False,
        description="Explicit opt-in for live ports/accounts; honoured only when written in "
        "the config file (the environment alone cannot turn it on)",
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds")
    request_timeout_s: float = Field(
        15.0, gt=0, le=300, description="seconds per read-only request"
    )
    snapshot_timeout_s: float = Field(
        5.0, gt=0, le=120, description="seconds to wait for a quote snapshot"
    )
    reconnect_max_attempts: int = Field(5, ge=0, le=100, description="attempts before giving up")
    reconnect_backoff_s: float = Field(
        1.0, gt=0, le=300, description="first back-off; doubles each attempt"
    )
    market_data_lines: int = Field(
        100, ge=1, le=10_000, description="IB market-data line budget for the account"
    )
    market_data_snapshot_reserve: int = Field(
        10, ge=0, le=1000, description="lines kept free of streams so snapshots can run"
    )
    market_data_regrow_cycles: int = Field(
        12,
        ge=1,
        le=1000,
        description="clean cycles after an IB 101 before the line cap grows by one",
    )
    planned_outage_start: time = Field(
        time(23, 45),
        description="start of the daily window (market time) in which IB may be away: its "
        "nightly server reset (North America 23:45-00:45 ET) and your gateway's scheduled "
        "restart (IBC) must both fall inside; a run that cannot reach IB then ends "
        "BrokerUnavailable without counting against the breaker",
    )
    planned_outage_end: time = Field(
        time(0, 45),
        description="end of that window, market time (may be past midnight); equal to the "
        "start = no planned window",
    )
    max_messages_per_s: int = Field(
        45,
        ge=0,
        le=50,
        description="client-side pacing of API messages (IB disconnects above 50/s); "
        "0 = unpaced, only for the gateway simulator, which does not pace",
    )

    @model_validator(mode="after")
    def _client_range(self) -> Self:
        if self.client_id_max < self.client_id_min:
            raise ValueError(
                f"client_id_max ({self.client_id_max}) is below client_id_min "
                f"({self.client_id_min}); set client_id_max >= client_id_min"
            )
        if self.max_messages_per_s == 0 and self.is_live:
            raise ValueError(
                "max_messages_per_s is 0 (unpaced) on a live configuration; IB disconnects "
                "clients above 50 messages/s: set broker.max_messages_per_s between 1 and 50"
            )
        return self

    def in_planned_outage(self, at: datetime) -> bool:
        """Is `at` inside the daily planned-outage window (market time, may wrap midnight)?"""
        start, end = self.planned_outage_start, self.planned_outage_end
        t = at.astimezone(MARKET_TZ).time().replace(tzinfo=None)
        if start == end:
            return False
        if start < end:
            return start <= t < end
        return t >= start or t < end

    @property
    def is_live(self) -> bool:
        """True when this config would reach a live (real-money) account."""
        return self.kind is BrokerKind.IB and (self.port in LIVE_PORTS or not self.paper)


# Delta table roots V6 is tested on: a local directory, or an S3-compatible bucket
# (AWS S3, MinIO, R2, ...). Other deltalake schemes (gs://, az://, ...) are refused until
# tested: an untested store is not where the book should live.
REMOTE_SCHEMES = ("s3://", "s3a://")
# deltalake 1.6 commits to S3 safely only with conditional put (If-None-Match on the
# commit file, "etag"): two writers can then never both commit the same version.
S3_SAFE_CONDITIONAL_PUT = "etag"
# Storage options that say where the store is, not who may use it: shown in plain by
# `v6 config check` and `v6 doctor`; every other option (keys, tokens) is masked.
PUBLIC_STORAGE_OPTIONS = frozenset(
    {
        "aws_endpoint_url",
        "aws_endpoint",
        "endpoint_url",
        "aws_region",
        "region",
        "aws_allow_http",
        "allow_http",
        "aws_conditional_put",
        "conditional_put",
        "aws_virtual_hosted_style_request",
        "virtual_hosted_style_request",
    }
)


def storage_problems(root: str, options: Mapping[str, str]) -> list[str]:
    """Why `root` + `options` is not a safe place for the book (empty when it is)."""
    if "://" not in root:
        return [] if root.strip() else ["storage.root is empty; set a directory or s3://bucket"]
    if not root.startswith(REMOTE_SCHEMES):
        scheme = root.split("://", 1)[0]
        return [
            f"storage.root {root!r}: scheme {scheme}:// is not supported; use a local directory "
            "or s3://bucket/prefix (AWS S3, MinIO, R2 and other S3-compatible stores)"
        ]
    problems = []
    bucket = root.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        problems.append(f"storage.root {root!r} names no bucket; write s3://BUCKET/prefix")
    lowered = {k.lower(): v.strip().lower() for k, v in options.items()}
    for key in ("aws_s3_allow_unsafe_rename", "allow_unsafe_rename"):
        if lowered.get(key) in {"true", "1", "yes"}:
            problems.append(
                f"storage.storage_options.{key} = true lets two writers overwrite each "
                "other's commits (lost fills); remove it: V6 commits with conditional put"
            )
    for key in ("aws_s3_locking_provider", "locking_provider"):
        if key in lowered:
            problems.append(
                f"storage.storage_options.{key}: the DynamoDB lock is gone from deltalake "
                f'1.6; remove it and set aws_conditional_put = "{S3_SAFE_CONDITIONAL_PUT}"'
            )
    put = lowered.get("aws_conditional_put", lowered.get("conditional_put"))
    if put is not None and put != S3_SAFE_CONDITIONAL_PUT:
        problems.append(
            f"storage.storage_options.aws_conditional_put = {put!r} is not safe for concurrent "
            f'writers; set it to "{S3_SAFE_CONDITIONAL_PUT}" (or leave it out: V6 sets it)'
        )
    return problems


class StorageSettings(_Section):
    root: str = Field(
        "./data", description="Local directory or s3://bucket/prefix for Delta tables"
    )
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict, description="deltalake storage options (credentials are masked)"
    )
    reports_dir: str = Field("./reports", description="Where HTML reports are written")
    commit_retries: int = Field(
        8, ge=0, le=100, description="Retries of a conflicting Delta commit"
    )
    commit_backoff_s: float = Field(0.05, gt=0, le=60, description="first commit back-off, seconds")
    vacuum_retention_hours: int = Field(
        168, ge=0, le=8760, description="Time-travel window kept by vacuum, hours"
    )
    checkpoint_interval: int = Field(
        20,
        ge=1,
        le=1000,
        description=(
            "Commits between Delta checkpoints (new tables; maintenance updates old ones); "
            "late in a day 20 beats Delta's 100 (benchmarks/checkpoint.py)"
        ),
    )

    @model_validator(mode="after")
    def _safe_location(self) -> Self:
        """Refuse a root or options that would store the book unsafely (see the constants
        above `StorageSettings`): a wrong scheme, or S3 without conditional put."""
        problems = storage_problems(self.root, self.plain_storage_options())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def is_remote(self) -> bool:
        return "://" in self.root

    def plain_storage_options(self) -> dict[str, str]:
        """The options as deltalake wants them (secrets revealed only here)."""
        return {k: v.get_secret_value() for k, v in self.storage_options.items()}

    def masked_storage_options(self) -> dict[str, str]:
        """The options for display: where the store is (endpoint, region, flags) in plain,
        every credential masked."""
        return {
            k: v.get_secret_value() if k.lower() in PUBLIC_STORAGE_OPTIONS else "**********"
            for k, v in self.storage_options.items()
        }


class ScheduleSettings(_Section):
    timezone: str = Field(MARKET_TZ.key, description="Market time zone for schedules")
    equity_calendar: str = Field("XNYS", description="exchange_calendars code for regular hours")
    futures_calendar: str = Field(
        "CMES", description="exchange_calendars code for the futures session"
    )
    collection_every_min: int = Field(
        1, ge=1, le=1440, description="futures_collection interval, minutes"
    )
    reconciliation_every_min: int = Field(
        5, ge=1, le=1440, description="position_reconciliation interval, minutes"
    )
    trading_cycle_every_min: int = Field(
        5, ge=1, le=1440, description="trading_cycle interval, minutes"
    )
    maintenance_at: time = Field(
        time(17, 15),
        description="nightly maintenance, market time: inside the daily CME break (no collector "
        "writes) and clear of the 01:00-03:00 DST gap/repeat",
    )
    variance_analysis_at: time = Field(
        time(18, 30), description="nightly variance analysis, market time"
    )
    stale_run_after_s: int = Field(
        120, ge=1, le=86400, description="a scheduled run older than this is skipped"
    )
    serve_process_limit: int = Field(
        4, ge=1, le=64, description="max concurrent flow-run processes under serve"
    )


class AlertSettings(_Section):
    """Alerts go to Prefect notification blocks (webhook, Slack, email) named 'slug/name'.

    The blocks are created in the Prefect UI or API; V6 only names them."""

    blocks: list[str] = Field(
        [],
        max_length=10,
        description="notification blocks that receive V6's alerts, e.g. 'slack-webhook/desk'",
    )

    @field_validator("blocks")
    @classmethod
    def _slug_slash_name(cls, value: list[str]) -> list[str]:
        for name in value:
            slug, _, block = name.partition("/")
            if not slug or not block:
                raise ValueError(
                    f"alerts.blocks: {name!r} is not 'block-type-slug/block-name'; "
                    "e.g. 'custom-webhook/v6-desk' or 'slack-webhook/desk'"
                )
        return value


class UniverseSettings(_Section):
    underlyings: list[str] = Field(["SPY", "QQQ", "IWM"], min_length=1)
    futures: list[str] = Field(["ES", "NQ", "RTY"], min_length=1)
    leading_future: dict[str, str] = Field(
        {"SPY": "ES", "QQQ": "NQ", "IWM": "RTY"}, description="future that leads each underlying"
    )
    volatility_index: str = "VIX"
    futures_roll_days_before_expiry: int = Field(
        8,
        ge=0,
        le=60,
        description="roll to the next contract this many calendar days before expiry",
    )
    futures_backfill_max_hours: int = Field(
        48,
        ge=1,
        le=720,
        description="a futures collection run backfills a gap at most this far back, hours",
    )

    @field_validator("underlyings", "futures")
    @classmethod
    def _upper_unique(cls, v: list[str]) -> list[str]:
        out = [s.strip().upper() for s in v]
        if any(not s for s in out):
            raise ValueError("symbols must be non-empty strings")
        if len(set(out)) != len(out):
            raise ValueError(f"symbols must be unique, got {v}")
        return out


class StrategySettings(_Section):
    enabled: list[Literal["iron_condor", "bull_put_spread", "bear_call_spread"]] = [
        "iron_condor",
        "bull_put_spread",
        "bear_call_spread",
    ]
    target_dte: int = Field(45, ge=1, le=MAX_DTE, description="days to expiry at entry")
    dte_min: int = Field(35, ge=1, le=MAX_DTE)
    dte_max: int = Field(60, ge=1, le=MAX_DTE)
    wing_width: dict[str, WingWidth] = Field(
        {"SPY": 5.0, "QQQ": 5.0, "IWM": 3.0},
        description="strike distance between short and long, points",
    )
    default_wing_width: float = Field(5.0, gt=0, le=MAX_WING_WIDTH)
    short_delta_min: float = Field(0.16, gt=0, lt=0.5)
    short_delta_max: float = Field(0.20, gt=0, lt=0.5)
    skew_max_delta_shift: float = Field(
        0.04, ge=0, lt=0.2, description="max lean toward the rich side"
    )
    contracts_per_entry: int = Field(
        1, ge=1, le=25, description="strategy units per entry (the hard caps bound the order too)"
    )
    min_credit_to_width: float = Field(0.15, ge=0, lt=1)
    reprice_steps: int = Field(4, ge=0, le=20, description="limit reprices from mid toward natural")
    fill_timeout_s: float = Field(
        30.0, gt=0, le=600, description="cancel an unfilled entry after this"
    )
    partial_fill_policy: Literal["complete", "unwind"] = "complete"
    # -- entry pipeline: skew lean, scoring, execution (core/strategy, core/execution) --
    skew_neutral: float = Field(
        0.30,
        ge=-1,
        le=2,
        description="normalised put skew ((IV 25d put - IV 25d call) / ATM IV) that counts as "
        "ordinary (a calm equity index: ~0.3): no lean",
    )
    skew_full_lean: float = Field(
        0.20, gt=0, le=2, description="skew beyond skew_neutral that gives the full delta shift"
    )
    score_weights: dict[str, float] = Field(
        {"credit_to_width": 0.30, "prob_profit": 0.30, "iv_rank": 0.15, "regime": 0.15,
         "lead": 0.10},
        description="weights of the candidate score components (normalised to sum to 1)",
    )  # fmt: skip
    credit_to_width_full: float = Field(
        0.50, gt=0, le=1, description="credit/width at which that score component is 1"
    )
    regime_fit: dict[str, dict[str, float]] = Field(
        {
            "iron_condor": {"range_bound": 1.0, "normal": 0.8, "low_vol": 0.6, "high_vol": 0.5,
                            "trending": 0.3, "crash": 0.0, "unknown": 0.5},
            "bull_put_spread": {"range_bound": 0.6, "normal": 0.7, "low_vol": 0.5,
                                "high_vol": 0.5, "trending": 0.6, "crash": 0.0, "unknown": 0.5},
            "bear_call_spread": {"range_bound": 0.6, "normal": 0.6, "low_vol": 0.4,
                                 "high_vol": 0.6, "trending": 0.5, "crash": 0.0, "unknown": 0.5},
        },
        description="0..1 fit of each structure to each regime; 0 vetoes the entry",
    )  # fmt: skip
    lead_fit: dict[str, dict[str, float]] = Field(
        {
            "iron_condor": {"up": 0.5, "down": 0.5, "neutral": 1.0, "unknown": 0.5},
            "bull_put_spread": {"up": 1.0, "down": 0.0, "neutral": 0.6, "unknown": 0.5},
            "bear_call_spread": {"up": 0.0, "down": 1.0, "neutral": 0.6, "unknown": 0.5},
        },
        description="0..1 fit of each structure to the futures leading signal's direction",
    )  # fmt: skip
    lead_max_age_min: float = Field(
        30.0,
        gt=0,
        le=1440,
        description="a leading signal older than this counts as unknown, minutes",
    )
    min_score: float = Field(
        0.35, ge=0, le=1, description="candidates scoring below this are skipped"
    )
    entries_per_underlying: int = Field(
        1, ge=0, le=10, description="new strategies per underlying per cycle"
    )
    chain_strike_band_pct: float = Field(
        15.0,
        gt=0,
        le=50,
        description="strikes within this % of spot are quoted for a chain snapshot",
    )
    fill_poll_s: float = Field(1.0, gt=0, le=60, description="order-status poll interval, seconds")

    @model_validator(mode="after")
    def _scoring(self) -> Self:
        known = {"credit_to_width", "prob_profit", "iv_rank", "regime", "lead"}
        bad = sorted(set(self.score_weights) - known)
        if (
            bad
            or any(v < 0 for v in self.score_weights.values())
            or not any(v > 0 for v in self.score_weights.values())
        ):
            raise ValueError(
                f"strategies.score_weights {self.score_weights} must use only {sorted(known)} "
                f"with weights >= 0 and at least one > 0 (unknown: {bad})"
            )
        for name, table in (("regime_fit", self.regime_fit), ("lead_fit", self.lead_fit)):
            out = {f"{s}.{k}": v for s, t in table.items() for k, v in t.items() if not 0 <= v <= 1}
            if out:
                raise ValueError(f"strategies.{name} values must lie in [0, 1], got {out}")
        return self

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        if not self.dte_min <= self.target_dte <= self.dte_max:
            raise ValueError(
                f"target_dte ({self.target_dte}) must lie within dte_min..dte_max "
                f"({self.dte_min}..{self.dte_max})"
            )
        if self.short_delta_min > self.short_delta_max:
            raise ValueError(
                f"short_delta_min ({self.short_delta_min}) exceeds "
                f"short_delta_max ({self.short_delta_max})"
            )
        return self


class RuleSettings(_Section):
    """Thresholds of the 15 exit rules; percentages are of the entry credit (debit for longs)."""

    disabled: list[str] = Field(default_factory=list, description="rule names to switch off")
    catastrophe_drop_pct: float = Field(
        3.0, gt=0, le=50, description="underlying drop within an hour, %"
    )
    catastrophe_iv_jump_pct: float = Field(
        50.0, gt=0, le=1000, description="IV jump since entry, %"
    )
    single_leg_profit_pct: float = Field(80.0, gt=0, le=MAX_RULE_PCT)
    single_leg_loss_pct: float = Field(50.0, gt=0, le=MAX_RULE_PCT)
    single_leg_max_dte: int = Field(21, ge=0, le=MAX_DTE)
    trailing_activation_pct: float = Field(
        40.0, gt=0, le=100, description="peak profit that arms the stop, %"
    )
    trailing_giveback_ratio: float = Field(0.40, gt=0, lt=1, description="close below this x peak")
    vix_level: float = Field(35.0, gt=0, le=MAX_VIX)
    vix_rise_points: float = Field(5.0, gt=0, le=MAX_VIX)
    partial_take_profit_pct: float = Field(
        50.0, gt=0, le=100, description="REDUCE half at this profit, %"
    )
    stop_loss_pct: float = Field(200.0, gt=0, le=MAX_RULE_PCT)
    stop_loss_near_expiry_dte: int = Field(7, ge=0, le=MAX_DTE)
    stop_loss_near_expiry_pct: float = Field(50.0, gt=0, le=MAX_RULE_PCT)
    delta_limit_iron_condor: float = Field(0.30, gt=0, le=1)
    delta_limit_vertical: float = Field(0.40, gt=0, le=1)
    iv_crush_pct: float = Field(30.0, gt=0, le=100)
    iv_crush_min_profit_pct: float = Field(20.0, ge=0, le=100)
    iv_percentile_floor: float = Field(30.0, ge=0, le=100)
    iv_percentile_min_profit_pct: float = Field(20.0, ge=0, le=100)
    roll_window_max_dte: int = Field(25, ge=0, le=MAX_DTE)
    roll_must_dte: int = Field(21, ge=0, le=MAX_DTE)
    roll_target_dte: int = Field(45, ge=1, le=MAX_DTE)
    gamma_limit: float = Field(0.10, gt=0, le=10)
    gamma_max_dte: int = Field(14, ge=0, le=MAX_DTE)
    time_exit_dte: int = Field(1, ge=0, le=MAX_DTE)
    pin_risk_distance_pct: float = Field(
        1.0, ge=0, le=20, description="expiry day: a short strike this close to the underlying, %"
    )
    pin_risk_from: time = Field(
        time(15, 0), description="expiry day: close pinned short legs from this market time"
    )
    dividend_window_days: int = Field(
        5, ge=0, le=30, description="days before an ex-date when a short call is at risk"
    )
    put_extrinsic_floor: float = Field(
        0.05, ge=0, le=50, description="short ITM put extrinsic below this is at risk, $/share"
    )
    put_assignment_dte: int = Field(
        5, ge=0, le=MAX_DTE, description="DTE at or below which the put floor applies"
    )
    profit_target_pct: dict[str, ProfitPct] = Field(
        {
            "crash": 40.0,
            "high_vol": 50.0,
            "normal": 80.0,
            "low_vol": 90.0,
            "trending": 85.0,
            "range_bound": 80.0,
        },
        description="dynamic take-profit target per regime, %",
    )
    profit_target_fallback_pct: float = Field(
        50.0, gt=0, le=100, description="target when the regime is unknown"
    )
    # Regime detector (core/rules/regime.py), over daily closes of an underlying and of VIX.
    regime_lookback_bars: int = Field(
        20, ge=2, le=260, description="daily closes for trend efficiency"
    )
    regime_crash_lookback_bars: int = Field(
        5, ge=1, le=260, description="daily closes for crash drawdown"
    )
    regime_crash_vix: float = Field(
        40.0, gt=0, le=MAX_VIX, description="VIX at or above this is a crash"
    )
    regime_crash_drawdown_pct: float = Field(
        7.0, gt=0, le=100, description="fall from the recent high, %"
    )
    regime_high_vol_vix: float = Field(
        25.0, gt=0, le=MAX_VIX, description="VIX at or above this is high_vol"
    )
    regime_low_vol_vix: float = Field(
        14.0, gt=0, le=MAX_VIX, description="VIX below this is low_vol"
    )
    regime_trending_efficiency: float = Field(
        0.35, gt=0, le=1, description="abs(net move) / path length at or above this is trending"
    )
    regime_range_bound_efficiency: float = Field(
        0.15, ge=0, le=1, description="abs(net move) / path length at or below this is range_bound"
    )
    regime_max_age_days: int = Field(
        4, ge=0, le=30, description="last close older than this = unknown"
    )


class LimitSettings(_Section):
    max_portfolio_delta: float = Field(
        50.0, gt=0, le=MAX_DELTA, description="abs net delta, share-equivalents / 100"
    )
    max_underlying_delta: float = Field(25.0, gt=0, le=MAX_DELTA)
    max_concentration_pct: float = Field(
        40.0, gt=0, le=100, description="of net liquidation, per underlying"
    )
    correlation_threshold: float = Field(0.8, ge=0, le=1)
    correlation_lookback_days: int = Field(20, ge=2, le=260)
    max_correlated_exposure_pct: float = Field(60.0, gt=0, le=100)
    max_buying_power_pct: float = Field(50.0, gt=0, le=100)
    max_margin_pct: float = Field(
        50.0,
        gt=0,
        le=100,
        description="post-trade initial margin (broker what-if on the entry order), "
        "% of net liquidation; an entry above it is refused",
    )
    max_open_strategies: int = Field(20, ge=0, le=500)
    max_new_strategies_per_day: int = Field(
        5, ge=0, le=100, description="entries that filled (unfilled or cancelled ones do not count)"
    )


class BreakerSettings(_Section):
    consecutive_failures: int = Field(3, ge=1, le=20)
    daily_loss_pct: float = Field(2.0, gt=0, le=20, description="of net liquidation")
    max_rejections_per_hour: int = Field(5, ge=1, le=100)
    max_disconnect_s: float = Field(300.0, gt=0, le=3600)
    max_data_quality_failure_rate: float = Field(0.5, gt=0, le=1)
    cooldown_minutes: int = Field(30, ge=0, le=1440)
    reducing_mode: bool = Field(True, description="while OPEN, still run exit rules (exits only)")
    probe_timeout_minutes: int = Field(
        15,
        ge=1,
        le=1440,
        description="a HALF_OPEN probe that has not reported after this counts as failed",
    )


class AnalysisSettings(_Section):
    min_trades: int = Field(10, ge=1, le=100_000)
    window_days: int = Field(
        30,
        ge=1,
        le=1000,
        description="live side: the last N days, widened to the last N sessions with a live close",
    )
    weight_min: float = Field(0.5, gt=0, le=1)
    weight_max: float = Field(1.0, gt=0, le=1)
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    bootstrap_max_n: int = Field(
        2000,
        ge=10,
        le=1_000_000,
        description="resample a side of at most this many trades; above it, draw its "
        "bootstrap means from the normal approximation (CLT) to bound the cost",
    )
    weight_step_down: float = Field(
        0.1,
        gt=0,
        le=1,
        description="largest nightly cut of a strategy-type weight when live underperforms",
    )
    weight_step_up: float = Field(
        0.05,
        gt=0,
        le=1,
        description="largest nightly recovery of a strategy-type weight toward weight_max",
    )
    significance: float = Field(0.05, gt=0, lt=1)
    lead_lag_min_days: int = Field(7, ge=1, le=365)
    lead_lag_max_lag_min: int = Field(10, ge=1, le=240)
    asof_tolerance_s: int = Field(90, ge=1, le=3600)
    lead_lag_window_days: int = Field(
        20, ge=1, le=365, description="days of bars a lead-lag estimate uses"
    )
    lead_momentum_min: int = Field(
        15, ge=1, le=390, description="futures-vs-underlying momentum window, min"
    )
    lead_signal_threshold_pct: float = Field(
        0.10,
        gt=0,
        le=100,
        description="expected underlying move that makes a lead signal up/down, %",
    )
    lead_lag_min_corr: float = Field(
        0.10, ge=0, le=1, description="below this best-lag correlation a lead signal is neutral"
    )
    iv_history_days: int = Field(
        260,
        ge=20,
        le=2520,
        description="sessions of daily ATM IV behind IV rank/percentile (backfilled)",
    )
    iv_min_history_days: int = Field(
        20,
        ge=2,
        le=2520,
        description="fewer recorded IV days than this: IV rank/percentile unknown",
    )
    iv_max_age_days: int = Field(
        5, ge=0, le=365, description="latest recorded IV older than this (calendar days): unknown"
    )


class ReconciliationSettings(_Section):
    """How the book is compared with the broker (position_reconciliation)."""

    avg_price_tolerance: float = Field(
        0.01, ge=0, le=100, description="average prices closer than this per unit agree, USD"
    )
    avg_price_tolerance_rel: float = Field(
        1e-4, ge=0, le=1, description="... or closer than this fraction of the broker's average"
    )
    executions_overlap_min: int = Field(
        60,
        ge=0,
        le=10_080,
        description="re-read executions this far before the last run (dedup is free)",
    )
    fetch_retries: int = Field(3, ge=0, le=20, description="retries of the read-only broker fetch")
    fetch_backoff_s: float = Field(2.0, gt=0, le=60, description="first fetch retry delay; doubles")
    absurd_quantity_multiple: float = Field(
        50.0,
        ge=1,
        le=1_000,
        description="a broker quantity beyond this x V6's largest holding is absurd",
    )
    absurd_quantity_floor: int = Field(
        10_000, ge=1, le=10_000_000, description="... but never below this many units (empty book)"
    )
    absurd_cost_multiple: float = Field(
        20.0, ge=1, le=1_000, description="a report costing more than this x net liq is absurd"
    )
    adopt_external_max_pct: float = Field(
        10.0,
        ge=0,
        le=100,
        description="unknown positions costing more (% of net liq) await `v6 breaks ack`",
    )


class CycleSettings(_Section):
    """The trading cycle (core/cycle): how its read-only steps retry."""

    read_retries: int = Field(
        2,
        ge=0,
        le=20,
        description="retries of a read-only cycle step (reconcile, market data, ...)",
    )
    retry_backoff_s: float = Field(
        1.0, gt=0, le=60, description="first retry delay of a read-only step, seconds; doubles"
    )
    lease_ttl_s: float = Field(
        300.0, ge=30, le=3_600, description="one cycle per home: a holder silent this long has died"
    )


class SimSettings(_Section):
    seed: int = Field(7, ge=0, le=2**32 - 1, description="the simulated market's random seed")
    start: str = Field("2026-03-02", description="first simulated session (YYYY-MM-DD)")
    futures_lead_minutes: int = Field(
        2, ge=0, le=60, description="how far futures lead their underlying"
    )
    slippage_ticks: int = Field(0, ge=0, le=100)
    commission_per_contract: float = Field(0.65, ge=0, le=100)
    net_liquidation: float = Field(100_000.0, gt=0, le=1e12, description="starting cash, USD")
    default_regime: Literal["random", "calm", "trending", "high_vol", "crash"] = Field(
        "random", description="regime of days not scripted below; random = seeded mix"
    )
    regimes: dict[str, Literal["calm", "trending", "high_vol", "crash"]] = Field(
        default_factory=dict, description="scripted regime per session, {'2026-03-10': 'crash'}"
    )
    # IB's habits on the money path, on by default and seeded (docs/IB_ASSUMPTIONS.md)
    correction_rate: float = Field(
        0.02, ge=0, le=1, description="share of fills first reported wrong, then corrected"
    )
    late_commission_rate: float = Field(
        0.1, ge=0, le=1, description="share of commission reports sent late"
    )
    late_commission_s: float = Field(
        30.0, ge=0, le=3600, description="how late a late commission is"
    )
    cancel_fill_rate: float = Field(
        0.05, ge=0, le=1, description="share of cancels of a live order that lose to a fill"
    )
    client_id_linger_s: float = Field(
        5.0, ge=0, le=3600, description="a dropped client's id stays taken (326) this long"
    )
    dividend_assignment_rate: float = Field(
        0.8, ge=0, le=1,
        description="per contract: a short ITM call whose extrinsic < the dividend is "
        "assigned on the eve of the ex-date",
    )  # fmt: skip
    put_assignment_days: int = Field(
        5, ge=0, le=365, description="deep ITM short puts may be assigned this close to expiry"
    )
    put_assignment_itm_pct: float = Field(
        3.0, ge=0, le=100, description="a put counts as deep ITM from this share of its strike"
    )
    put_assignment_extrinsic: float = Field(
        0.05, ge=0, le=1000, description="and when its extrinsic value (per share) is below this"
    )
    put_assignment_rate: float = Field(
        0.3, ge=0, le=1, description="per contract and session: such a put is assigned"
    )

    @field_validator("regimes")
    @classmethod
    def _regime_dates(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            try:
                date.fromisoformat(key)
            except ValueError:
                raise ValueError(
                    f"sim.regimes key {key!r} is not a date; write it as YYYY-MM-DD"
                ) from None
        return v


class Settings(BaseSettings):
    """The effective configuration of one V6 process."""

    model_config = SettingsConfigDict(
        env_prefix="V6_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    broker: BrokerSettings = BrokerSettings()
    storage: StorageSettings = StorageSettings()
    schedules: ScheduleSettings = ScheduleSettings()
    universe: UniverseSettings = UniverseSettings()
    strategies: StrategySettings = StrategySettings()
    rules: RuleSettings = RuleSettings()
    limits: LimitSettings = LimitSettings()
    breaker: BreakerSettings = BreakerSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    reconciliation: ReconciliationSettings = ReconciliationSettings()
    cycle: CycleSettings = CycleSettings()
    sim: SimSettings = SimSettings()
    alerts: AlertSettings = AlertSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get() or resolve_config_path()
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _EnvWithoutLiveOptIn(settings_cls, env_settings, toml_file),
        ]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _cross_section(self) -> Self:
        unknown = [
            f for f in self.universe.leading_future.values() if f not in self.universe.futures
        ]
        if unknown:
            raise ValueError(
                f"universe.leading_future names futures {unknown} that are not in universe.futures "
                f"{self.universe.futures}; add them to universe.futures or fix the mapping"
            )
        if self.broker.is_live and not self.broker.live_trading_enabled:
            raise ValueError(
                f"broker: port {self.broker.port} / paper={self.broker.paper} "
                "reaches a LIVE account; "
                "set broker.live_trading_enabled = true to opt in explicitly"
            )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data with every secret and the account masked."""
        data = self.model_dump(mode="json")
        data["storage"]["storage_options"] = self.storage.masked_storage_options()
        if self.broker.account:
            data["broker"]["account"] = mask_account(self.broker.account)
        return data


def mask_account(account: str) -> str:
    """`DU1234567` -> `DU*****67`: the kind (DU paper, U live) and enough to tell accounts
    apart, never the number (account ids are never printed or logged in full)."""
    if len(account) <= 6:
        return "*" * len(account)
    return f"{account[:2]}{'*' * (len(account) - 4)}{account[-2:]}"


class _EnvWithoutLiveOptIn(PydanticBaseSettingsSource):
    """The environment, except that it cannot opt in to live trading on its own.

    Real money is switched on only by `live_trading_enabled = true` in the config file,
    where it is reviewed and kept; a stray exported variable must never do it."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        env: PydanticBaseSettingsSource,
        toml_file: Path | None,
    ) -> None:
        super().__init__(settings_cls)
        self._env = env
        self._toml_file = toml_file

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # values come from the wrapped source (__call__)

    def __call__(self) -> dict[str, Any]:
        data = self._env()
        broker = data.get("broker")
        wanted = broker.get("live_trading_enabled") if isinstance(broker, Mapping) else None
        if _truthy(wanted) and not _file_opts_in(self._toml_file):
            where = self._toml_file or DEFAULT_CONFIG_FILE
            raise ConfigError(
                "environment",
                [
                    f"{LIVE_OPT_IN_ENV} is set but the config file does not opt in: live "
                    f"trading is enabled only by live_trading_enabled = true in the [broker] "
                    f"section of the config file ({where}), not by the environment alone"
                ],
            )
        return data


def _truthy(value: Any) -> bool:
    if value is None:
        return False
    try:
        return bool(TypeAdapter(bool).validate_python(value))
    except ValidationError:
        return False  # not a boolean: the settings validation reports it


def _file_opts_in(toml_file: Path | None) -> bool:
    if toml_file is None or not toml_file.is_file():
        return False
    try:
        data = tomllib.loads(toml_file.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False  # the TOML source reports the file's problem
    broker = data.get("broker")
    return isinstance(broker, dict) and broker.get("live_trading_enabled") is True


_TOML_FILE: ContextVar[Path | None] = ContextVar("v6_toml_file", default=None)


def resolve_config_path(explicit: str | Path | None = None) -> Path | None:
    """The TOML file to read: explicit path, else $V6_CONFIG, else ./v6.toml if it exists."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


class ConfigError(ValueError):
    """A configuration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({source}), {len(problems)} problem(s):\n{lines}")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings, turning pydantic's errors into one line per problem."""
    toml_path = resolve_config_path(path)
    source = str(toml_path) if toml_path else "defaults + environment"
    if toml_path is not None and not toml_path.exists():
        raise ConfigError(
            source, [f"config file {toml_path} does not exist; create it or unset {CONFIG_ENV_VAR}"]
        )
    token = _TOML_FILE.set(toml_path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err) for err in exc.errors()]) from None
    except ConfigError:
        raise
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(source, [f"cannot parse: {exc}"]) from None
    finally:
        _TOML_FILE.reset(token)


def _describe(err: Mapping[str, Any]) -> str:
    """One readable line: key path, bad value, what is allowed."""
    loc = [str(p) for p in err.get("loc", ())]
    path = ".".join(loc) or "<root>"
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "extra_forbidden":
        hint = _suggest(loc)
        return f"{path}: unknown setting{hint}; remove it or fix the spelling"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    shown = _short(value)
    line = f"{path}: {msg} (got {shown})" if shown is not None else f"{path}: {msg}"
    bounds = allowed_range(_constraints(loc)) if kind in _RANGE_ERRORS else ""
    return f"{line}; allowed range: {bounds}" if bounds else line


_RANGE_ERRORS = frozenset(
    {"finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)


def allowed_range(metadata: list[Any]) -> str:
    """`0 < value <= 1000` from a field's pydantic bounds ('' when it has none)."""
    low = next((f"{m.gt} < " for m in metadata if isinstance(m, annotated_types.Gt)), "")
    low = low or next((f"{m.ge} <= " for m in metadata if isinstance(m, annotated_types.Ge)), "")
    high = next((f" < {m.lt}" for m in metadata if isinstance(m, annotated_types.Lt)), "")
    high = high or next((f" <= {m.le}" for m in metadata if isinstance(m, annotated_types.Le)), "")
    return f"{low}value{high}" if low or high else ""


def field_bounds(info: FieldInfo) -> list[Any]:
    """The bounds of a field, or of its values when it is a dict of bounded numbers."""
    args = get_args(info.annotation)
    if get_origin(info.annotation) is dict and len(args) == 2:
        return [m for a in get_args(args[1])[1:] for m in getattr(a, "metadata", [a])]
    return list(info.metadata)


def _constraints(loc: list[str]) -> list[Any]:
    """The bounds of the setting at `loc` (section, key[, dict key])."""
    model: type[BaseModel] = Settings
    for i, part in enumerate(loc):
        info = model.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and i + 1 < len(loc):
            model = ann
            continue
        return field_bounds(info)
    return []


def _suggest(loc: list[str]) -> str:
    """'did you mean X' for a misspelt key, from the section's known fields."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _short(value: Any) -> str | None:
    if isinstance(value, dict | list) or value is None:
        return None
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
