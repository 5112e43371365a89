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
    out = capsys.readouterr().out
    assert "bad_input" in out
