"""Regenerate the schema copies in schemas/ from curate.schema (the single source).

    python scripts/gen_schemas.py
tests/test_schema.py fails when the copies are stale.
"""

from pathlib import Path

from curate.schema import schema_files

out = Path(__file__).resolve().parents[1] / "schemas"
out.mkdir(exist_ok=True)
for name, text in schema_files().items():
    (out / name).write_text(text)
    print(f"wrote schemas/{name}")
