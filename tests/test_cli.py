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
    (["demo", "--T", "2.5"], "--T", "positive integer"),
    (["demo", "--layers", "64,0,10"], "--layers", "comma-separated positive integers"),
    (["demo", "--layers", "32,10"], "--layers", "must start with 64"),
    (["demo", "--batch", "0"], "--batch", "positive integer"),
    (["demo", "--meta-steps", "0"], "--meta-steps", "positive integer"),
    (["compare", "--methods", "exact", "cg:3"], "--methods", "name:key=value"),
    (["compare", "--hidden", "x"], "--hidden", "positive integer"),
    (["compare", "--n-train", "1797"], "--n-train", "at most 1796"),
    (["compare", "--batch-size", "600", "--n-train", "500"], "--batch-size", "at most --n-train"),
    (["compare", "--jobs", "0"], "--jobs", "positive integer"),
    (["demo", "--no-such-option"], "unrecognized arguments", "--no-such-option"),
])
def test_bad_arguments_are_usage_errors_naming_the_option(argv, option, allowed, capsys):
    """More cases, one per fault, are in test_faults.py (CLI section)."""
    err = usage_error(argv, capsys)
    assert option in err and allowed in err, err
    assert "Traceback" not in err


def test_unknown_method_lists_every_registered_method(capsys):
    from reversible import methods
    err = usage_error(["compare", "--methods", "exact", "bogus"], capsys)
    assert "'bogus'" in err
    for name in methods.names():
        assert name in err


def test_output_directory_is_created_before_the_work(tmp_path):
    parser = cli.build_parser()
    cli.check_output_directory(parser, str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def test_download_calls_the_data_helper(monkeypatch, tmp_path, capsys):
    from reversible import data
    calls = []

    def fake_download(name, directory=None, base_url=None):
        calls.append((name, directory, base_url))
        return tmp_path / name

    monkeypatch.setattr(data, "download", fake_download)
    assert cli.main(["download", "mnist", "--dir", str(tmp_path)]) == 0
    assert cli.main(["download", "omniglot", "--mirror", "file:///m/"]) == 0
    assert calls == [("mnist", str(tmp_path), None), ("omniglot", None, "file:///m/")]
    assert f"mnist: ready in {tmp_path / 'mnist'}" in capsys.readouterr().out


def test_module_entry_point_prints_the_version():
    proc = subprocess.run([sys.executable, "-m", "reversible.cli", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"reversible {reversible.__version__}"


def test_download_from_a_file_mirror_verifies_the_files(shared_data, tmp_path, capsys):
    from reversible import data
    target = tmp_path / "omniglot"
    mirror = (shared_data / "omniglot").as_uri() + "/"
    assert cli.main(["download", "omniglot", "--dir", str(target), "--mirror", mirror]) == 0
    assert data.downloaded("omniglot", target) == target
    assert f"omniglot: ready in {target}" in capsys.readouterr().out
