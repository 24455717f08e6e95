"""Fault injection: every bad input or broken environment is reported loudly, nothing is lost."""

# --- CLI (layout) ---
import subprocess as _cli_subprocess
import sys as _cli_sys
from pathlib import Path as _CliPath

import pytest

from reversible import cli as _cli

_CLI_REPO = _CliPath(__file__).resolve().parents[1]

#: (argv, text that must appear in the usage error): each is one injected fault
CLI_FAULTS = [
    (["demo", "--T", "-5"], "argument --T: must be a positive integer"),
    (["demo", "--T", "0"], "argument --T: must be a positive integer"),
    (["demo", "--T", "ten"], "argument --T: must be a positive integer"),
    (["demo", "--T", "1e3"], "argument --T: must be a positive integer"),
    (["demo", "--layers", "64,abc"], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", ""], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", "64,-3,10"], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", "64"], "argument --layers: must start with 64"),
    (["demo", "--layers", "64,32,9"], "argument --layers: must start with 64 (pixels of a digit) and end with 10"),
    (["demo", "--batch", "-1"], "argument --batch: must be a positive integer"),
    (["demo", "--batch", "1001"], "argument --batch: must be at most 1000"),
    (["demo", "--meta-steps", "-2"], "argument --meta-steps: must be a positive integer"),
    (["demo", "--meta-lr", "0"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "inf"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "nan"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "fast"], "argument --meta-lr: must be a positive number"),
    (["demo", "--seed", "-7"], "argument --seed: must be an integer >= 0"),
    (["demo", "--seed", "x"], "argument --seed: must be an integer >= 0"),
    (["compare", "--methods", "bogus"], "argument --methods: unknown method 'bogus'; valid methods:"),
    (["compare", "--methods", "exact", "truncated:K"], "argument --methods: bad method option 'K'"),
    (["compare", "--reference", "bogus"], "argument --reference: unknown method 'bogus'"),
    (["compare", "--T", "-5"], "argument --T: must be a positive integer"),
    (["compare", "--T"], "argument --T: expected at least one argument"),
    (["compare", "--hidden", "0"], "argument --hidden: must be a positive integer"),
    (["compare", "--n-train", "0"], "argument --n-train: must be a positive integer"),
    (["compare", "--n-train", "5000"], "argument --n-train: must leave validation examples"),
    (["compare", "--batch-size", "2000"], "argument --batch-size: must be at most --n-train"),
    (["compare", "--jobs", "-1"], "argument --jobs: must be a positive integer"),
    (["compare", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["download"], "the following arguments are required: name"),
    (["download", "imagenet"], "argument name: invalid choice: 'imagenet'"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", CLI_FAULTS, ids=[" ".join(a) for a, _ in CLI_FAULTS])
def test_cli_bad_argument_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2
    assert message in err, err
    assert err.startswith("usage: reversible")


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_cli_unusable_output_directory_fails_before_any_work(command, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "below-a-file"):
        with pytest.raises(SystemExit) as e:
            _cli.main([command, "--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out:" in err and str(out) in err


def test_cli_download_failure_is_one_clear_line(monkeypatch, capsys):
    from reversible import data

    def offline(name, directory=None):
        raise ConnectionError(f"cannot reach the {name} mirror; check the network or copy the files")

    monkeypatch.setattr(data, "download", offline, raising=False)
    assert _cli.main(["download", "mnist"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("reversible download mnist: ConnectionError: cannot reach the mnist "
                           "mirror; check the network or copy the files")


def test_cli_usage_error_exit_status_from_a_real_process():
    for argv in (["demo", "--T", "-5"], ["demo", "--layers", "64,abc"], ["compare", "--methods", "bogus"]):
        proc = _cli_subprocess.run([_cli_sys.executable, "-m", "reversible.cli", *argv], cwd=_CLI_REPO,
                                   capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr and "error: argument" in proc.stderr
