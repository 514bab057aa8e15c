"""The sharing keys of the configuration: defaults, and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.config import ConfigError, load_config


def config_with(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "recorder.toml"
    path.write_text(f"[recorder]\n{line}\n")
    return path


def test_the_defaults_take_a_pair_over_within_30_s_and_record_each_once() -> None:
    recorder = load_config(None).recorder
    assert recorder.redundancy == 1
    # A takeover waits out the lease and at most one round (a third of it) more.
    assert recorder.lease_ttl_s >= 10
    assert recorder.lease_ttl_s * 4 / 3 <= 30


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("lease_ttl_s = 0", "recorder.lease_ttl_s"),
        ("lease_ttl_s = 0.5", "recorder.lease_ttl_s"),
        ("lease_ttl_s = true", "recorder.lease_ttl_s"),
        ('lease_ttl_s = "nan"', "recorder.lease_ttl_s"),
        ("redundancy = 0", "recorder.redundancy"),
        ("redundancy = 1.5", "recorder.redundancy"),
        ("redundancy = true", "recorder.redundancy"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, line))
    assert any(problem.startswith(f"{key}:") for problem in caught.value.problems), caught.value


def test_the_environment_sets_them_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_RECORDER__LEASE_TTL_S", "3")
    monkeypatch.setenv("RECORDER_RECORDER__REDUNDANCY", "2")
    recorder = load_config(None).recorder
    assert (recorder.lease_ttl_s, recorder.redundancy) == (3.0, 2)
