"""Config precedence (defaults < file < env < explicit) and every validation error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, MarketDataType, Settings, load_settings
from core.config_example import render_example_toml


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return exc.value.problems


def test_defaults_without_any_file(no_config: Path) -> None:
    s = load_settings()
    assert s.broker.port == 4002
    assert s.universe.underlyings == ["SPY", "QQQ", "IWM"]
    assert s.rules.profit_target_pct["low_vol"] == 90.0


def test_file_overrides_defaults_and_env_overrides_file(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(no_config / "v6.toml", "[broker]\nport = 4010\nclient_id_min = 5\n")
    assert load_settings(cfg).broker.port == 4010
    monkeypatch.setenv("V6_BROKER__PORT", "4020")
    s = load_settings(cfg)
    assert s.broker.port == 4020  # env beats file
    assert s.broker.client_id_min == 5  # untouched file value survives
    assert load_settings(cfg, broker={"port": 4030}).broker.port == 4030  # explicit beats env


def test_v6_config_env_var_and_cwd_file(no_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(no_config / "v6.toml", "[limits]\nmax_open_strategies = 7\n")
    assert load_settings().limits.max_open_strategies == 7  # ./v6.toml picked up
    other = write(no_config / "other.toml", "[limits]\nmax_open_strategies = 9\n")
    monkeypatch.setenv("V6_CONFIG", str(other))
    assert load_settings().limits.max_open_strategies == 9


def test_missing_explicit_file_is_an_error(no_config: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(no_config / "nope.toml")
    assert "does not exist" in problems(exc)[0]


def test_toml_syntax_error(no_config: Path) -> None:
    cfg = write(no_config / "bad.toml", "[broker\nport = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert problems(exc)[0].startswith("cannot parse")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[broker]\nport = 99999\n",
            "broker.port: Input should be less than or equal to 65535 (got 99999)",
        ),
        ("[broker]\nport = 'x'\n", "broker.port: Input should be a valid integer"),
        ("[broker]\nprot = 1\n", "broker.prot: unknown setting (did you mean 'port'?)"),
        ("[brokr]\nport = 1\n", "brokr: unknown setting (did you mean 'broker'?)"),
        ("[broker]\nmarket_data_type = 'fast'\n", "broker.market_data_type: Input should be"),
        (
            "[broker]\nclient_id_min = 10\nclient_id_max = 5\n",
            "client_id_max (5) is below client_id_min (10)",
        ),
        (
            "[strategies]\ntarget_dte = 10\n",
            "target_dte (10) must lie within dte_min..dte_max (35..60)",
        ),
        (
            "[strategies]\nshort_delta_min = 0.3\n",
            "short_delta_min (0.3) exceeds short_delta_max (0.2)",
        ),
        ("[universe]\nunderlyings = ['SPY', 'spy']\n", "symbols must be unique"),
        ("[universe]\nleading_future = {SPY = 'ZZ'}\n", "leading_future names futures ['ZZ']"),
        (
            "[limits]\nmax_concentration_pct = 140\n",
            "limits.max_concentration_pct: Input should be less than or equal to 100",
        ),
        (
            "[broker]\nkind = 'ib'\nport = 4001\nlive_trading_enabled = true\n"
            "max_messages_per_s = 0\n",
            "max_messages_per_s is 0 (unpaced) on a live configuration",
        ),
        (
            "[breaker]\nconsecutive_failures = 0\n",
            "breaker.consecutive_failures: Input should be greater than or equal to 1",
        ),
    ],
)
def test_each_bad_value_is_one_clear_line(no_config: Path, toml: str, expected: str) -> None:
    cfg = write(no_config / "v6.toml", toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert len(problems(exc)) == 1
    assert expected in problems(exc)[0]


def test_several_problems_are_all_reported(no_config: Path) -> None:
    cfg = write(no_config / "v6.toml", "[broker]\nport = 0\n[rules]\nstop_los = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert len(problems(exc)) == 2
    assert "2 problem(s)" in str(exc.value)


def test_live_trading_needs_explicit_opt_in(no_config: Path) -> None:
    cfg = write(no_config / "v6.toml", "[broker]\nkind = 'ib'\nport = 4001\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "LIVE account" in problems(exc)[0]
    assert "live_trading_enabled" in problems(exc)[0]
    paper_false = write(no_config / "p.toml", "[broker]\nkind = 'ib'\npaper = false\n")
    with pytest.raises(ConfigError):
        load_settings(paper_false)
    opted = write(
        no_config / "o.toml", "[broker]\nkind='ib'\nport=4001\nlive_trading_enabled=true\n"
    )
    assert load_settings(opted).broker.is_live


def test_secrets_are_masked_in_display(no_config: Path) -> None:
    cfg = write(
        no_config / "v6.toml",
        "[storage]\nroot = 's3://bucket/v6'\n"
        "storage_options = {AWS_SECRET_ACCESS_KEY = 'hunter2'}\n",
    )
    s = load_settings(cfg)
    shown = str(s.masked())
    assert "hunter2" not in shown
    assert "**********" in shown
    assert s.storage.plain_storage_options() == {"AWS_SECRET_ACCESS_KEY": "hunter2"}
    assert s.storage.is_remote


def test_market_data_type_codes() -> None:
    assert [m.ib_code for m in MarketDataType] == [1, 2, 3, 4]


def test_settings_are_immutable(no_config: Path) -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.broker.port = 1  # type: ignore[misc]


def test_example_file_is_valid_and_complete(no_config: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "v6.example.toml"
    assert load_settings(example) == Settings()  # the example documents the defaults exactly
    assert example.read_text() == render_example_toml(), (
        "v6.example.toml is out of date: regenerate it with `v6 config example > v6.example.toml`"
    )


@pytest.mark.parametrize(
    ("toml", "key", "shown", "allowed"),
    [
        ("[limits]\nmax_portfolio_delta = inf", "limits.max_portfolio_delta", "inf",
         "0 < value <= 1000"),
        ("[limits]\nmax_underlying_delta = nan", "limits.max_underlying_delta", "nan",
         "0 < value <= 1000"),
        ("[strategies]\ncontracts_per_entry = 1000000", "strategies.contracts_per_entry",
         "1000000", "1 <= value <= 25"),
        ("[strategies]\nwing_width = {SPY = 1e9}", "strategies.wing_width.SPY",
         "1000000000.0", "0 < value <= 500"),
        ("[rules]\nprofit_target_pct = {normal = inf}", "rules.profit_target_pct.normal",
         "inf", "0 < value <= 100"),
        ("[limits]\nmax_new_strategies_per_day = 101", "limits.max_new_strategies_per_day",
         "101", "0 <= value <= 100"),
        ("[breaker]\ndaily_loss_pct = 50", "breaker.daily_loss_pct", "50", "0 < value <= 20"),
        ("[broker]\nconnect_timeout_s = -inf", "broker.connect_timeout_s", "-inf",
         "0 < value <= 300"),
        ("[storage]\ncommit_backoff_s = inf", "storage.commit_backoff_s", "inf", "0 < value <= 60"),
    ],
)  # fmt: skip
def test_a_limit_cannot_be_switched_off_by_inf_or_a_huge_value(
    no_config: Path, toml: str, key: str, shown: str, allowed: str
) -> None:
    cfg = write(no_config / "v6.toml", toml)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    [line] = problems(exc)
    assert line.startswith(f"{key}: ")
    assert f"(got {shown})" in line
    assert line.endswith(f"allowed range: {allowed}")


def test_every_number_of_every_section_is_bounded_both_ways() -> None:
    """Every number V6 reads from its configuration is finite and within a documented
    range: no limit, retry count, schedule or simulator knob can be switched off by a
    typo or an `inf`."""
    from pydantic import BaseModel

    from core.config import Settings, allowed_range, field_bounds

    unbounded: list[str] = []

    def walk(model: type[BaseModel], path: str) -> None:
        assert model is Settings or model.model_config.get("allow_inf_nan") is False, path
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{path}{name}.")
            elif ann in (int, float) or name in ("wing_width", "profit_target_pct"):
                bounds = allowed_range(field_bounds(info))
                has_low = " < value" in bounds or " <= value" in bounds
                if not (has_low and "value <" in bounds):
                    unbounded.append(f"{path}{name}: {bounds!r}")

    walk(Settings, "")
    assert unbounded == []


def test_environment_alone_cannot_enable_live_trading(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = "[broker]\nkind = 'ib'\nport = 4001\n"
    cfg = write(no_config / "v6.toml", live)
    monkeypatch.setenv("V6_BROKER__LIVE_TRADING_ENABLED", "1")
    for path in (cfg, None):
        with pytest.raises(ConfigError) as exc:
            load_settings(path)
        [line] = problems(exc)
        assert "V6_BROKER__LIVE_TRADING_ENABLED" in line
        assert "live_trading_enabled = true in the [broker] section of the config file" in line
    cfg.unlink()
    with pytest.raises(ConfigError):  # no file at all: the environment alone is refused too
        load_settings()
    opted = write(no_config / "o.toml", live + "live_trading_enabled = true\n")
    assert load_settings(opted).broker.is_live  # the file opts in; the environment agrees
    monkeypatch.setenv("V6_BROKER__LIVE_TRADING_ENABLED", "false")
    with pytest.raises(ConfigError, match="LIVE account"):  # the environment may switch it off
        load_settings(opted)


def test_account_id_is_masked_in_display(no_config: Path) -> None:
    from core.config import mask_account

    cfg = write(no_config / "v6.toml", "[broker]\naccount = 'DU1234567'\n")
    s = load_settings(cfg)
    assert s.broker.account == "DU1234567"
    assert s.masked()["broker"]["account"] == "DU*****67"
    assert "1234567" not in str(s.masked())
    assert mask_account("U1234") == "*****"
