"""The ``reversible`` command line: version, help with durations, usage errors, download."""

import subprocess
import sys

import pytest

import reversible
from reversible import cli

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def usage_error(argv, capsys):
    """Run the CLI expecting an argparse usage error; return its stderr."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"reversible {reversible.__version__}"


def test_without_a_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in ("demo", "compare", "download"))


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_help_states_the_expected_duration(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Expected duration with the defaults: about" in out and "on 2 cores" in out


@pytest.mark.parametrize("argv, option, allowed", [
    (["demo", "--T", "-5"], "--T", "positive integer"),
    (["demo", "--T", "2.5"], "--T", "positive integer"),
    (["demo", "--layers", "64,abc"], "--layers", "comma-separated positive integers"),
    (["demo", "--layers", "64,0,10"], "--layers", "comma-separated positive integers"),
    (["demo", "--layers", "32,10"], "--layers", "must start with 64"),
    (["demo", "--batch", "0"], "--batch", "positive integer"),
    (["demo", "--batch", "5000"], "--batch", "at most 1000"),
    (["demo", "--meta-lr", "nan"], "--meta-lr", "finite number > 0"),
    (["demo", "--meta-lr", "-1"], "--meta-lr", "finite number > 0"),
    (["demo", "--meta-steps", "0"], "--meta-steps", "positive integer"),
    (["demo", "--seed", "-1"], "--seed", "integer >= 0"),
    (["compare", "--methods", "bogus"], "--methods", "valid methods: "),
    (["compare", "--methods", "exact", "cg:3"], "--methods", "name:key=value"),
    (["compare", "--reference", "nope"], "--reference", "valid methods: "),
    (["compare", "--T", "0"], "--T", "positive integer"),
    (["compare", "--hidden", "x"], "--hidden", "positive integer"),
    (["compare", "--n-train", "1797"], "--n-train", "at most 1796"),
    (["compare", "--batch-size", "600", "--n-train", "500"], "--batch-size", "at most --n-train"),
    (["compare", "--jobs", "0"], "--jobs", "positive integer"),
    (["download", "cifar"], "name", "mnist"),
    (["demo", "--no-such-option"], "unrecognized arguments", "--no-such-option"),
])
def test_bad_arguments_are_usage_errors_naming_the_option(argv, option, allowed, capsys):
    err = usage_error(argv, capsys)
    assert option in err and allowed in err, err
    assert "Traceback" not in err


def test_unknown_method_lists_every_registered_method(capsys):
    from reversible import methods
    err = usage_error(["compare", "--methods", "exact", "bogus"], capsys)
    assert "'bogus'" in err
    for name in methods.names():
        assert name in err


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for command in ("demo", "compare"):
        err = usage_error([command, "--out", str(f)], capsys)
        assert "--out" in err and "not a directory" in err


def test_download_calls_the_data_helper(monkeypatch, tmp_path, capsys):
    from reversible import data
    calls = []

    def fake_download(name, directory=None):
        calls.append((name, directory))
        return tmp_path / name

    monkeypatch.setattr(data, "download", fake_download, raising=False)
    assert cli.main(["download", "mnist", "--dir", str(tmp_path)]) == 0
    assert cli.main(["download", "omniglot"]) == 0
    assert calls == [("mnist", str(tmp_path)), ("omniglot", None)]
    assert f"mnist: ready in {tmp_path / 'mnist'}" in capsys.readouterr().out


def test_download_without_a_data_helper_says_so(monkeypatch, capsys):
    from reversible import data
    monkeypatch.delattr(data, "download", raising=False)
    assert cli.main(["download", "mnist"]) == 1
    assert "no data downloader" in capsys.readouterr().err


def test_module_entry_point_reports_usage_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "reversible.cli", "demo", "--T", "-5"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "argument --T: must be a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr
