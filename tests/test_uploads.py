"""Web uploads: messages about a file name the file the user uploaded, never our staged copy."""

from __future__ import annotations

from pathlib import Path

from ui.uploads import load_staged, stage

from .conftest import FIXTURES


def test_latin1_upload_fix_names_the_users_file(tmp_path: Path) -> None:
    staged = stage([str(FIXTURES / "latin1.csv")], tmp_path, max_bytes=2**20)
    report, refused = load_staged(staged)
    assert not report.papers and len(refused) == 1
    assert "not UTF-8" in refused[0] and "iconv -f latin1 -t utf-8 latin1.csv > latin1-utf8.csv" in refused[0]
    assert "upload-" not in refused[0] and str(tmp_path) not in refused[0]
