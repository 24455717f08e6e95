"""The grading harness, checked against the definitions of its metrics."""

import json

import autograd.numpy as anp
import numpy as np
import pytest

import reversible
from reversible import grading as C


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
        assert row["seconds"] > 0 and row["peak_mb"] > 0
    assert table.row("ref")["time_ratio"] == 1.0 and table.row("ref")["memory_ratio"] == 1.0
    assert "no such luck" in table.row("broken")["error"]
    assert "broken" in table.format()
    saved = json.loads(table.to_json())
    assert saved["reference"] == "ref" and [r["method"] for r in saved["rows"]] == ["ref", "x", "y", "broken"]
    assert saved["rows"][1]["cosine"] == table.row("x")["cosine"]
    with pytest.raises(RuntimeError, match="reference"):
        C.compare(objective, hypers, ["x"], reference="broken")


def test_parse_spec():
    assert C.parse_spec("truncated:K=10:velocity=path") == ("truncated", {"K": 10, "velocity": "path"})
    assert C.parse_spec("neumann:step=0.5") == ("neumann", {"step": 0.5})
    assert C.method_kwargs("cg:iterations=3") == {"method": "cg", "iterations": 3}
    with pytest.raises(ValueError, match="name:key=value"):
        C.parse_spec("cg:3")


def test_exported_compare_is_the_function_and_the_module_is_grading():
    import pathlib
    assert reversible.compare is C.compare
    package = pathlib.Path(reversible.__file__).parent
    assert (package / "grading.py").is_file() and not (package / "compare.py").exists()


def test_progress_bar_counts_every_method(capsys):
    table = C.compare(lambda h, m: anp.sum(h * {"a": 1.0, "b": 2.0}[m]), np.ones(3), ["a", "b"],
                      reference="a", memory=False, warmup=False, progress="grading")
    err = capsys.readouterr().err
    assert "grading" in err and "1/2" in err and "method/s, b]" in err
    assert table.row("b")["norm_ratio"] == pytest.approx(2.0)


def test_mlp_problem_exact_methods_agree():
    """unrolled, checkpointed and forward compute the same derivative as exact."""
    from reversible.models import MLPClassifierProblem
    prob = MLPClassifierProblem.on_digits(6, hidden=(8,), n_train=300)
    table = C.compare(prob.objective, prob.hypers0(), ["unrolled", "checkpointed", "forward"],
                      memory=False, warmup=False)
    for row in table.rows:
        assert row["error"] is None
        assert row["rel_error"] < 1e-7, row["method"]


def test_coinciding_groups_join_equal_curves_in_order():
    same = [1.0, 1.0, np.nan]
    groups = C.coinciding_groups({"exact": same, "unrolled": [1.0 - 1e-12, 1.0, np.nan],
                                  "drmad": [0.99, 0.98, 0.9], "forward": same,
                                  "identity": [0.0, 1e-3, 0.0], "short": [1.0, 1.0]})
    assert groups == [["exact", "unrolled", "forward"], ["drmad"], ["identity"], ["short"]]
    assert C.coinciding_groups({"a": [1.0], "b": [1.1]}, rtol=0.2) == [["a", "b"]]


def test_table_json_file_round_trips(tmp_path):
    table = C.compare(lambda h, m: anp.sum(h * {"a": 1.0, "b": -2.0}[m]), np.ones(2), ["a", "b"],
                      reference="a", memory=False, warmup=False)
    path = tmp_path / "table.json"
    text = table.to_json(path)
    assert path.read_text() == text
    saved = json.loads(text)
    assert saved["rows"][1]["cosine"] == pytest.approx(-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]
