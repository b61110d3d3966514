"""Regenerate the schema copies in schemas/ from curate.schema (the single source).

    python scripts/gen_schemas.py
tests/test_schema.py fails when the copies are stale.
"""

import json
from pathlib import Path

from curate.formats.jsonbox import SHIPPED_MAPPINGS, data_text, load_mapping, schema_for_mapping
from curate.schema import schema_files

repo = Path(__file__).resolve().parents[1]
out = repo / "schemas"
out.mkdir(exist_ok=True)
for name, text in schema_files().items():
    (out / name).write_text(text)
    print(f"wrote schemas/{name}")
# Per-image JSON mappings shipped in curate/data: each one's schema is generated from it,
# and schemas/ holds a copy of every shipped file (tests/formats/test_jsonbox.py checks both).
(out / "jsonbox.mapping.schema.json").write_text(data_text("jsonbox.mapping.schema.json"))
for preset in SHIPPED_MAPPINGS:
    mapping, _ = load_mapping(preset)
    schema = json.dumps(schema_for_mapping(mapping), indent=2, ensure_ascii=False) + "\n"
    for folder in (repo / "curate" / "data", out):
        (folder / f"jsonbox.{preset}.schema.json").write_text(schema)
        if folder == out:
            (folder / f"jsonbox.{preset}.mapping.json").write_text(data_text(f"jsonbox.{preset}.mapping.json"))
    print(f"wrote schemas/jsonbox.{preset}.schema.json")
