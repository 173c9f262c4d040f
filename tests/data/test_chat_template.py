"""Chat templates rendered like transformers renders them: refinery.data.chat_template.

The expected strings were produced by transformers' own renderer
(`transformers.utils.chat_template_utils.render_jinja_template`) from the same
templates and messages; these tests pin them without importing transformers.
"""

from __future__ import annotations

import pytest

from refinery.data.chat_template import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplateError,
    render_chat_template,
    row_to_messages,
)

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]

# Llama 3 style: one statement per line, indented, so trim_blocks and lstrip_blocks matter.
LLAMA3_STYLE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set header = 'system' %}
    {% else %}
        {% set header = message['role'] %}
    {% endif %}
    {{ '<|start_header_id|>' + header + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{% endif %}
"""

# Mistral style: refuses conversations whose roles do not alternate.
MISTRAL_STYLE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

# Exercises the extras transformers adds: tojson without HTML escaping, loop controls,
# the {% generation %} tag, and tools/documents passed as None.
EXTRAS = """{% set ns = namespace(users=0) %}
{% for message in messages %}
  {% if message.role == 'system' %}{% continue %}{% endif %}
  {% if message.role == 'assistant' %}
{% generation %}{{ message.content }}{% endgeneration %}
  {% else %}
{{ message | tojson }}
  {% set ns.users = ns.users + 1 %}
  {% endif %}
{% endfor %}
users={{ ns.users }} tools={{ tools is none }} documents={{ documents is none }}
"""


def test_default_template_is_chatml():
    rendered = render_chat_template(DEFAULT_CHAT_TEMPLATE, MESSAGES)

    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
    )


def test_generation_prompt_opens_an_assistant_turn():
    rendered = render_chat_template(DEFAULT_CHAT_TEMPLATE, MESSAGES[:2], add_generation_prompt=True)

    assert rendered.endswith("<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_block_whitespace_is_trimmed_like_transformers():
    rendered = render_chat_template(LLAMA3_STYLE, MESSAGES, add_generation_prompt=True, bos_token="<|begin_of_text|>")

    assert rendered == (
        "<|begin_of_text|>\n"
        "    <|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n"
        "    <|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>\n"
        "    <|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>\n"
        "    <|start_header_id|>assistant<|end_header_id|>\n\n\n"  # the template's final newline is dropped
    )


def test_bos_and_eos_tokens_reach_the_template():
    rendered = render_chat_template(MISTRAL_STYLE, MESSAGES[1:], bos_token="<s>", eos_token="</s>")

    assert rendered == "<s>[INST] Capital of France? [/INST]Paris.</s>"


def test_raise_exception_in_a_template_is_a_chat_template_error():
    with pytest.raises(ChatTemplateError) as caught:
        render_chat_template(MISTRAL_STYLE, MESSAGES)  # starts with a system turn

    assert str(caught.value) == (
        "chat template failed: Conversation roles must alternate user/assistant/user/assistant/..."
    )


def test_transformers_extras_render_the_same():
    rendered = render_chat_template(EXTRAS, [*MESSAGES, {"role": "user", "content": "<b>Merci</b> — et l'Italie?"}])

    assert rendered == (
        '{"role": "user", "content": "Capital of France?"}\n'
        "Paris."  # trim_blocks eats the newline after {% endgeneration %}
        '{"role": "user", "content": "<b>Merci</b> — et l\'Italie?"}\n'
        "users=2 tools=True documents=True"
    )


def test_syntax_error_names_the_line():
    with pytest.raises(ChatTemplateError) as caught:
        render_chat_template("{% for message in messages %}\n{{ message.content }\n{% endfor %}", MESSAGES)

    assert str(caught.value) == "chat template does not compile: unexpected '}' (line 2)"


def test_runtime_type_error_is_a_chat_template_error():
    with pytest.raises(ChatTemplateError, match="chat template failed: "):
        render_chat_template("{{ messages[0].content + 1 }}", MESSAGES)


def test_sandbox_refuses_unsafe_attributes():
    with pytest.raises(ChatTemplateError, match="unsafe"):
        render_chat_template("{{ messages.__class__.__mro__[1].__subclasses__() }}", MESSAGES)


def test_sandbox_is_immutable():
    messages = [dict(message) for message in MESSAGES]

    with pytest.raises(ChatTemplateError, match="unsafe"):
        render_chat_template("{{ messages.append({'role': 'user', 'content': 'injected'}) }}", messages)
    assert messages == MESSAGES


# --- rows to messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "row", "answer"),
    [
        ("prompt_completion", {"prompt": "2+2=", "completion": "4", "source": "x"}, "4"),
        ("preference", {"prompt": "2+2=", "chosen": "4", "rejected": "5"}, "4"),
        ("reference", {"prompt": "2+2=", "answer": "4"}, "4"),
        ("feedback", {"prompt": "2+2=", "completion": "5", "label": False}, "5"),
    ],
)
def test_single_turn_kinds_become_user_and_assistant(kind, row, answer):
    assert row_to_messages(row, kind) == [
        {"role": "user", "content": "2+2="},
        {"role": "assistant", "content": answer},
    ]


def test_chat_rows_give_a_copy_of_their_messages():
    row = {"messages": [dict(message) for message in MESSAGES]}

    messages = row_to_messages(row, "chat")
    messages[0]["content"] = "changed"
    messages.append({"role": "user", "content": "more"})

    assert row["messages"] == MESSAGES


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match='unknown dataset kind "sft"'):
        row_to_messages({"prompt": "a"}, "sft")


def test_a_row_renders_through_the_default_template():
    row = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}

    rendered = render_chat_template(DEFAULT_CHAT_TEMPLATE, row_to_messages(row, "preference"))

    assert rendered == ("<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n")
