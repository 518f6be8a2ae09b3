"""A user's own task from JSON Lines files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gptjax.tasks import sources
from gptjax.tasks.base import Record, Task


class JsonlTask(Task):
    """A user's own task: JSON Lines of ``{"input": ..., "target": ...}``.

    ``input`` is used verbatim as the prompt in both formats; ``target`` verbatim as the
    target (start it with a space if the prompt does not end with one).  Optional
    ``"references": [...]`` add references for BLEU / ROUGE-L.  With ``label_words`` the task
    is a classification task and every target must be one of them.
    """

    name = "jsonl"
    kind = "generation"
    description = "your own task: JSON Lines of {input, target}"
    finetune_templates = ("{input}",)
    _fmt = 'JSON Lines, one {"input": str, "target": str} object per line'

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        test_path: str | os.PathLike | None = None,
        label_words: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser() if path else None
        self.test_path = Path(test_path).expanduser() if test_path else None
        if label_words:
            self.kind = "classification"
            self.label_words = tuple(label_words)

    def default_splits(self, data_root=None, source="local") -> tuple[str, str]:
        return ("train", "test") if self.test_path else ("train", "train")

    def load(self, split, *, data_root=None, source="local", seed=0) -> Sequence[Record]:
        path = self.test_path if split == "test" and self.test_path else self.path
        if path is None:
            raise ValueError("jsonl task: pass path=... (the JSON Lines file of {input, target})")
        if not path.exists():
            raise FileNotFoundError(f"jsonl task: file not found: {path} (expected {self._fmt})")
        out = []
        for n, obj in sources.read_jsonl(path):
            prompt = sources.field(obj, ["input"], path, n)
            target = sources.field(obj, ["target"], path, n)
            label = None
            if self.kind == "classification":
                stripped = [w.strip() for w in self.label_words]
                if target.strip() not in stripped:
                    raise ValueError(
                        f"{path}, line {n}: target {target!r} is not one of the label words "
                        f"{list(self.label_words)}"
                    )
                label = stripped.index(target.strip())
                refs: tuple[str, ...] = ()
            else:
                refs = tuple(obj.get("references") or [target.strip()])
                if not all(isinstance(r, str) for r in refs):
                    raise ValueError(f"{path}, line {n}: 'references' should be a list of strings")
            out.append(
                Record(
                    {"input": prompt, "_target": target}, label, refs, uid=f"jsonl:{path.name}:{n}"
                )
            )
        return out

    def target_text(self, record: Record) -> str:
        if self.kind == "classification":
            return super().target_text(record)
        return record.fields["_target"]
