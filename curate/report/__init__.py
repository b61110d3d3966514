"""``curate report``'s page: what it shows and how it is drawn.

The report stage (:mod:`curate.stages.report`) reads the workspace and writes
the page; this package computes and draws it:

- :mod:`curate.report.tables`: what to show, as tables (pure functions of the
  manifest: counts, the balance histogram, duplicate groups, leakage);
- :mod:`curate.report.render`: the sections and the page (:func:`render_report`,
  :class:`ReportOptions`);
- :mod:`curate.report.thumbs`: small base64 JPEG thumbnails, decoded at
  reduced scale (Pillow draft mode) in a thread pool;
- :mod:`curate.report.plots`: matplotlib charts, inlined as PNG data URIs;
- :mod:`curate.report.html`: escaping, tables, figures, sections, the page.
"""
