"""The kinds of dataset a stage can read: their names, labels and required columns, defined once.

The web side (upload validation, the dataset form and model) and the trainer (reading stage data) both
derive what they need from :data:`DATASET_KIND_SPECS`. Standard library only.
"""

from dataclasses import dataclass

__all__ = ["TEXT", "MESSAGES", "BOOL", "DatasetKindSpec", "DATASET_KIND_SPECS", "DATASET_KINDS"]

# Column types
TEXT = "text"  # a string
MESSAGES = "messages"  # a conversation: a list of {"role", "content"} turns
BOOL = "boolean"  # true or false (in CSV, the words true or false)


@dataclass(frozen=True)
class DatasetKindSpec:
    name: str
    label: str  # short, for choices
    description: str  # one line naming the columns
    columns: dict[str, str]  # required column -> TEXT, MESSAGES or BOOL, in order
    must_differ: tuple[str, str] | None = None  # two columns that may not hold the same value (upload check)


DATASET_KIND_SPECS: dict[str, DatasetKindSpec] = {
    spec.name: spec
    for spec in (
        DatasetKindSpec(
            "prompt_completion",
            "Prompt / completion",
            "Prompt and completion columns (prompt, completion)",
            {"prompt": TEXT, "completion": TEXT},
        ),
        DatasetKindSpec(
            "chat", "Chat messages", "Conversations: a messages column of {role, content} turns", {"messages": MESSAGES}
        ),
        DatasetKindSpec(
            "preference",
            "Preference pairs (prompt, chosen, rejected)",
            "Prompt with a chosen and a rejected answer (prompt, chosen, rejected)",
            {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT},
            must_differ=("chosen", "rejected"),
        ),
        DatasetKindSpec(
            "reference",
            "Prompts with reference answers",
            "Prompt and expected answer (prompt, answer)",
            {"prompt": TEXT, "answer": TEXT},
        ),
        DatasetKindSpec(
            "feedback",
            "Feedback (prompt, completion, label: desirable true/false)",
            "Prompt with one answer marked desirable or not (prompt, completion, label: true/false)",
            {"prompt": TEXT, "completion": TEXT, "label": BOOL},
        ),
    )
}

# name -> description (docs/stage-spec.md; part of `python -m trainers methods --json`)
DATASET_KINDS: dict[str, str] = {spec.name: spec.description for spec in DATASET_KIND_SPECS.values()}
