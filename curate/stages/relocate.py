"""``curate relocate``: point a workspace at source files that moved.

The manifest keeps absolute paths (DESIGN.md), and sources are never moved
by curate; but people move them. Two ways to follow:

- ``--source NAME=NEWPATH`` re-roots one source: every row of it whose file
  was under the recorded folder (``sources.json``) is read under NEWPATH
  (``path`` of its ingested rows, ``origin_path`` of every row descending
  from them), and ``sources.json`` records NEWPATH. The files found there are
  checked against the manifest first: the size of every file, and the sha256
  of every file (``--verify all``, the default), of a seeded sample
  (``--verify sample``), or none (``--verify size``). Hashing runs at about
  450 MB/s per core here: 0.3 ms for a corpus photo that took 33 ms to ingest,
  so checking every file costs about 1 % of the ingest it protects
  (docs/manifest.md#moving-a-workspace-or-its-sources). NEWPATH must
  hold at least one of the source's files unchanged, so a wrong folder is
  refused; files missing or changed there are reported.
- ``--search DIR`` finds every source file the manifest names but that is not
  where it was, by content: files under DIR whose size matches a missing one
  are hashed, and an equal sha256 is a match. A source whose files are all
  found under one new folder (at their old place within the source) records
  that folder, as with ``--source``.

Nothing is decided again: statuses, labels and splits stay. A row that
``ingest`` marked ``missing_file`` and that is found again is restored by
running ``curate ingest`` on the source once more (the summary says so).

    >>> RelocateOptions(sources={"cats": "/new/cats"}).check()
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curate.errors import OptionError, SourceError
from curate.paths import check_source_place
from curate.summary import summarize
from curate.walk import is_workspace
from curate.workspace import SOURCES_FILE, StageResult, Workspace, load_sources, rebase_paths, sources_bytes

VERIFY_MODES = ("all", "sample", "size")
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".xml", ".yaml", ".yml")


@dataclass
class RelocateOptions:
    sources: dict[str, str | Path] = field(default_factory=dict)  # source name -> its new folder (or list file)
    search: list[str | Path] = field(default_factory=list)  # folders to find missing source files in, by sha256
    verify: str = "all"  # sha256 of every moved file, a sample of them, or sizes only
    sample_size: int = 200  # files hashed per source with verify="sample"
    seed: int = 0
    dry_run: bool = False
    workers: int = 0

    def check(self) -> None:
        if not self.sources and not self.search:
            raise OptionError("", field="relocate", expected="--source NAME=NEWPATH or --search DIR",
                              found="neither")
        if self.verify not in VERIFY_MODES:
            raise OptionError("", field="--verify", expected=f"one of {VERIFY_MODES}", found=self.verify)
        if self.sample_size < 1:
            raise OptionError("", field="--sample", expected="at least 1 file", found=self.sample_size)


def parse_source_moves(values: list[str] | tuple[str, ...]) -> dict[str, str | Path]:
    """``["cats=/new/cats", ...]`` -> ``{"cats": "/new/cats"}``.

    >>> parse_source_moves(["cats=/new/c=1"])
    {'cats': '/new/c=1'}
    """
    out: dict[str, str | Path] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise OptionError("", field="--source", expected="NAME=NEWPATH", found=repr(v),
                              hint="e.g. --source photos=/mnt/disk2/photos")
        out[name.strip()] = path.strip()
    return out


def sha256_file(path: str) -> tuple[str, str | None]:
    """(path, sha256 of its bytes), or (path, None) when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return path, None
    return path, h.hexdigest()


def _hash_all(paths: list[str], workers: int) -> dict[str, str | None]:
    from curate.parallel import stream_map

    return dict(stream_map(sha256_file, paths, workers=workers, in_process_below=64, max_chunk=8))


def _file_size(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if os.path.isfile(path) else None


# -- --source NAME=NEWPATH -----------------------------------------------------

def _roots(old: Path, new: Path) -> tuple[str, str]:
    """(old, new) folder the source's files are under: the folder itself, or a list file's folder."""
    return (str(old), str(new)) if new.is_dir() else (str(old.parent), str(new.parent))


def _check_moved(rows: pd.DataFrame, name: str, new: Path, options: RelocateOptions
                 ) -> tuple[dict[str, Any], list[str]]:
    """Check the rebased rows' files: (counts, warnings). Refuses a folder that holds none of them unchanged."""
    known = rows[rows["sha256"].notna()]  # files read once (a stage may have found them missing since)
    paths = known["path"].astype(str).tolist()
    sizes = [_file_size(p) for p in paths]
    expected_sizes = known["file_size"].tolist()
    present = [p for p, s in zip(paths, sizes, strict=True) if s is not None]
    size_differs = [(p, e, s) for p, e, s in zip(paths, expected_sizes, sizes, strict=True)
                    if s is not None and not pd.isna(e) and int(e) != s]
    to_hash = [p for p in present if p not in {d[0] for d in size_differs}]
    if options.verify == "sample" and len(to_hash) > options.sample_size:
        to_hash = sorted(random.Random(options.seed).sample(to_hash, options.sample_size))
    elif options.verify == "size":
        to_hash = []
    digests = _hash_all(to_hash, options.workers)
    expected_sha = dict(zip(paths, known["sha256"], strict=True))
    sha_differs = [p for p in to_hash if digests.get(p) != expected_sha[p]]
    same = len(present) - len(size_differs) - len(sha_differs)
    if len(known) and same == 0:
        example = paths[0]
        found = (f"none of its {len(known)} files there (e.g. no {example})" if not present else
                 f"{len(present)} of its files there, every one of them different")
        raise SourceError("", file=new, field=f"source {name}", expected="the folder the source's files moved to",
                          found=found, hint="check the path; a folder with other photos is a new source: "
                                            "`curate ingest FOLDER --into WS`")
    missing = [p for p, s in zip(paths, sizes, strict=True) if s is None]
    warnings = []
    if missing:
        warnings.append(f"source {name}: {len(missing)} of {len(known)} files are not in {new} "
                        f"(e.g. {missing[0]}); find them with `curate relocate WS --search FOLDER`")
    changed = [p for p, _e, _s in size_differs] + sha_differs
    if changed:
        warnings.append(f"source {name}: {len(changed)} files differ from what was ingested (e.g. {changed[0]}); "
                        f"re-read them with `curate ingest {new} --into WS --source {name}`")
    counts = {"files": len(known), "present": len(present), "sha256_checked": len(to_hash),
              "missing": len(missing), "changed": len(changed)}
    return counts, warnings


def _move_source(manifest: pd.DataFrame, name: str, new: Path, known: dict[str, dict[str, Any]],
                 ws: Workspace, options: RelocateOptions) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    if name not in known:
        raise OptionError("", field="--source", expected=f"a source of this workspace: {', '.join(sorted(known))}",
                          found=name, hint="see `curate status WS`")
    if not new.exists():
        raise SourceError("", file=new, expected="an existing folder or file", found="nothing there")
    check_source_place(new, ws.root)
    old = Path(known[name]["path"])
    old_root, new_root = _roots(old, new)
    mine = manifest["source"] == name
    moved = rebase_paths(manifest[mine], old_root, new_root)
    ingested = moved[moved["parent_id"].isna()]
    counts, warnings = _check_moved(ingested, name, new, options)
    out = manifest.copy()
    out.loc[mine, ["path", "origin_path"]] = moved[["path", "origin_path"]].to_numpy()
    changed = int((moved["path"] != manifest.loc[mine, "path"]).sum()
                  + (moved["origin_path"] != manifest.loc[mine, "origin_path"]).sum())
    known[name] = {**known[name], "path": str(new)}
    return out, {"from": str(old), "to": str(new), "paths_changed": changed, **counts}, warnings


# -- --search DIR --------------------------------------------------------------

def _walk_files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        if is_workspace(dirpath):  # a workspace's own files are never a source's
            dirs.clear()
            continue
        out += [os.path.join(dirpath, f) for f in files]
    return sorted(out)


def _pair(rows: pd.DataFrame, files: list[str]) -> list[tuple[int, str]]:
    """Match rows and files of one sha256: the file at the row's place in its source first, then by name."""
    pairs: list[tuple[int, str]] = []
    free = list(files)
    for how in ("rel_path", "name", "any"):
        for i, rel in zip(rows.index, rows["rel_path"].astype(str), strict=True):
            if i in {p[0] for p in pairs} or not free:
                continue
            fit = [f for f in free if how == "any" or f.endswith(os.sep + (rel if how == "rel_path"
                                                                           else os.path.basename(rel)))]
            if fit:
                pairs.append((int(i), fit[0]))
                free.remove(fit[0])
    return pairs


def _new_source_path(old: Path, root: str) -> str:
    """Where a source now is, given the folder its files were found under."""
    if old.suffix.lower() in LIST_SUFFIXES and os.path.isfile(os.path.join(root, old.name)):
        return os.path.join(root, old.name)  # a list source: the list moved with its images
    return root


def _search(manifest: pd.DataFrame, folders: list[Path], known: dict[str, dict[str, Any]],
            options: RelocateOptions) -> tuple[pd.DataFrame, dict[str, Any], list[dict[str, str]], list[str]]:
    ingested = manifest["parent_id"].isna() & manifest["sha256"].notna() & manifest["file_size"].notna()
    candidates = manifest[ingested]
    lost = candidates[[not os.path.isfile(p) for p in candidates["path"].astype(str)]]
    summary: dict[str, Any] = {"missing_before": len(lost), "found": 0, "files_hashed": 0}
    if not len(lost):
        return manifest, summary, [], []
    sizes = set(lost["file_size"].astype(int))
    taken = set(manifest["path"].astype(str))  # a file another row already names is not a match
    files = [f for folder in folders for f in _walk_files(folder)
             if f not in taken and _file_size(f) in sizes]
    digests = _hash_all(sorted(set(files)), options.workers)
    summary["files_hashed"] = len(digests)
    by_sha: dict[str, list[str]] = {}
    for f, d in digests.items():
        if d is not None:
            by_sha.setdefault(d, []).append(f)
    found: dict[str, str] = {}  # old path -> new path
    for sha, group in lost.groupby("sha256", sort=True):
        for i, f in _pair(group, sorted(by_sha.get(str(sha), []))):
            found[str(manifest.at[i, "path"])] = f
    out = manifest.copy()
    for col in ("path", "origin_path"):
        out[col] = out[col].map(lambda p: found.get(p, p))
    summary["found"] = len(found)
    summary["still_missing"] = len(lost) - len(found)
    warnings: list[str] = []
    moved: list[dict[str, str]] = []
    for name, rows in lost.groupby("source", sort=True):
        hits = [(str(r), found[str(p)]) for p, r in zip(rows["path"], rows["rel_path"], strict=True)
                if str(p) in found]
        moved += [{"source": str(name), "from": str(p), "to": found[str(p)]} for p in rows["path"] if str(p) in found]
        roots = {f[: -len(rel) - 1] for rel, f in hits if f.endswith(os.sep + rel)}
        old = Path(known.get(str(name), {}).get("path", ""))
        if hits and len(roots) == 1 and len(hits) == len(rows) and not old.exists() and str(name) in known:
            known[str(name)] = {**known[str(name)], "path": _new_source_path(old, roots.pop())}
            summary.setdefault("sources", {})[str(name)] = {"from": str(old), "to": known[str(name)]["path"]}
        elif hits:
            warnings.append(f"source {name}: {len(hits)} of its {len(rows)} missing files were found, not all under "
                            f"one folder, so its recorded folder {old} stays; `curate ingest` on it would mark "
                            "the files found elsewhere missing_file again")
    if summary["still_missing"]:
        first = lost.loc[~lost["path"].isin(list(found)), "path"].iloc[0]
        warnings.append(f"{summary['still_missing']} missing source files were not found under "
                        f"{', '.join(map(str, folders))} (e.g. {first})")
    return out, summary, moved, warnings


# -- the stage -------------------------------------------------------------------

def relocate(manifest: pd.DataFrame, options: RelocateOptions, *, ws: Workspace,
             annotations: pd.DataFrame | None = None) -> StageResult:
    """Re-root sources (``options.sources``) and find moved files (``options.search``); see the module docstring.

        >>> ws.run_stage("relocate", relocate, RelocateOptions(sources={"cats": "/mnt/cats"}))  # doctest: +SKIP
    """
    options.check()
    known = load_sources(ws)
    out = manifest
    warnings: list[str] = []
    summary: dict[str, Any] = {}
    record: dict[str, Any] = {}
    for name, new in sorted(options.sources.items()):
        out, moved, warn = _move_source(out, name, Path(new).expanduser().absolute(), known, ws, options)
        summary.setdefault("sources", {})[name] = moved
        warnings += warn
    if options.search:
        folders = [Path(f).expanduser().absolute() for f in options.search]
        for f in folders:
            if not f.is_dir():
                raise SourceError("", file=f, field="--search", expected="an existing folder", found="nothing there"
                                  if not f.exists() else "a file")
        out, found, moved_files, warn = _search(out, folders, known, options)
        for name, change in found.pop("sources", {}).items():
            summary.setdefault("sources", {})[name] = change
        summary["search"] = found
        record["found"] = moved_files
        warnings += warn
    restorable = out[(out["reason"] == "missing_file") & (out["decided_by"] == "ingest") & out["sha256"].notna()]
    restorable = restorable[[os.path.isfile(p) for p in restorable["path"].astype(str)]]
    if len(restorable):
        names = sorted(set(restorable["source"]))
        warnings.append(f"{len(restorable)} rows dropped as missing_file are there again: run `curate ingest` "
                        f"on their source ({', '.join(names)}) to restore them")
    summary = {**summarize(out), **summary}
    if warnings:
        summary["warnings"] = warnings
    record["sources_after"] = {n: s["path"] for n, s in known.items()}
    return StageResult(out, None, summary=summary, record=record, write=not options.dry_run,
                       files={SOURCES_FILE: sources_bytes(known)})
