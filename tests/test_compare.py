"""The grading harness, checked against the definitions of its metrics."""

import importlib
import json

import autograd.numpy as anp
import numpy as np
import pytest

# the module (``reversible.compare`` may also be exported as the function)
C = importlib.import_module("reversible.compare")


def test_grade_geometric_cases():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=50)
    same = C.grade(2.0 * ref, ref)
    assert same["cosine"] == pytest.approx(1.0) and same["norm_ratio"] == pytest.approx(2.0)
    assert same["rel_error"] == pytest.approx(1.0) and same["sign_match"] == 1.0
    opposite = C.grade(-ref, ref)
    assert opposite["cosine"] == pytest.approx(-1.0) and opposite["sign_match"] == 0.0
    ortho = np.array([1.0, 0.0, -3.0]), np.array([0.0, 2.0, 0.0])
    assert C.grade(*ortho)["cosine"] == 0.0
    half = C.grade(np.array([1.0, -1.0, 1.0, -1.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert half["sign_match"] == 0.5 and half["cosine"] == 0.0
    assert C.grade(np.zeros(3), np.ones(3))["cosine"] == 0.0
    bad = C.grade(np.array([np.nan, 1.0]), np.ones(2))
    assert bad["nonfinite"] == 1 and np.isnan(bad["cosine"])


def test_compare_on_known_gradients():
    """objective(h, m) = <c_m, h["a"]> + <d_m, h["b"]>: its hypergradients are (c_m, d_m)."""
    rng = np.random.default_rng(1)
    coef = {m: (rng.normal(size=4), rng.normal(size=3)) for m in ("ref", "x", "y")}

    def objective(h, method):
        if method == "broken":
            raise RuntimeError("no such luck")
        c, d = coef[method]
        return anp.dot(c, h["a"]) + anp.dot(d, h["b"])

    hypers = {"a": np.zeros(4), "b": np.zeros(3)}
    table = C.compare(objective, hypers, ["ref", "x", "y", "broken"], reference="ref", memory=True)
    ref_all = np.concatenate(coef["ref"])
    for m in ("ref", "x", "y"):
        row = table.row(m)
        g = np.concatenate(coef[m])
        cos = g @ ref_all / np.linalg.norm(g) / np.linalg.norm(ref_all)
        assert row["cosine"] == pytest.approx(cos)
        assert row["rel_error"] == pytest.approx(np.linalg.norm(g - ref_all) / np.linalg.norm(ref_all))
        assert row["sign_match"] == pytest.approx(np.mean(np.sign(g) == np.sign(ref_all)))
        ca, cr = coef[m][0], coef["ref"][0]
        assert row["kinds"]["a"]["cosine"] == pytest.approx(ca @ cr / np.linalg.norm(ca) / np.linalg.norm(cr))
        assert row["seconds"] > 0 and row["peak_mb"] >= 0
    assert "no such luck" in table.row("broken")["error"]
    assert "broken" in table.format()
    json.loads(table.to_json())
    with pytest.raises(RuntimeError, match="reference"):
        C.compare(objective, hypers, ["x"], reference="broken")


def test_parse_spec():
    assert C.parse_spec("truncated:K=10:velocity=path") == ("truncated", {"K": 10, "velocity": "path"})
    assert C.parse_spec("neumann:step=0.5") == ("neumann", {"step": 0.5})
    assert C.method_kwargs("cg:iterations=3") == {"method": "cg", "iterations": 3}
    with pytest.raises(ValueError, match="name:key=value"):
        C.parse_spec("cg:3")


def test_builtin_problem_exact_methods_agree():
    """unrolled, checkpointed and forward compute the same derivative as exact."""
    prob = C.BuiltinProblem(T=6, hidden=(8,), n_train=300)
    table = C.compare(prob.objective, prob.hypers0(), ["unrolled", "checkpointed", "forward"],
                      memory=False, warmup=False)
    for row in table.rows:
        assert row["error"] is None
        assert row["rel_error"] < 1e-7, row["method"]


def test_cli_writes_table_and_figure(tmp_path, capsys):
    from reversible import cli
    rc = cli.main(["compare", "--T", "4", "8", "--methods", "exact", "drmad", "identity",
                   "--hidden", "8", "--n-train", "200", "--no-memory", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads((tmp_path / "compare.json").read_text())
    assert [r["meta"]["T"] for r in out["results"]] == [4, 8]
    assert out["results"][0]["rows"][0]["cosine"] == pytest.approx(1.0)
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "drmad" in capsys.readouterr().out
