"""experiments/approx_ift_linear.py: Neumann and CG inverse-Hessian approximations on ridge
regression against the closed-form implicit hypergradient (quick)."""

import json

import numpy as np

from experiments import approx_ift_linear


def test_quick_run_converges_to_the_implicit_hypergradient_and_plots(tmp_path):
    approx_ift_linear.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "approx_ift_linear.json").read_text())
    iters = meta["iterations"]
    assert iters[0] == 0
    for method in ("neumann", "cg"):
        cos = np.array(meta[method]["cosine"])
        dist = np.array(meta[method]["l2_distance"])
        assert cos.shape == dist.shape == (len(iters),) and np.all(np.isfinite(dist))
        assert dist[-1] < dist[1], method            # more iterations, closer
    # CG solves a d x d system exactly in d iterations (d = 10 diabetes features)
    assert meta["weights"] == 10 and iters[-1] >= 10
    assert meta["cg"]["cosine"][-1] > 1 - 1e-9 and meta["cg"]["l2_distance"][-1] < 1e-9
    # training long enough reaches the optimum, where the exact hypergradient is the implicit one
    assert meta["single"][f"exact T={meta['T']}"]["cosine"] > 1 - 1e-9
    from figures import approx_ift_linear as figure
    paths = figure.plot(tmp_path, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
