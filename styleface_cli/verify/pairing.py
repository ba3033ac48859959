"""Which (original, anonymised) pairs ``styleface verify`` compares.

- two files: that pair;
- two folders: every media file under ORIGINAL with the file at the same relative path under ANONYMIZED,
  or, when there is none, styleface's own output name ``<stem>_anonymized<ext>`` there;
- ``--report run.jsonl``: every input of a dataset run (``styleface anonymize --report``, records described in
  ``styleface_cli/report.py``) whose last record's ``status`` is ``"ok"`` (each line a JSON object with at
  least ``input``, ``output`` and ``status``); relative paths are taken from the current folder, else from
  the report's folder. (A WebDataset tar shard is not a video or photo: its pair fails as unreadable.)

A pair whose output is missing is still listed (its audit fails with that reason): a dataset that lost a
file must not pass.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from styleface_cli.errors import ConfigError, InputError
from styleface_cli.inputs import MEDIA_SUFFIXES


@dataclasses.dataclass(frozen=True)
class Pair:
    original: Path
    anonymized: Path

    @property
    def source(self) -> Path:
        """The file the progress display names (``console.DatasetProgress`` shows ``job.source.name``)."""
        return self.anonymized


def pairs_from_paths(original: Path, anonymized: Path) -> list[Pair]:
    original, anonymized = Path(original), Path(anonymized)
    if not original.exists():
        raise InputError(f"{original}: no such file or folder")
    if original.is_dir() != anonymized.is_dir() and anonymized.exists():
        raise ConfigError(f"{original} and {anonymized}: give two files or two folders")
    if not original.is_dir():
        return [Pair(original, anonymized)]
    pairs = []
    for source in sorted(p for p in original.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES
                         and not p.name.startswith(".")):
        relative = source.relative_to(original)
        candidate = anonymized / relative
        if not candidate.exists():
            styleface_name = candidate.with_name(f"{candidate.stem}_anonymized{candidate.suffix}")
            candidate = styleface_name if styleface_name.exists() else candidate
        pairs.append(Pair(source, candidate))
    if not pairs:
        raise InputError(f"{original}: no photos or videos in this folder")
    return pairs


def pairs_from_report(report: Path) -> list[Pair]:
    """The (input, output) of the last record of each input and output (the input's ``key``, else its
    ``input``) whose status is "ok", in report order; a torn last line (a crashed run) is ignored, as
    ``--resume`` does."""
    report = Path(report)
    try:
        lines = report.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as error:
        raise InputError(f"{report}: cannot read the run report ({error.strerror or error})") from None
    latest: dict[tuple[str, str], dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = (record.get("key") or record["input"], record["output"])
            record.get("status")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            if number == len(lines) and not line.rstrip().endswith("}"):
                continue  # the line a crash cut short
            raise InputError(f"{report}:{number}: not a run-report line (a JSON object with input, output and status)") from None
        latest.pop(key, None)  # a later record of the same input replaces it (and moves it to the end)
        latest[key] = record
    pairs = [Pair(_resolve(record["input"], report), _resolve(record["output"], report))
             for record in latest.values() if record.get("status") == "ok" and record["input"] and record["output"]]
    if not pairs:
        raise InputError(f"{report}: no successful (status \"ok\") pairs to verify")
    return pairs


def _resolve(path: str, report: Path) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    beside = report.parent / candidate
    return beside if beside.exists() else candidate
