"""experiments/infobuffer.py: bits per element-step against the information bound (quick mode)."""

import numpy as np
import pytest

from experiments import common, infobuffer


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert infobuffer.main(["--quick", "--out", str(out)]) == 0
    return out


def test_infobuffer_quick_bits_follow_the_information_bound(quick_results):
    meta, arr = common.load_results(quick_results, "infobuffer")
    assert meta["reversed_exactly"] is True
    np.testing.assert_allclose(arr["ideal_bits"], np.log2(1 / arr["betas"]), rtol=2e-3)
    # the exact uniform code of engine v2 has no systematic excess: over a short quick run the
    # measured bits fluctuate around the bound by ~1e-5 relative (either side)
    assert np.all(np.abs(arr["measured_bits"] / arr["ideal_bits"] - 1) <= 1e-4)
    np.testing.assert_allclose(arr["measured_bits"], arr["ideal_bits"], rtol=0.05)
    N, Ts = meta["N_memory"], arr["Ts"]
    np.testing.assert_array_equal(arr["trajectory_bytes"], 16.0 * N * Ts)
    # the buffer holds log2(1 / beta) bits per weight per step: linear in T
    from reversible.buffer import ideal_bits, quantize_beta
    per_step = arr["buffer_bits"] / (N * Ts)
    np.testing.assert_allclose(per_step, float(ideal_bits(quantize_beta(meta["beta_memory"]))), rtol=0.02)


def test_checkpoint_and_trajectory_memory_formulas():
    assert infobuffer.trajectory_bytes(10, 100) == 16_000
    assert infobuffer.checkpoint_bytes(10, 100) == 16.0 * 10 * (10 + 10)
    assert infobuffer.checkpoint_bytes(1, 10) == 16.0 * (3 + 4)       # k = ceil(sqrt(10)) = 4


def test_figures_write_png_and_pdf(quick_results, tmp_path):
    from figures import infobuffer as figure
    assert figure.main(["--results", str(quick_results), "--out", str(tmp_path)]) == 0
    for f in ['infobuffer']:
        png, pdf = tmp_path / f"{f}.png", tmp_path / f"{f}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_help_lists_the_common_options(capsys):
    with pytest.raises(SystemExit) as e:
        infobuffer.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out
