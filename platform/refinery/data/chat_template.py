"""Chat templates rendered the way transformers renders them, without transformers.

`render_chat_template` compiles a template in jinja2's immutable sandbox with
the same settings `tokenizer.apply_chat_template` uses (trim_blocks,
lstrip_blocks, loop controls, the `{% generation %}` tag, a `raise_exception`
global and a `tojson` filter that does not escape HTML), so the web side can
preview exactly the text a trainer will see. `row_to_messages` turns a row of
any dataset kind into the conversation a template renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

# ChatML, for base models that ship without a chat template.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Message = dict[str, Any]

# What a template can raise while it runs, besides jinja2's own errors.
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, LookupError, ArithmeticError, RecursionError)


class ChatTemplateError(ValueError):
    """A chat template that does not compile, or that fails on the given messages."""


def render_chat_template(
    template: str,
    messages: list[Message],
    *,
    add_generation_prompt: bool = False,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render `messages` with a Hugging Face style chat template."""
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except _RENDER_ERRORS as error:
        raise ChatTemplateError(f"chat template failed: {_describe(error)}") from error


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(f"chat template does not compile: {_describe(error)}") from error


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}`: marks assistant text for loss masks.

    transformers records where the block's text lands; rendering only needs the
    text, so the block renders its body unchanged.
    """

    tags = frozenset({"generation"})

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Unlike jinja2's own filter this does not escape HTML, as in transformers.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _describe(error: Exception) -> str:
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.message} (line {error.lineno})"
    return str(error) or type(error).__name__


# --- rows to conversations -----------------------------------------------------------------------


def _prompt_and(answer_field: str) -> Callable[[Mapping[str, Any]], list[Message]]:
    def to_messages(row: Mapping[str, Any]) -> list[Message]:
        return [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row[answer_field]},
        ]

    return to_messages


def _chat_messages(row: Mapping[str, Any]) -> list[Message]:
    return [dict(turn) for turn in row["messages"]]


_TO_MESSAGES: dict[str, Callable[[Mapping[str, Any]], list[Message]]] = {
    "prompt_completion": _prompt_and("completion"),
    "chat": _chat_messages,
    "preference": _prompt_and("chosen"),  # the conversation the model should prefer
    "reference": _prompt_and("answer"),
    "feedback": _prompt_and("completion"),  # the conversation the label judges
}


def row_to_messages(row: Mapping[str, Any], kind: str) -> list[Message]:
    """The conversation a validated row of `kind` stands for, as a new list."""
    if kind not in _TO_MESSAGES:
        raise ValueError(f'unknown dataset kind "{kind}" (expected one of {", ".join(_TO_MESSAGES)})')
    return _TO_MESSAGES[kind](row)
