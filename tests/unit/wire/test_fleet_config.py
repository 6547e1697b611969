from __future__ import annotations

import pytest

from fabric_worker.wire.fleet_config import DEFAULT_LANES, ConfigError, FleetConfig, parse_lanes


def test_defaults_are_powers_of_two_from_64_to_32768() -> None:
    assert DEFAULT_LANES == (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def test_hash_round_trip_keeps_every_field() -> None:
    config = FleetConfig(
        lanes=(10, 20),
        vocab_size=5,
        max_deliveries=2,
        lease_s=1.5,
        backlog_cap_tokens=1000,
        retention_s=60,
        max_seq_len=30,
        version=7,
    )
    raw = {k.encode(): v.encode() for k, v in config.to_hash().items()}
    assert FleetConfig.from_hash(raw) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"lanes": ()}, "lanes"),
        ({"lanes": (128, 64)}, "lanes"),
        ({"lanes": (64, 64)}, "lanes"),
        ({"lanes": (0, 64)}, "lanes"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"lease_s": 0.0}, "lease_s"),
        ({"max_seq_len": 32768}, "max_seq_len"),
        ({"backlog_cap_tokens": 100}, "backlog_cap_tokens"),
    ],
)
def test_invalid_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        FleetConfig(**changes)  # type: ignore[arg-type]


def test_from_hash_refuses_other_schema_and_unknown_fields() -> None:
    good = FleetConfig().to_hash()
    with pytest.raises(ConfigError, match=r"^schema"):
        FleetConfig.from_hash({**good, "schema": "2"})
    with pytest.raises(ConfigError, match=r"^shiny: unknown field"):
        FleetConfig.from_hash({**good, "shiny": "1"})
    without = dict(good)
    del without["lease_s"]
    with pytest.raises(ConfigError, match=r"^lease_s: missing"):
        FleetConfig.from_hash(without)
    with pytest.raises(ConfigError, match="malformed"):
        FleetConfig.from_hash({**good, "vocab_size": "many"})


def test_lane_for_picks_the_smallest_boundary_that_holds_the_prompt() -> None:
    config = FleetConfig()
    assert config.lane_for(1) == 64
    assert config.lane_for(64) == 64
    assert config.lane_for(65) == 128
    assert config.lane_for(32768) == 32768
    assert config.lane_for(32769) is None
    assert config.max_new_tokens_for(64) == config.max_seq_len - 64


def test_parse_lanes() -> None:
    assert parse_lanes("64, 128,256") == (64, 128, 256)
    with pytest.raises(ConfigError, match="lanes"):
        parse_lanes("64,abc")
