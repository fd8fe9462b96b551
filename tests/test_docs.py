"""The repository carries its own user-facing spec and cites nothing its users don't have."""

from __future__ import annotations

import subprocess

from conftest import ROOT


def test_the_pipeline_spec_is_in_the_repo_and_nothing_cites_an_outside_contract():
    assert (ROOT / "docs" / "pipeline.md").is_file()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    citing = []
    for name in tracked:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (sample WATs) and files removed in the work tree
        if "CONTRACT" + ".md" in text:
            citing.append(name)
    assert citing == []
