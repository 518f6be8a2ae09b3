"""Readers for the data files in the formats they are distributed in, and for tfds.

Every reader names the file and the 1-based line of a malformed row, and a missing file
error names the path and the format that was expected there.  Parsed files are cached by
(path, size, mtime), so building several pools from one file parses it once.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.parsers import expat

from gptjax import paths


def first_existing(candidates: Sequence[Path], fmt: str, what: str) -> Path:
    """The first candidate that exists, else FileNotFoundError naming them and the format."""
    for path in candidates:
        if path.exists():
            return path
    listed = " or ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"{what}: file not found: {listed} (expected {fmt}; the data root comes from the "
        f"data_root argument or ${paths.DATA_ROOT_ENV})"
    )


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _open_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


# --------------------------------------------------------------------------- TSV (GLUE style)


def read_tsv(
    path: Path, columns: dict[str, tuple[str, ...]]
) -> tuple[tuple[int, dict[str, str]], ...]:
    """Rows of a tab-separated file with a header, columns looked up by header name.

    ``columns`` maps an output name to the header names accepted for it (first match wins),
    e.g. ``{"text": ("sentence", "content")}``.  Returns (line number, row) pairs.
    """
    return _read_tsv_cached(_stamp(path), tuple((k, v) for k, v in columns.items()))


@functools.lru_cache(maxsize=32)
def _read_tsv_cached(stamp: tuple, columns: tuple) -> tuple[tuple[int, dict[str, str]], ...]:
    path = Path(stamp[0])
    lines = _open_lines(path)
    if not lines:
        raise ValueError(f"{path}, line 1: empty file (expected a tab-separated header row)")
    header = [h.strip() for h in lines[0].split("\t")]
    index: dict[str, int] = {}
    for out, accepted in columns:
        found = [header.index(h) for h in accepted if h in header]
        if not found:
            raise ValueError(
                f"{path}, line 1: header {header} has no column named "
                f"{' or '.join(repr(a) for a in accepted)}"
            )
        index[out] = found[0]
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(
                f"{path}, line {lineno}: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}), found {len(cells)}"
            )
        rows.append((lineno, {out: cells[i].strip() for out, i in index.items()}))
    return tuple(rows)


# --------------------------------------------------------------------------- JSONL


def read_jsonl(path: Path) -> tuple[tuple[int, dict[str, Any]], ...]:
    """(line number, object) for every non-empty line of a JSON Lines file."""
    return _read_jsonl_cached(_stamp(path))


@functools.lru_cache(maxsize=32)
def _read_jsonl_cached(stamp: tuple) -> tuple[tuple[int, dict[str, Any]], ...]:
    path = Path(stamp[0])
    rows = []
    for lineno, line in enumerate(_open_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        rows.append((lineno, obj))
    return tuple(rows)


def field(obj: dict[str, Any], names: Iterable[str], path: Path, lineno: int, kind=str) -> Any:
    """The first of ``names`` present in a JSON row, checked to be of type ``kind``."""
    names = tuple(names)
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, kind):
                raise ValueError(
                    f"{path}, line {lineno}: field {name!r} should be "
                    f"{getattr(kind, '__name__', kind)}, got {value!r:.60}"
                )
            return value
    raise ValueError(
        f"{path}, line {lineno}: missing field {' or '.join(repr(n) for n in names)} "
        f"(keys: {sorted(obj)})"
    )


# --------------------------------------------------------------------------- aligned plain text


def read_parallel(files: Sequence[Path]) -> tuple[tuple[str, ...], ...]:
    """Line-aligned plain-text files (line i of each file belongs together).

    Returns one tuple per line, one entry per file.  Files of different lengths, or an empty
    line, are errors naming the file and line.
    """
    return _read_parallel_cached(tuple(_stamp(p) for p in files))


@functools.lru_cache(maxsize=32)
def _read_parallel_cached(stamps: tuple) -> tuple[tuple[str, ...], ...]:
    files = [Path(s[0]) for s in stamps]
    columns = [_open_lines(p) for p in files]
    n = len(columns[0])
    for path, col in zip(files[1:], columns[1:], strict=True):
        if len(col) != n:
            short = files[0] if n < len(col) else path
            raise ValueError(
                f"{short}, line {min(n, len(col)) + 1}: file ends here, but the aligned files "
                f"have {n} and {len(col)} lines ({files[0]}, {path})"
            )
    for path, col in zip(files, columns, strict=True):
        for lineno, line in enumerate(col, start=1):
            if not line.strip():
                raise ValueError(f"{path}, line {lineno}: empty segment in a line-aligned file")
    return tuple(zip(*[[ln.strip() for ln in col] for col in columns], strict=True))


# --------------------------------------------------------------------------- WebNLG XML


def read_webnlg_xml(path: Path) -> tuple[dict[str, Any], ...]:
    """Entries of one WebNLG 3.0 XML file.

    Each entry: ``{"eid", "category", "size", "line", "triples": [str], "lexes": [str]}``;
    triples come from ``<modifiedtripleset><mtriple>s | p | o</mtriple>``, texts from
    ``<lex>``.  An entry without triples, or a triple without two ``|``, is an error naming
    file and line; entries without ``<lex>`` (the test file without references) get [].
    """
    return _read_webnlg_cached(_stamp(path))


@functools.lru_cache(maxsize=256)
def _read_webnlg_cached(stamp: tuple) -> tuple[dict[str, Any], ...]:
    path = Path(stamp[0])
    parser = expat.ParserCreate("utf-8")
    entries: list[dict[str, Any]] = []
    state: dict[str, Any] = {"entry": None, "buf": None, "in_mod": False}

    def start(tag: str, attrs: dict[str, str]) -> None:
        line = parser.CurrentLineNumber
        if tag == "entry":
            state["entry"] = {
                "eid": attrs.get("eid", ""),
                "category": attrs.get("category", ""),
                "size": attrs.get("size", ""),
                "line": line,
                "triples": [],
                "lexes": [],
            }
        elif tag == "modifiedtripleset":
            state["in_mod"] = True
        elif tag in ("mtriple", "lex") and state["entry"] is not None:
            state["buf"] = []
            state["buf_line"] = line

    def end(tag: str) -> None:
        entry = state["entry"]
        if tag == "modifiedtripleset":
            state["in_mod"] = False
        elif tag == "mtriple" and entry is not None and state["in_mod"]:
            text = "".join(state["buf"]).strip()
            if text.count("|") < 2:
                raise ValueError(
                    f"{path}, line {state['buf_line']}: triple {text!r} is not 'subject | "
                    "predicate | object'"
                )
            entry["triples"].append(text)
            state["buf"] = None
        elif tag == "lex" and entry is not None:
            text = " ".join("".join(state["buf"]).split())
            if text:
                entry["lexes"].append(text)
            state["buf"] = None
        elif tag == "entry" and entry is not None:
            if not entry["triples"]:
                raise ValueError(
                    f"{path}, line {entry['line']}: entry {entry['eid']} has no <mtriple>"
                )
            entries.append(entry)
            state["entry"] = None

    def data(text: str) -> None:
        if state["buf"] is not None:
            state["buf"].append(text)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except expat.ExpatError as err:
        raise ValueError(
            f"{path}, line {err.lineno}: malformed XML ({expat.ErrorString(err.code)})"
        ) from None
    return tuple(entries)


def webnlg_split_files(folder: Path) -> list[Path]:
    """The XML files of a WebNLG split folder (``train/1triples/*.xml`` ...), sorted."""
    return sorted(folder.glob("*triples/*.xml"), key=lambda p: (p.parent.name, p.name))


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def format_triple(triple: str) -> str:
    """``Aarhus_Airport | cityServed | Aarhus`` -> ``Aarhus Airport | city served | Aarhus``."""
    parts = [p.strip() for p in triple.split("|")]
    if len(parts) < 3:
        return triple.strip()
    subj, pred, obj = parts[0], parts[1], " | ".join(parts[2:])
    pred = _CAMEL.sub(" ", pred).replace("_", " ").lower()
    return f"{subj.replace('_', ' ')} | {pred} | {obj.replace('_', ' ')}"


# --------------------------------------------------------------------------- tfds

#: task name -> (tfds dataset name, modules that register its builder: first importable wins)
TFDS_NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sst2": ("glue/sst2", ("tensorflow_datasets.text.glue",)),
    "rte": ("glue/rte", ("tensorflow_datasets.text.glue",)),
    "boolq": ("bool_q", ("tensorflow_datasets.text.bool_q", "tensorflow_datasets.datasets.bool_q")),
    "webnlg": ("gem/web_nlg_en", ("tensorflow_datasets.text.gem",)),
    "wmt16_de_en": ("wmt16_translate/de-en", ("tensorflow_datasets.translate.wmt16",)),
}


def tfds_records(
    task: str, split: str, data_dir: str | os.PathLike | None = None
) -> Sequence[dict]:
    """Random-access records of a prepared tfds dataset, read with ``tfds.data_source``.

    Needs no TensorFlow: ``data_source`` reads the ArrayRecord files that
    ``download_and_prepare(file_format="array_record")`` writes.  Nothing is downloaded.
    """
    name, modules = TFDS_NAMES[task]
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise ImportError(
            "source='tfds' needs tensorflow-datasets (pip install tensorflow-datasets)"
        ) from err
    # tfds imports its dataset builders lazily: import the one we need so it is registered.
    for mod in modules:
        try:
            importlib.import_module(mod)
            break
        except ImportError:
            continue
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False, try_gcs=False)
    except Exception as err:
        raise FileNotFoundError(
            f"{task}: tfds dataset {name!r} split {split!r} is not prepared under "
            f"{data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'} (expected ArrayRecord files "
            f"written by `tfds build {name} --file_format=array_record`): {err}"
        ) from err


def as_text(value: Any) -> str:
    """tfds text features come back as str or bytes (or 0-d arrays of them)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def as_text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [as_text(value)]
    return [as_text(v) for v in list(value)]
