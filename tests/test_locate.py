"""Messages about missing files (issue 17): each names the fix that applies."""

from __future__ import annotations

import pandas as pd
import pytest

from curate.locate import MissingFileError, missing_error, missing_file_message, require_files


@pytest.mark.parametrize("path, expected", [
    # a source file: relocate (moved) or ingest + prune (gone)
    ("/data/cats/a.jpg", "/data/cats/a.jpg: the source image is missing (source cats; if its folder moved, run "
                         "`curate relocate /ws --source cats=NEW_FOLDER`, or `curate relocate /ws --search FOLDER` "
                         "to find the files by content; if the file is gone, re-run `curate ingest` on the source "
                         "and then `curate prune /ws --missing`)"),
    # an objects/ file: the workspace lost what a stage made
    ("/ws/objects/ab/x.png", "/ws/objects/ab/x.png: the derived image is missing (the workspace /ws lost a derived "
                             "image it made; re-run the stage that made it (faces, square, crop or balance))"),
])
def test_missing_file_message_names_the_fix(path, expected):
    assert missing_file_message(path, "cats", "/ws") == expected


def test_missing_error_counts_per_source(tmp_path):
    real = tmp_path / "here.jpg"
    real.write_bytes(b"x")
    rows = pd.DataFrame({"path": [str(real), "/gone/a.jpg", "/gone/b.jpg", "/away/c.jpg"],
                         "source": ["s", "a", "a", "b"]})
    err = missing_error(rows, "/ws")
    assert isinstance(err, MissingFileError)
    assert str(err).startswith("/gone/a.jpg: expected the source image of every row to export, "
                               "found 3 missing (2 of source a, 1 of source b) (if a source folder moved, run "
                               "`curate relocate /ws --source NAME=NEW_FOLDER`")
    require_files(rows.iloc[:1], "/ws")  # all there: no error
