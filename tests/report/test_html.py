"""The report's HTML pieces: everything escaped, numbers formatted, nothing linked outside the page."""

from __future__ import annotations

import pandas as pd

from curate.report.html import esc, table


def test_esc_escapes_and_blanks_missing_values():
    assert esc('<img src=x onerror="a">') == "&lt;img src=x onerror=&quot;a&quot;&gt;"
    assert esc(None) == "" and esc(float("nan")) == ""


def test_table_escapes_cells_and_formats_numbers():
    df = pd.DataFrame({"label": ["<b>cat</b>", "dog"], "rows": [12345, 2], "share": [0.12345, None]},
                      index=pd.Index(["a", "b"], name="source"))
    text = table(df, table_id="t")
    assert "&lt;b&gt;cat&lt;/b&gt;" in text and "<b>cat</b>" not in text
    assert "12,345" in text and "0.123" in text
    assert "http" not in text
