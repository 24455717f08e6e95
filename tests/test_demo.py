"""The ``reversible demo`` command end to end in quick mode, and its problem."""

import json

import numpy as np

from reversible import demo
from reversible.cli import main


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bits per weight per step" in out and "not included" in out
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["reversed_exactly"] is True
    assert summary["layers"] == [64, 16, 10] and summary["T"] == 20
    for kind, row in summary["agreement"].items():
        assert row["relative_error"] < 1e-8, kind
    assert set(summary["agreement"]) == {"log_alpha", "logit_beta", "log_l2", "log_init_scale"}
    assert abs(summary["bits_per_element_step"] / summary["ideal_bits_per_element_step"] - 1) < 0.05
    assert (tmp_path / "learned_schedules.png").stat().st_size > 1000
    assert summary["final_validation_loss"] < summary["meta"]["objectives"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "learned_schedules.png"]


def test_build_problem_matches_the_documented_starting_point():
    problem, h0 = demo.build_problem([64, 8, 10], T=7, batch=50, seed=0)
    assert problem.layer_sizes == [64, 8, 10] and problem.T == 7
    assert h0["log_alpha"].shape == h0["logit_beta"].shape == (7, 4)
    np.testing.assert_allclose(np.exp(h0["log_alpha"]), 0.3)
    np.testing.assert_allclose(1 / (1 + np.exp(-h0["logit_beta"])), 0.9)
    np.testing.assert_allclose(np.exp(h0["log_init_scale"]), [1 / 8, 0.01, 1 / np.sqrt(8), 0.01])
    assert len(problem.train_data) == demo.N_TRAIN and len(problem.valid) == demo.N_VALID
