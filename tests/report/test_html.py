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


def test_a_crop_region_is_outlined_in_the_pictures_frame() -> None:
    from curate.report.html import Thumb, thumbs

    corners = ((60.0, 20.0), (400.0, 20.0), (400.0, 280.0), (60.0, 280.0))
    html = thumbs([Thumb("data:image/jpeg;base64,AA==", "cat.jpg", outline=corners, outline_wh=(451, 300)),
                   Thumb("data:image/jpeg;base64,AA==", "crop.jpg")])
    assert html.count("<svg") == 1  # only the container is outlined
    assert 'viewBox="0 0 451 300"' in html and 'preserveAspectRatio="xMidYMid meet"' in html
    assert '<polygon points="60.0,20.0 400.0,20.0 400.0,280.0 60.0,280.0"/>' in html
    # No picture, no outline (nothing to draw on).
    assert "<svg" not in thumbs([Thumb(None, "gone.jpg", outline=corners, outline_wh=(451, 300))])
