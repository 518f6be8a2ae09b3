"""The five tasks of the paper: SST-2, RTE, BoolQ, WebNLG, WMT16 de-en (own data: jsonl.py).

Local layout under the data root (``gptjax.paths.data_root``; docs/tasks.md lists the files)::

    sst2/train.tsv, sst2/dev.tsv                 GLUE-style TSV with header; label 1 = positive
    rte/train.jsonl, rte/val.jsonl               SuperGLUE JSONL {premise, hypothesis, label}
    boolq/train.jsonl (optional), boolq/dev.jsonl  Google BoolQ JSONL {question, passage, answer}
    webnlg/en/{train,dev}/*triples/*.xml         WebNLG 3.0 XML
    webnlg/en/test/rdf-to-text-generation-test-data-with-refs-en.xml
    wmt16_de_en/<split>.{de,en} or wmt16_de_en/multi30k/<split>.{de,en}, and
    wmt16_de_en/newstest2021/newstest2021.de-en.{src.de,ref.A.en,ref.B.en}

Yes/no tasks use label 1 = yes (RTE: entailment; BoolQ: answer true).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gptjax import paths
from gptjax.tasks import sources, templates
from gptjax.tasks.base import Record, Task

_ALIASES = {"dev": "validation", "val": "validation", "valid": "validation"}


def _split(split: str) -> str:
    return _ALIASES.get(split, split)


def _check_source(task: str, source: str) -> None:
    if source not in ("local", "tfds"):
        raise ValueError(f"{task}: unknown source {source!r}; expected 'local' or 'tfds'")


class _FileTask(Task):
    """A task read from local files (``source="local"``) or from prepared tfds data."""

    def __init__(self, tfds_data_dir: str | os.PathLike | None = None) -> None:
        self.tfds_data_dir = str(tfds_data_dir) if tfds_data_dir else None


class Sst2Task(_FileTask):
    name = "sst2"
    kind = "classification"
    label_words = (" negative", " positive")
    description = "SST-2 sentence sentiment (GLUE): sentence -> positive / negative"
    finetune_templates = templates.FINETUNE["sst2"]
    instruction_templates = templates.INSTRUCTION["sst2"]
    _files = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    _fmt = (
        "a GLUE-style SST-2 TSV with a header naming columns 'label' and 'sentence' (or 'content')"
    )

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        _check_source(self.name, source)
        split = _split(split)
        if source == "tfds":
            out = []
            for i, row in enumerate(sources.tfds_records(self.name, split, self.tfds_data_dir)):
                label = int(row["label"])
                if label not in (0, 1):
                    continue  # the GLUE test split is unlabelled (-1)
                text = sources.as_text(row["sentence"]).strip()
                out.append(Record({"sentence": text}, label, uid=f"sst2/tfds-{split}:{i}"))
            return out
        path = _local(data_root, "sst2", self._files, split, self._fmt, self.name)
        rows = sources.read_tsv(path, {"label": ("label",), "sentence": ("sentence", "content")})
        out = []
        for lineno, row in rows:
            if row["label"] not in ("0", "1"):
                raise ValueError(f"{path}, line {lineno}: label {row['label']!r} is not 0 or 1")
            out.append(
                Record(
                    {"sentence": row["sentence"]}, int(row["label"]), uid=f"sst2/{split}:{lineno}"
                )
            )
        return out


class RteTask(_FileTask):
    name = "rte"
    kind = "classification"
    label_words = (" no", " yes")
    description = "RTE textual entailment: premise + hypothesis -> yes (entailment) / no"
    finetune_templates = templates.FINETUNE["rte"]
    instruction_templates = templates.INSTRUCTION["rte"]
    _files = {"train": ("train.jsonl", "train.tsv"), "validation": ("val.jsonl", "dev.tsv")}
    _fmt = (
        "SuperGLUE RTE JSON Lines {premise, hypothesis, label: entailment|not_entailment} "
        "(or a GLUE TSV with sentence1, sentence2, label)"
    )
    _labels = {"entailment": 1, "not_entailment": 0}

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        _check_source(self.name, source)
        split = _split(split)
        if source == "tfds":
            out = []
            for i, row in enumerate(sources.tfds_records(self.name, split, self.tfds_data_dir)):
                label = int(row["label"])
                if label not in (0, 1):
                    continue
                fields = {
                    "premise": sources.as_text(row["sentence1"]).strip(),
                    "hypothesis": sources.as_text(row["sentence2"]).strip(),
                }
                # glue/rte: 0 = entailment, 1 = not_entailment
                out.append(Record(fields, 1 - label, uid=f"rte/tfds-{split}:{i}"))
            return out
        path = _local(data_root, "rte", self._files, split, self._fmt, self.name)
        out = []
        if path.suffix == ".tsv":
            cols = {"premise": ("sentence1",), "hypothesis": ("sentence2",), "label": ("label",)}
            rows = [(n, dict(r)) for n, r in sources.read_tsv(path, cols)]
        else:
            rows = []
            for n, obj in sources.read_jsonl(path):
                rows.append(
                    (
                        n,
                        {
                            "premise": sources.field(obj, ["premise"], path, n),
                            "hypothesis": sources.field(obj, ["hypothesis"], path, n),
                            "label": obj.get("label"),
                        },
                    )
                )
        for n, row in rows:
            label = row.pop("label")
            if label not in self._labels:
                raise ValueError(
                    f"{path}, line {n}: label {label!r} is not 'entailment' or 'not_entailment'"
                )
            fields = {k: " ".join(v.split()) for k, v in row.items()}
            out.append(Record(fields, self._labels[label], uid=f"rte/{split}:{n}"))
        return out


class BoolqTask(_FileTask):
    name = "boolq"
    kind = "classification"
    label_words = (" no", " yes")
    description = "BoolQ: Wikipedia passage + question -> yes / no"
    finetune_templates = templates.FINETUNE["boolq"]
    instruction_templates = templates.INSTRUCTION["boolq"]
    _files = {"train": ("train.jsonl",), "validation": ("dev.jsonl", "val.jsonl")}
    _fmt = "Google BoolQ JSON Lines {question, title, answer: true|false, passage}"

    def default_splits(self, data_root=None, source="local") -> tuple[str, str]:
        # Only the validation file may be at hand: then pools and test set are disjoint parts of it.
        if (
            source == "local"
            and not (paths.data_root(data_root) / "boolq" / "train.jsonl").exists()
        ):
            return "validation", "validation"
        return "train", "validation"

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        _check_source(self.name, source)
        split = _split(split)
        if source == "tfds":
            out = []
            for i, row in enumerate(sources.tfds_records(self.name, split, self.tfds_data_dir)):
                fields = {
                    "question": _question(sources.as_text(row["question"])),
                    "passage": sources.as_text(row["passage"]).strip(),
                    "title": sources.as_text(row["title"]).strip(),
                }
                out.append(Record(fields, int(bool(row["answer"])), uid=f"boolq/tfds-{split}:{i}"))
            return out
        path = _local(data_root, "boolq", self._files, split, self._fmt, self.name)
        out = []
        for n, obj in sources.read_jsonl(path):
            answer = sources.field(obj, ["answer", "label"], path, n, kind=bool)
            fields = {
                "question": _question(sources.field(obj, ["question"], path, n)),
                "passage": sources.field(obj, ["passage"], path, n).strip(),
                "title": str(obj.get("title", "")).strip(),
            }
            out.append(Record(fields, int(answer), uid=f"boolq/{split}:{n}"))
        return out


def _question(text: str) -> str:
    text = text.strip().rstrip("?").strip()
    return text[:1].upper() + text[1:]


class WebnlgTask(_FileTask):
    name = "webnlg"
    kind = "generation"
    description = "WebNLG 3.0 (en): RDF triples -> text"
    pool_split = "train"
    test_split = "test"
    finetune_templates = templates.FINETUNE["webnlg"]
    instruction_templates = templates.INSTRUCTION["webnlg"]
    _test_file = "rdf-to-text-generation-test-data-with-refs-en.xml"
    _fmt = "WebNLG 3.0 XML (<entry> with <modifiedtripleset><mtriple> and <lex>)"

    def local_files(self, split: str, data_root=None) -> list[Path]:
        root = paths.data_root(data_root) / "webnlg" / "en"
        split = _split(split)
        if split == "test":
            return [sources.first_existing([root / "test" / self._test_file], self._fmt, self.name)]
        folder = root / {"train": "train", "validation": "dev"}.get(split, split)
        files = sources.webnlg_split_files(folder)
        if not files:
            raise FileNotFoundError(
                f"{self.name}: no files {folder}/*triples/*.xml (expected {self._fmt}; the data "
                "root comes from the data_root argument or $GPTJAX_DATA_ROOT)"
            )
        return files

    @staticmethod
    def fields_of(triples: list[str]) -> dict[str, str]:
        nice = [sources.format_triple(t) for t in triples]
        return {"triples": "; ".join(nice), "_triple_lines": "\n".join(f"- {t}" for t in nice)}

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        _check_source(self.name, source)
        split = _split(split)
        out = []
        if source == "tfds":
            for i, row in enumerate(sources.tfds_records(self.name, split, self.tfds_data_dir)):
                refs = sources.as_text_list(row.get("references")) or [
                    sources.as_text(row["target"])
                ]
                refs = [r.strip() for r in refs if r.strip()]
                if refs:
                    fields = self.fields_of(sources.as_text_list(row["input"]))
                    out.append(Record(fields, None, tuple(refs), uid=f"webnlg/tfds-{split}:{i}"))
            return out
        for path in self.local_files(split, data_root):
            for entry in sources.read_webnlg_xml(path):
                if not entry["lexes"]:
                    continue  # nothing to train on or score against
                uid = f"webnlg/{split}:{path.parent.name}/{path.name}:{entry['eid']}"
                out.append(
                    Record(self.fields_of(entry["triples"]), None, tuple(entry["lexes"]), uid=uid)
                )
        return out

    def raw_text(self, record: Record) -> str:
        return record.fields["triples"]


class WmtDeEnTask(_FileTask):
    name = "wmt16_de_en"
    kind = "generation"
    description = "German -> English translation (WMT16 via tfds; Multi30k / newstest2021 locally)"
    pool_split = "train"
    test_split = "test"
    finetune_templates = templates.FINETUNE["wmt16_de_en"]
    instruction_templates = templates.INSTRUCTION["wmt16_de_en"]
    _fmt = "line-aligned plain text, one segment per line (line i of .de translates line i of .en)"
    #: local splits and the file sets tried for each (relative to wmt16_de_en/); first wins
    local_splits: dict[str, tuple[tuple[str, ...], ...]] = {
        "train": (("train.de", "train.en"), ("multi30k/train.de", "multi30k/train.en")),
        "validation": (("validation.de", "validation.en"), ("multi30k/val.de", "multi30k/val.en")),
        "test": (
            ("test.de", "test.en"),
            ("multi30k/test_2016_flickr.de", "multi30k/test_2016_flickr.en"),
        ),
        "test_2016_flickr": (("multi30k/test_2016_flickr.de", "multi30k/test_2016_flickr.en"),),
        "test_2017_flickr": (("multi30k/test_2017_flickr.de", "multi30k/test_2017_flickr.en"),),
        "test_2017_mscoco": (("multi30k/test_2017_mscoco.de", "multi30k/test_2017_mscoco.en"),),
        "test_2018_flickr": (("multi30k/test_2018_flickr.de", "multi30k/test_2018_flickr.en"),),
        "newstest2021": (
            (
                "newstest2021/newstest2021.de-en.src.de",
                "newstest2021/newstest2021.de-en.ref.A.en",
                "newstest2021/newstest2021.de-en.ref.B.en",
            ),
        ),
    }

    def local_files(self, split: str, data_root=None) -> list[Path]:
        root = paths.data_root(data_root) / "wmt16_de_en"
        split = _split(split)
        if split not in self.local_splits:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; "
                f"local splits: {', '.join(self.local_splits)}"
            )
        options = self.local_splits[split]
        for names in options:
            if all((root / n).exists() for n in names):
                return [root / n for n in names]
        missing = [root / n for n in options[-1] if not (root / n).exists()]
        raise FileNotFoundError(
            f"{self.name}: split {split!r}: file not found: {', '.join(map(str, missing))} "
            f"(expected {self._fmt}; the data root comes from the data_root argument or "
            "$GPTJAX_DATA_ROOT)"
        )

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        _check_source(self.name, source)
        split = _split(split)
        if source == "tfds":
            out = []
            for i, row in enumerate(sources.tfds_records(self.name, split, self.tfds_data_dir)):
                de, en = sources.as_text(row["de"]).strip(), sources.as_text(row["en"]).strip()
                if de and en:
                    out.append(Record({"de": de}, None, (en,), uid=f"wmt16_de_en/tfds-{split}:{i}"))
            return out
        files = self.local_files(split, data_root)
        return [
            Record({"de": cols[0]}, None, tuple(cols[1:]), uid=f"wmt16_de_en/{split}:{n}")
            for n, cols in enumerate(sources.read_parallel(files), start=1)
        ]


def _local(data_root, folder: str, files: dict, split: str, fmt: str, task: str) -> Path:
    if split not in files:
        raise ValueError(f"{task}: unknown split {split!r}; local splits: {', '.join(files)}")
    names = files[split]
    names = (names,) if isinstance(names, str) else names
    root = paths.data_root(data_root) / folder
    return sources.first_existing([root / n for n in names], fmt, task)
