"""``curate report``: what happened to a workspace, as one self-contained HTML page.

The report reads only the manifest contract (``curate.schema``), the
annotations and the ``runs/`` records, so it shows every stage the same way,
whichever engineer wrote it. Sections, in order:

- counts per source, status, reason, label and split (tables and bar charts);
- the class histogram before and after ``curate balance`` (before = kept rows
  that balance did not make, plus rows it dropped as ``balanced_out``);
- the distribution of image sizes and aspect ratios;
- the largest duplicate groups, side by side, the kept one marked;
- a sample of dropped images per reason (files that cannot be decoded are
  listed by path instead);
- a grid of face crops (derived rows made by ``curate faces``);
- leakage checks: duplicate groups, byte-identical files and copies of one
  source file that span splits, and label conflicts;
- the runs recorded in ``runs/``, oldest first, with their options.

A section whose stage has not run says so instead of vanishing. The tables
are computed in :mod:`curate.report.tables` and drawn by
:func:`curate.report.render.render_report`; this stage reads the workspace and
writes the page.

Only a fixed number of thumbnails is drawn (small JPEGs, decoded at reduced
scale in a thread pool), so a 50,000-row workspace reports in seconds and the
page stays a few MB (see docs/benchmarks.md).

    >>> import skimage, tempfile
    >>> from curate.stages.ingest import IngestOptions, SourceSpec, ingest
    >>> from curate.workspace import Workspace
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> _ = ws.run_stage("ingest", ingest, IngestOptions([SourceSpec(skimage.data_dir, "sk", "flat")], workers=1))
    >>> res = ws.run_stage("report", report, ReportOptions(workers=1))
    >>> res.summary["out"].endswith("report.html")
    True
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from curate import __version__
from curate.errors import OptionError
from curate.report import html as h
from curate.report.render import ReportOptions as ReportOptions
from curate.report.render import render_report
from curate.workspace import StageResult, Workspace, atomic_write_bytes, utc_now


def report(manifest: pd.DataFrame, options: ReportOptions, *, ws: Workspace,
           annotations: pd.DataFrame) -> StageResult:
    """Write the HTML report of ``ws`` to ``options.out`` (default ``WS/report.html``).

    Reads the tables and ``runs/``; changes nothing in the workspace, so the
    result is not written back and no run is recorded.
    """
    options.check()
    from curate.paths import check_output, workspace_sources

    out = Path(options.out) if options.out is not None else ws.root / "report.html"
    out = check_output(out, sources=workspace_sources(ws.root), workspace=ws.root)
    if out.is_dir():
        raise OptionError("", field="--out", expected="a file name for the HTML report", found=f"a folder: {out}",
                          hint="add a file name, e.g. --out report.html")
    t0 = time.perf_counter()
    runs = ws.runs()
    meta = (f"workspace <code>{h.esc(ws.root)}</code> · generated {h.esc(utc_now()[:19].replace('T', ' '))} UTC "
            f"· curate {h.esc(__version__)}")
    page, summary = render_report(manifest, annotations, runs, options,
                                  title=options.title or f"curate report: {ws.name}", meta=meta)
    data = page.encode("utf-8")
    atomic_write_bytes(out.absolute(), data, sweep=True)  # a killed report's temporary beside it goes
    summary = {"out": str(out.absolute()), "bytes": len(data), **summary,
               "seconds": round(time.perf_counter() - t0, 2)}
    return StageResult(manifest=manifest, summary=summary, write=False)
