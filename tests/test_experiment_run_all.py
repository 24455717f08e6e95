"""experiments/run_all.py: discovery of experiments and figure redraws."""

import pytest

from experiments import infobuffer, run_all


def test_run_all_discovers_experiments():
    names = run_all.discover()
    assert names[:3] == ["infobuffer", "chaos", "schedules"]
    assert "common" not in names and "run_all" not in names
    with pytest.raises(SystemExit) as e:
        run_all.main(["--only", "no_such_experiment"])
    assert e.value.code == 2


@pytest.mark.slow
def test_run_all_redraws_figures(tmp_path):
    results = tmp_path / "results"
    assert infobuffer.main(["--quick", "--out", str(results)]) == 0
    rc = run_all.main(["--out", str(results), "--figures-out", str(tmp_path),
                       "--figures-only", "--only", "infobuffer"])
    assert rc == 0 and (tmp_path / "infobuffer.png").is_file()
