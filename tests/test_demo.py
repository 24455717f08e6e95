"""The ``reversible demo`` command end to end in quick mode."""

import json

from reversible.cli import main


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bits per weight per step" in out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["reversed_exactly"]
    for kind, row in summary["agreement"].items():
        assert row["relative_error"] < 1e-8, kind
    assert abs(summary["bits_per_element_step"] / summary["ideal_bits_per_element_step"] - 1) < 0.05
    assert (tmp_path / "learned_schedules.png").stat().st_size > 1000
    assert summary["final_validation_loss"] < summary["meta"]["objectives"][0]


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out
