"""curate.report.render: the page is valid, self-contained HTML, its pictures are capped, and derived
rows are pictured as what they are kept as now. (The page of real workspaces: tests/stages/test_report.py.)"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np

from curate.report.render import ReportOptions, render_report
from curate.schema import empty_annotations
from tests.report.test_tables import manifest_of

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- a strict structural check and table extraction (tests/stages/test_report.py uses them too) -----------

class _Doc(HTMLParser):
    """Parses a page; records structure errors, ids, links, tables and images per section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.refs: list[tuple[str, str]] = []  # (attr, value) of src/href
        self.tables: dict[str, list[list[str]]] = {}
        self.images: dict[str, int] = {}  # section id -> <img> count
        self.section_ran: dict[str, str] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.append(str(a["id"]))
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            if name in a:
                self.refs.append((name, str(a[name])))
        if "style" in a and "url(" in str(a["style"]):
            self.errors.append(f"inline style with url(): {a['style']}")
        if tag == "section":
            self._section = str(a.get("id"))
            self.section_ran[self._section] = str(a.get("data-ran"))
        if tag == "img" and self._section:
            self.images[self._section] = self.images.get(self._section, 0) + 1
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag for void element <{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


def parse(page: str) -> _Doc:
    doc = _Doc()
    doc.feed(page)
    doc.close()
    return doc


def table(doc: _Doc, table_id: str) -> dict[str, list[str]]:
    """Rows of a table as first cell -> other cells (header row excluded)."""
    rows = doc.tables[table_id]
    return {r[0]: r[1:] for r in rows[1:]}


def assert_valid_and_self_contained(page: str) -> _Doc:
    doc = parse(page)
    assert doc.doctype, "missing <!DOCTYPE html>"
    assert doc.errors == []
    assert doc.stack == [], f"unclosed tags: {doc.stack}"
    assert len(doc.ids) == len(set(doc.ids)), "duplicate id attributes"
    for attr, value in doc.refs:
        if attr == "href":
            assert value.startswith("#") and value[1:] in doc.ids, f"href {value!r} is not an in-page anchor"
        else:
            assert value.startswith("data:image/"), f"{attr}={value[:60]!r} is not an inline image"
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.I), "page loads or runs something"
    assert "@import" not in page and "url(" not in page
    return doc


# -- limits: pictures are sampled, so the page does not grow with the workspace -------------------------

def test_pictures_are_capped_whatever_the_workspace_size(skimage_dir):
    files = sorted(str(p) for p in skimage_dir.glob("*.png"))[:10]
    n = 3000
    rng = np.random.default_rng(0)
    reasons = rng.choice(["too_small", "bad_aspect", "rejected_in_review", "duplicate"], n)
    status = np.where(rng.random(n) < 0.5, "kept", "dropped")
    m = manifest_of(path=[files[i % len(files)] for i in range(n)], width=[200] * n, height=[100] * n,
           status=status.tolist(), reason=[r if s == "dropped" else None for r, s in zip(reasons, status, strict=True)],
           label=[f"c{i % 7}" for i in range(n)], decided_by=["ingest"] * n)
    dup = m.index[m["reason"] == "duplicate"]
    m.loc[dup, "duplicate_of"] = "r0"
    m.loc[dup, "dup_group"] = "r0"
    m.loc[0, ["status", "reason", "dup_group", "duplicate_of"]] = ["kept", None, "r0", None]
    group_size = int((m["dup_group"] == "r0").sum())
    opts = ReportOptions(per_reason=3, max_dup_groups=1, max_group_members=4, workers=2)
    page, summary = render_report(m, empty_annotations(), [], opts, title="capped")
    doc = assert_valid_and_self_contained(page)
    assert doc.images["dropped"] == 4 * 3  # 4 reasons with pictures, 3 each
    assert doc.images["duplicates"] == 4
    assert f"… and {group_size - 4:,} more" in page
    assert summary["thumbnails"] <= 16 and len(page) < 600_000


# -- derived rows ----------------------------------------------------------------------------------------

def test_face_crops_a_later_stage_superseded_still_show(skimage_dir):
    """Issue 17: after `curate square` every crop was framed red as superseded and the page said 0 kept.
    A crop is shown as what it is kept as now, with the chain that led there."""
    photo = str(skimage_dir / "astronaut.png")
    m = manifest_of(path=[photo] * 3, width=[512, 200, 224], height=[512, 200, 224],
           parent_id=[None, "r0", "r1"], layout=["flat", "faces", "square"],
           status=["dropped", "dropped", "kept"], reason=["superseded", "superseded", None],
           decided_by=["faces", "square", "square"], label=["me"] * 3)
    page, _ = render_report(m, empty_annotations(), [{"command": "faces"}, {"command": "square"}],
                            ReportOptions(workers=1), title="faces then square")
    doc = assert_valid_and_self_contained(page)
    faces = page[page.index('id="faces"'):page.index('id="leakage"')]
    assert "<b>1 face crop</b> from 1 image, 1 kept (1 as its <code>square</code> row);" in faces
    assert "superseded" not in faces.split("</p>", 1)[1]  # no crop framed red
    assert doc.images["faces"] == 1
    assert '<div class="thumb kept" title="s/1.jpg\nphoto 512×512 → faces 200×200 → square 224×224' in faces
    assert '<span class="badge kept">square</span> me' in faces
    dropped = page[page.index('id="dropped"'):page.index('id="faces"')]
    assert "Nothing was dropped." in dropped and "2 rows were replaced by what a later stage made of them" in dropped


def test_a_crop_nothing_was_kept_from_is_red_with_its_fate(skimage_dir):
    photo = str(skimage_dir / "astronaut.png")
    m = manifest_of(path=[photo] * 3, width=[512, 200, 224], height=[512, 200, 224],
           parent_id=[None, "r0", "r1"], layout=["flat", "faces", "square"],
           status=["dropped", "dropped", "dropped"], reason=["superseded", "superseded", "rejected_in_review"],
           decided_by=["faces", "square", "review"], label=["me"] * 3)
    page, _ = render_report(m, empty_annotations(), [{"command": "faces"}, {"command": "square"}],
                            ReportOptions(workers=1), title="rejected square")
    faces = page[page.index('id="faces"'):page.index('id="leakage"')]
    assert "<b>1 face crop</b> from 1 image, 0 kept, 1 superseded, then rejected_in_review;" in faces
    assert '<span class="badge dropped">superseded, then rejected_in_review</span> me' in faces
