"""Core types of the tasks package: `Example`, `Record` and the `Task` base class.

A *record* is one row of a data source in a task-neutral shape (named text fields, a class
index or the reference texts).  A *task* knows where its records come from and how to render
one as a prompt and a target in the fine-tuning format (one plain prompt) or the instruction
format (several FLAN-style templates).  An *example* is a rendered record: what a run trains
and evaluates on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

FORMATS = ("finetune", "instruction")


@dataclasses.dataclass(frozen=True)
class Example:
    """One rendered example.

    ``target`` is the label word (``" positive"``) for classification tasks and the first
    reference (with a leading space) for generation tasks; the EOS token is added by the
    tokeniser, not here.  ``references`` holds every reference of a generation example
    (for BLEU / ROUGE-L) and is ``()`` for classification.  ``source_id`` names the row the
    example came from (``"sst2/train:123"``), which makes pools traceable.
    """

    input: str
    target: str
    task: str
    label: int | None
    references: tuple[str, ...]
    encoder_text: str
    source_id: str = ""

    @property
    def kind(self) -> str:
        return "generation" if self.label is None else "classification"


@dataclasses.dataclass(frozen=True)
class Record:
    """One source row before formatting.

    ``fields`` are the named texts a template refers to (``{"sentence": ...}``).
    ``group`` is a ground-truth relatedness key: two examples with the same non-None group
    are related (only the demo tasks set it).
    """

    fields: Mapping[str, str]
    label: int | None = None
    references: tuple[str, ...] = ()
    uid: str = ""
    group: str | None = None

    def key(self) -> tuple:
        """Identity of the content, used to keep pools and test set disjoint."""
        return tuple(sorted(self.fields.items())) + (self.references[:1],)


class Task:
    """Base class. Subclasses set the class attributes and implement `load`.

    Prompt templates are ``str.format`` strings over the record's fields plus
    ``{options}`` (the label words as a bulleted list). The target is never part of a
    template: it is the label word, or ``" " + references[0]``.
    """

    name: str = ""
    kind: str = "classification"
    label_words: tuple[str, ...] = ()
    description: str = ""
    #: split the training / unseen pools come from, and the split the test set comes from
    pool_split: str = "train"
    test_split: str = "validation"
    #: templates per format; filled by subclasses (see templates.py)
    finetune_templates: tuple[str, ...] = ()
    instruction_templates: tuple[str, ...] = ()

    def load(
        self,
        split: str,
        *,
        data_root: str | os.PathLike | None = None,
        source: str = "local",
        seed: int = 0,
    ) -> Sequence[Record]:
        raise NotImplementedError

    def default_splits(
        self, data_root: str | os.PathLike | None = None, source: str = "local"
    ) -> tuple[str, str]:
        """(pool split, test split). The same name twice means: disjoint parts of one split."""
        return self.pool_split, self.test_split

    def templates(self, fmt: str) -> tuple[str, ...]:
        if fmt == "finetune":
            return self.finetune_templates
        if fmt == "instruction":
            return self.instruction_templates or self.finetune_templates
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")

    def options_text(self) -> str:
        return "\n".join(f"- {w.strip()}" for w in self.label_words)

    def target_text(self, record: Record) -> str:
        if self.kind == "classification":
            if record.label is None or not 0 <= record.label < len(self.label_words):
                raise ValueError(f"{self.name}: record {record.uid} has label {record.label!r}")
            return self.label_words[record.label]
        if not record.references:
            raise ValueError(f"{self.name}: record {record.uid} has no reference text")
        return " " + record.references[0].strip()

    def render(self, record: Record, fmt: str = "finetune", template: int = 0) -> tuple[str, str]:
        """(prompt, target) of one record in a format, with template number ``template``."""
        options = self.templates(fmt)
        prompt = options[template % len(options)].format(
            **record.fields, options=self.options_text()
        )
        return prompt, self.target_text(record)

    def raw_text(self, record: Record) -> str:
        """The record's content without any template (one of the encoder-text choices)."""
        return "\n".join(str(v) for k, v in record.fields.items() if not k.startswith("_"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r})"
