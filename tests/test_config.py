from pathlib import Path

import pytest

from distillguard.config import Config, ConfigError, load


def test_defaults_and_toml(tmp_path: Path) -> None:
    assert Config().scoring.levels["block"] == 0.9
    p = tmp_path / "dg.toml"
    p.write_text("[scan]\nskeleton_sample = 32\n[scoring.levels]\nwatch = 0.1\nsuspect = 0.4\nblock = 0.8\n")
    cfg = load(p)
    assert cfg.scan.skeleton_sample == 32 and cfg.scoring.levels["suspect"] == 0.4


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("[scan]\nskeleton_sample = 'many'\n", "scan.skeleton_sample"),
        ("[scan]\nunknown = 1\n", "scan.unknown"),
        ("[scoring.levels]\nwatch = 0.9\nsuspect = 0.5\nblock = 0.95\n", "watch <= suspect"),
        ("[scan\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, msg: str) -> None:
    p = tmp_path / "dg.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        load(p)


def test_missing_named_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")


def test_one_file_configures_scan_and_gateway(tmp_path: Path) -> None:
    from distillguard.gateway.config import GatewayConfigError, load_gateway_config

    p = tmp_path / "dg.toml"
    p.write_text("[scan]\nskeleton_sample = 32\n[gateway.upstream]\nurl = 'http://127.0.0.1:9/v1'\n")
    assert load(p).scan.skeleton_sample == 32
    assert load_gateway_config(p).upstream.url == "http://127.0.0.1:9/v1"
    # the gateway's own table is still validated, by the gateway
    p.write_text("[scan]\nskeleton_sample = 32\n[gateway]\nupstreem = 'x'\n[scna]\n")
    with pytest.raises(ConfigError, match="scna"):
        load(p)  # a misspelt table of its own is still refused
    with pytest.raises(GatewayConfigError, match="upstreem"):
        load_gateway_config(p)
