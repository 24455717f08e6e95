"""What every figure script must write: each figure as a PNG and a PDF, none of them empty."""


def check_figure_files(paths):
    paths = list(paths)
    assert paths, "the figure script wrote no file"
    stems = {p.stem for p in paths}
    assert sorted(p.name for p in paths) == sorted(f"{s}{ext}" for s in stems for ext in (".png", ".pdf"))
    for p in paths:
        assert p.stat().st_size > 1000, p
