"""Building blocks of ``curate report``: thumbnails, plots and HTML.

The report stage itself (what to show, computed from the manifest) lives in
:mod:`curate.stages.report`; this package only turns those tables into one
self-contained HTML page:

- :mod:`curate.report.thumbs`: small base64 JPEG thumbnails, decoded at
  reduced scale (Pillow draft mode) in a thread pool;
- :mod:`curate.report.plots`: matplotlib charts, inlined as PNG data URIs;
- :mod:`curate.report.html`: escaping, tables, figures, sections, the page.
"""
