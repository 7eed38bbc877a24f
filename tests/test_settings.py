from __future__ import annotations

import pytest

from pimmi import cli
from pimmi.settings import PRESETS, Settings, SettingsError, config_text, load_settings


def test_defaults_then_file_then_options(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("nb_threads:\n  value: 3\n  help: x\nsift_nfeatures: 700\nquery_ransac: true\n")
    s = load_settings(cfg, {"sift_nfeatures": "500"})
    assert s.nb_threads == 3  # from the file (PIMMI's layout)
    assert s.sift_nfeatures == 500  # the option wins over the file
    assert s.query_sift_knn == Settings().query_sift_knn


def test_created_config_round_trips(tmp_path, capsys):
    path = tmp_path / "my.yml"
    assert cli.main(["create-config", str(path)]) == 0
    assert load_settings(path) == Settings()
    assert "sift_nOctaveLayers" in config_text()


def test_bad_values_are_clear(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("no_such_key: 1\n")
    with pytest.raises(SettingsError, match="unknown key 'no_such_key'"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="--nb-threads: expected int"):
        load_settings(None, {"nb_threads": "many"})
    with pytest.raises(SettingsError, match="--sift-nfeatures must be at least 1"):
        load_settings(None, {"sift_nfeatures": "0"})


def test_global_options_reach_the_command(capsys):
    assert cli.main(["--sift-nfeatures", "123", "config-params"]) == 0
    out = capsys.readouterr().out
    assert "--sift-nOctaveLayers" in out and "--query-dist-ratio-threshold" in out
    assert "--preset fast: --sift-nfeatures" in out


def test_cli_error_is_one_line(capsys, tmp_path):
    assert cli.main(["--nb-threads", "zero", "fill", str(tmp_path), str(tmp_path / "ws")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pimmi: error: --nb-threads: expected int, got 'zero'"]


def test_preset_sits_between_defaults_and_options(tmp_path):
    fast = load_settings(preset="fast")
    assert fast.sift_nfeatures == PRESETS["fast"]["sift_nfeatures"] < Settings().sift_nfeatures
    assert load_settings(None, {"sift_nfeatures": "150"}, preset="fast").sift_nfeatures == 150
    cfg = tmp_path / "c.yml"
    cfg.write_text("sift_max_image_dimension: 640\n")
    assert load_settings(cfg, preset="fast").sift_max_image_dimension == 640  # a config file wins too
    # a workspace's own extraction settings come first, under everything given explicitly
    built = {"sift_nfeatures": 300, "no_longer_a_setting": 1}
    assert load_settings(base=built).sift_nfeatures == 300
    assert load_settings(base=built, preset="fast").sift_nfeatures == PRESETS["fast"]["sift_nfeatures"]
    with pytest.raises(SettingsError, match="unknown preset 'turbo' \\(known: fast\\)"):
        load_settings(preset="turbo")
