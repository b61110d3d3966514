"""The face detection cache: what detection found per file content and detector settings.

``WS/cache/faces-<key>.parquet`` holds, per (sample_id, sha256), the displayed
size and every face found; the key (:meth:`DetectorConfig.cache_key`) changes
with the detector settings, its version and the model files' hashes, so a
re-run with another margin or selection only crops. A damaged cache file only
costs a re-detection.

    >>> import tempfile
    >>> from curate.workspace import Workspace
    >>> ws = Workspace.create(tempfile.mkdtemp() + "/ws")
    >>> save_cache(ws, "k1", {("s1", "ab"): ((640, 480), [Face((1, 2, 30, 40), 0.9, "short_range")])})
    >>> load_cache(ws, "k1")
    {('s1', 'ab'): ((640, 480), [Face(xyxy=(1, 2, 30, 40), score=0.9, found_by='short_range')])}
"""

from __future__ import annotations

from pathlib import Path

from curate.faces.detect import Face, faces_from_json, faces_to_json
from curate.workspace import Workspace

CACHE_DIR = "cache"

Cache = dict[tuple[str, str], tuple[tuple[int, int], list[Face]]]


def cache_path(ws: Workspace, key: str) -> Path:
    return ws.root / CACHE_DIR / f"faces-{key}.parquet"


def load_cache(ws: Workspace, key: str) -> Cache:
    import pandas as pd

    path = cache_path(ws, key)
    if not path.exists():
        return {}
    try:
        df = pd.read_parquet(path)
    except Exception:  # a damaged cache only costs a re-detection
        return {}
    return {(r.sample_id, r.sha256): ((int(r.width), int(r.height)), faces_from_json(r.faces))
            for r in df.itertuples(index=False)}


def save_cache(ws: Workspace, key: str, cache: Cache) -> None:
    import pandas as pd
    import pyarrow as pa

    from curate.workspace import atomic_write_parquet

    rows = [{"sample_id": s, "sha256": h, "width": wh[0], "height": wh[1], "faces": faces_to_json(f)}
            for (s, h), (wh, f) in cache.items()]
    df = pd.DataFrame(rows, columns=["sample_id", "sha256", "width", "height", "faces"])
    schema = pa.schema([("sample_id", pa.string()), ("sha256", pa.string()), ("width", pa.int64()),
                        ("height", pa.int64()), ("faces", pa.string())])
    atomic_write_parquet(df, cache_path(ws, key), schema)
