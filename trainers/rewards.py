"""Verifiable rewards for GRPO: plain, named, parameterised functions chosen by name; no user code runs.

Every reward has TRL's reward-function shape (see ``trl/rewards/``)::

    reward(completions, **columns) -> list[float]

``completions`` are strings, or (conversational data) lists of messages whose last ``content`` is the
answer. ``columns`` are the dataset's other columns, one value per completion (``answer`` for
reference data), plus what GRPOTrainer adds (``prompts``, ``completion_ids``, ``trainer_state``, ...).
Parameters are keyword-only and bound by name with :func:`functools.partial` (TRL names the reward
after the wrapped function, so metrics read ``rewards/<name>/mean``).

:data:`REWARDS` is the registry: name -> :class:`Reward` (function, one-line description, the GRPO
config fields that feed its parameters, the data columns it needs). The GRPO config declares one
``reward_<name>_weight`` field per entry (0 = off); tests check the two agree.

Standard library and ``regex`` only: the web process imports this module to describe the rewards.
Patterns run on the ``regex`` engine with a timeout (:data:`REGEX_TIMEOUT_SECONDS` per completion): a
pattern that backtracks catastrophically fails the reward, and so the stage, with a message naming it.
"""

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import regex

__all__ = [
    "Reward",
    "REWARDS",
    "NORMALIZATIONS",
    "completion_text",
    "normalize_text",
    "parse_number",
    "split_strings",
    "exact_match",
    "numeric_match",
    "regex_match",
    "json_valid",
    "contains",
    "excludes",
    "length_penalty",
    "reward_model",
    "weight_field",
    "RewardTimeout",
    "REGEX_TIMEOUT_SECONDS",
]

# How long regex_match may spend on one completion. Sane patterns take microseconds.
REGEX_TIMEOUT_SECONDS = 0.25

# exact_match's normalisations, mildest first.
NORMALIZATIONS = ("none", "whitespace", "lenient")
_TRAILING_PUNCTUATION = ".,;:!?"
_QUOTES = "\"'`"
_NUMBER = re.compile(
    r"""
    (?<![\w.])                          # not inside a word or after a decimal point
    (?P<sign>[-+−]?)
    (?:
        (?P<num>\d+)\s*/\s*(?P<den>\d+)                       # a fraction: 3/4
      | (?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?   # 7, 1,234, 2.5, 1e-3
      | \.\d+(?:[eE][-+]?\d+)?)                                        # .5
    )
    (?!\w)
    """,
    re.VERBOSE,
)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?```", re.DOTALL)
_SEPARATOR = "|"


@dataclass(frozen=True)
class Reward:
    """One registered reward: ``function(completions, **columns, **params) -> list[float]``."""

    name: str
    function: Callable[..., list[float]]
    description: str
    params: Mapping[str, str]  # function keyword -> GRPO config field that supplies it
    columns: tuple[str, ...] = ()  # dataset columns the reward reads (besides the completions)
    value_range: str = "0 to 1"


def weight_field(name: str) -> str:
    """The GRPO config field holding a reward's weight."""
    return f"reward_{name}_weight"


# --- helpers ------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as it is, or the ``content`` of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)) and completion:
        return completion_text(completion[-1])
    return ""


def normalize_text(text: str, mode: str = "whitespace") -> str:
    """``none``: as is; ``whitespace``: runs of whitespace collapsed to one space and the ends trimmed;
    ``lenient``: that, lower-cased, without surrounding quotes and without trailing punctuation (``7.`` == ``7``)."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {mode!r}")
    if mode == "none":
        return text
    text = " ".join(text.split())
    if mode == "lenient":
        text = text.lower()
        previous = None
        while previous != text:
            previous = text
            text = text.rstrip(_TRAILING_PUNCTUATION).strip().strip(_QUOTES).strip()
    return text


def parse_number(text: str, *, which: str = "last") -> float | None:
    """A number written in ``text``: the last one (``which='last'``, as in "... so the answer is 7.") or the
    first. Understands signs, decimals, exponents, thousands commas (``1,234``) and fractions (``3/4``).
    None when there is no number."""
    matches = list(_NUMBER.finditer(text or ""))
    if not matches:
        return None
    m = matches[-1] if which == "last" else matches[0]
    sign = -1.0 if m.group("sign") in ("-", "−") else 1.0
    if m.group("num") is not None:
        den = int(m.group("den"))
        if den == 0:
            return None
        return sign * int(m.group("num")) / den
    raw = m.group("dec") if m.group("dec") is not None else m.group(0).lstrip("+-−")
    try:
        return sign * float(raw.replace(",", ""))
    except ValueError:
        return None


def split_strings(spec: str) -> list[str]:
    """The non-empty strings of a ``|``-separated list (surrounding spaces trimmed)."""
    return [part.strip() for part in (spec or "").split(_SEPARATOR) if part.strip()]


def _column(columns: Mapping[str, Any], name: str, reward: str, n: int) -> list[Any]:
    values = columns.get(name)
    if values is None:
        raise ValueError(f"the {reward} reward needs a {name!r} column (reference data: prompt, answer)")
    if len(values) != n:
        raise ValueError(f"the {reward} reward got {n} completions but {len(values)} {name!r} values")
    return list(values)


# --- rewards ------------------------------------------------------------------------------------------


def exact_match(completions: list, *, normalize: str = "whitespace", **columns) -> list[float]:
    """1.0 when the completion equals the reference ``answer`` after normalisation (see :func:`normalize_text`),
    else 0.0."""
    answers = _column(columns, "answer", "exact_match", len(completions))
    return [
        1.0 if normalize_text(completion_text(c), normalize) == normalize_text(str(a), normalize) else 0.0
        for c, a in zip(completions, answers)
    ]


def numeric_match(completions: list, *, tolerance: float = 1e-6, **columns) -> list[float]:
    """1.0 when the last number in the completion is within ``tolerance`` (absolute) of the number in the
    reference ``answer`` (its last one, so "#### 42" works), else 0.0; 0.0 when either has no number."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    answers = _column(columns, "answer", "numeric_match", len(completions))
    rewards = []
    for c, a in zip(completions, answers):
        got, want = parse_number(completion_text(c)), parse_number(str(a))
        ok = got is not None and want is not None and math.isfinite(got) and abs(got - want) <= tolerance
        rewards.append(1.0 if ok else 0.0)
    return rewards


class RewardTimeout(RuntimeError):
    """A reward's pattern ran out of time on a completion: the pattern is at fault, not the model."""


def regex_match(completions: list, *, pattern: str, full_match: bool = False, **columns) -> list[float]:
    """1.0 when the completion matches the regular expression ``pattern`` (anywhere, or the whole completion
    with ``full_match``), else 0.0. A format check: an answer line, tags, a date shape.

    Runs on the ``regex`` engine; a match that takes longer than :data:`REGEX_TIMEOUT_SECONDS` raises
    :class:`RewardTimeout` (nested or overlapping repetition such as ``(a|aa)+`` backtracks exponentially)."""
    compiled = regex.compile(pattern)
    match = compiled.fullmatch if full_match else compiled.search
    rewards = []
    for c in completions:
        text = completion_text(c)
        try:
            rewards.append(1.0 if match(text, timeout=REGEX_TIMEOUT_SECONDS) else 0.0)
        except TimeoutError:
            raise RewardTimeout(
                f"the regex_match pattern {pattern!r} took longer than {REGEX_TIMEOUT_SECONDS:g} s on a completion "
                f"of {len(text):,} characters (catastrophic backtracking); simplify regex_pattern: avoid nested or "
                f"overlapping repetition such as (a+)+ or (a|aa)+"
            ) from None
    return rewards


def _json_candidates(text: str) -> list[str]:
    stripped = text.strip()
    return [stripped] + [block.strip() for block in _FENCE.findall(text)]


def json_valid(completions: list, **columns) -> list[float]:
    """1.0 when the completion is valid JSON: the whole text, or the first fenced block (```json ... ```)
    that parses; else 0.0."""
    rewards = []
    for c in completions:
        ok = False
        for candidate in _json_candidates(completion_text(c)):
            if not candidate:
                continue
            try:
                json.loads(candidate)
            except ValueError:
                continue
            ok = True
            break
        rewards.append(1.0 if ok else 0.0)
    return rewards


def _present(text: str, needles: list[str], ignore_case: bool) -> list[bool]:
    if ignore_case:
        text = text.casefold()
        needles = [n.casefold() for n in needles]
    return [n in text for n in needles]


def contains(completions: list, *, text: str, ignore_case: bool = True, **columns) -> list[float]:
    """The share of the ``|``-separated strings in ``text`` that the completion contains (1.0: all of them)."""
    needles = split_strings(text)
    if not needles:
        raise ValueError("contains needs at least one string")
    return [sum(_present(completion_text(c), needles, ignore_case)) / len(needles) for c in completions]


def excludes(completions: list, *, text: str, ignore_case: bool = True, **columns) -> list[float]:
    """The share of the ``|``-separated strings in ``text`` that the completion does not contain (1.0: none)."""
    needles = split_strings(text)
    if not needles:
        raise ValueError("excludes needs at least one string")
    return [1.0 - sum(_present(completion_text(c), needles, ignore_case)) / len(needles) for c in completions]


def length_penalty(
    completions: list, *, target: int, scale: int, completion_ids: list | None = None, **columns
) -> list[float]:
    """0.0 for a completion of exactly ``target`` tokens, falling linearly to -1.0 at ``scale`` tokens away
    (longer or shorter) and staying there. Counts tokens from ``completion_ids`` (GRPOTrainer passes them);
    without them, characters."""
    if target < 1 or scale < 1:
        raise ValueError(f"target and scale must be >= 1, got {target} and {scale}")
    lengths = (
        [len(ids) for ids in completion_ids]
        if completion_ids is not None
        else [len(completion_text(c)) for c in completions]
    )
    if len(lengths) != len(completions):
        raise ValueError(f"length_penalty got {len(completions)} completions but {len(lengths)} completion_ids")
    return [-min(1.0, abs(n - target) / scale) for n in lengths]


def reward_model(completions: list, *, scorer, prompts: list | None = None, **columns) -> list[float]:
    """The score a reward model (an earlier ``reward`` stage) gives prompt + completion; unbounded, higher is
    better. ``scorer`` is a :class:`trainers.scoring.RewardScorer` (it formats conversations itself)."""
    if prompts is None:
        prompts = [""] * len(completions)
    return scorer.score_pairs(prompts, completions)


REWARDS: dict[str, Reward] = {
    r.name: r
    for r in (
        Reward(
            "exact_match",
            exact_match,
            "1 when the completion equals the reference answer (normalised as exact_match_normalize says), else 0.",
            {"normalize": "exact_match_normalize"},
            columns=("answer",),
        ),
        Reward(
            "numeric_match",
            numeric_match,
            "1 when the last number in the completion is within numeric_tolerance of the reference answer's "
            "number ('The answer is 7.' matches 7), else 0.",
            {"tolerance": "numeric_tolerance"},
            columns=("answer",),
        ),
        Reward(
            "regex_match",
            regex_match,
            "Format check: 1 when the completion matches regex_pattern (anywhere, or whole with regex_full_match), "
            "else 0.",
            {"pattern": "regex_pattern", "full_match": "regex_full_match"},
        ),
        Reward(
            "json_valid",
            json_valid,
            "1 when the completion is valid JSON (the whole text or a ```json fenced block), else 0.",
            {},
        ),
        Reward(
            "contains",
            contains,
            "The share of the |-separated strings in contains_text that the completion contains.",
            {"text": "contains_text", "ignore_case": "text_ignore_case"},
        ),
        Reward(
            "excludes",
            excludes,
            "The share of the |-separated strings in excludes_text that the completion does not contain.",
            {"text": "excludes_text", "ignore_case": "text_ignore_case"},
        ),
        Reward(
            "length_penalty",
            length_penalty,
            "0 at length_target tokens, falling linearly to -1 at length_scale tokens longer or shorter.",
            {"target": "length_target", "scale": "length_scale"},
            value_range="-1 to 0",
        ),
        Reward(
            "reward_model",
            reward_model,
            "The score of the reward model trained by the reward stage named in reward_model_stage.",
            {},
            value_range="unbounded",
        ),
    )
}
