"""Regenerate manifests/demo.csv from a fresh `curate demo` run (paths made relative)."""

import tempfile
from pathlib import Path

import pandas as pd

from curate.demo import run_demo

repo = Path(__file__).resolve().parents[1]
with tempfile.TemporaryDirectory() as tmp:
    run_demo(Path(tmp), workers=1)
    m = pd.read_parquet(Path(tmp) / "workspace" / "manifest.parquet")
    for col in ("path", "origin_path"):
        m[col] = m[col].str.replace(str(Path(tmp).resolve()) + "/", "", regex=False)
    m = m.drop(columns=["mtime_ns"])
    m.to_csv(repo / "manifests" / "demo.csv", index=False)
print("wrote manifests/demo.csv")
