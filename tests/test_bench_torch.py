"""The PyTorch benchmarks run at toy size (--quick) and report consistent figures."""

import json

import pytest

pytest.importorskip("torch")


def test_bench_torch_quick(tmp_path):
    from benchmarks import bench_torch
    out = tmp_path / "bench_torch.json"
    res = bench_torch.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert res["reversed_exactly"] is True
    assert res["exact_over_plain"] == pytest.approx(res["seconds"]["exact"] / res["seconds"]["plain"])
    # the exact hypergradient does a plain run's gradients and more: it cannot be cheaper
    assert res["seconds"]["exact"] > res["seconds"]["plain"]
    assert res["bound_exact_over_plain"] > 1.0


def test_bench_torch_gpu_quick_runs_on_the_cpu(tmp_path):
    from benchmarks import bench_torch_gpu
    out = tmp_path / "bench_torch_gpu.json"
    res = bench_torch_gpu.main(["--quick", "--out", str(out)])
    assert res["reversed_exactly"] is True and res["largest"]["reversed_exactly"] is True
    assert res["N"] == sum(p.numel() for p in bench_torch_gpu.resnet18(2).parameters())
    assert res["groups"] == 62                     # ResNet-18's weight tensors (GroupNorm)
    assert res["largest"]["hypergradient_finite"] is True
    assert 0 < res["largest"]["bits_per_element_step"] < 1     # beta = 0.9: about 0.152 bits
