"""docs/PYTHON.md's walkthrough runs: its ```python blocks in order, in one namespace, in a temp folder."""
import os
import re

from conftest import ROOT


def test_walkthrough(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "PYTHON.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAPPA_ROOT", str(ROOT))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ns = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/PYTHON.md block {i}", "exec"), ns)
    assert (tmp_path / "qsim_per_layer.png").exists()
    data = os.environ.get("TAPPA_DATA_DIR", str(ROOT / ".." / "shared" / "data"))
    if os.path.isdir(os.path.join(data, "niah_paulgraham_essays")):  # the calibration block ran, not its skip branch
        assert (tmp_path / "prune_bi_qsim.png").stat().st_size > 10000 and (tmp_path / "pruned.gguf").exists()
    out = capsys.readouterr().out
    assert "bad_input" in out
