"""The offline demo kit: deterministic, self-contained, chat-ready."""

import json
import os

from trainers.cli import main
from trainers.demo import CHAT_TEMPLATE, addition_split


def test_demo_command_prints_paths_and_is_deterministic(capfd, tmp_path, demo_kit):
    assert main(["demo", "--out", str(tmp_path / "kit"), "--seed", "0"]) == 0
    kit = json.loads(capfd.readouterr().out)  # stdout holds only the JSON answer
    assert kit["model"] == str(tmp_path / "kit" / "model")
    for name, path in kit["data"].items():
        with open(path, "rb") as a, open(demo_kit["data"][name], "rb") as b:
            assert a.read() == b.read(), name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        with open(os.path.join(kit["model"], name), "rb") as a, open(os.path.join(demo_kit["model"], name), "rb") as b:
            assert a.read() == b.read(), name


def test_demo_datasets(demo_kit):
    def rows(name):
        with open(demo_kit["data"][name]) as fh:
            return [json.loads(line) for line in fh]

    train, held = addition_split(0)
    assert len(train) == 80 and len(held) == 20 and not set(train) & set(held)
    assert rows("train")[0].keys() == {"prompt", "completion"}
    for row in rows("train") + rows("eval"):
        a, b = row["prompt"].rstrip("=").split("+")
        assert int(row["completion"]) == int(a) + int(b)
    assert {r["prompt"] for r in rows("train")}.isdisjoint(r["prompt"] for r in rows("eval"))
    assert [r["prompt"] for r in rows("reference")] == [r["prompt"] for r in rows("eval")]
    assert all(r["chosen"] != r["rejected"] and int(r["chosen"]) >= 0 for r in rows("prefs"))
    assert rows("chat")[0]["messages"][1]["role"] == "assistant"

    from trainers.data import read_rows
    from trainers.stage_spec import DataFile

    as_jsonl = read_rows(DataFile(demo_kit["data"]["train"], "jsonl", "prompt_completion"))
    assert read_rows(DataFile(demo_kit["data"]["train_csv"], "csv", "prompt_completion")) == as_jsonl
    assert read_rows(DataFile(demo_kit["data"]["train_parquet"], "parquet", "prompt_completion")) == as_jsonl


def test_demo_tokenizer(demo_kit):
    from transformers import AutoTokenizer

    with open(os.path.join(demo_kit["model"], "tokenizer_config.json")) as fh:
        assert json.load(fh)["chat_template"] == CHAT_TEMPLATE
    tok = AutoTokenizer.from_pretrained(demo_kit["model"])
    assert tok.convert_ids_to_tokens(tok("12+7=19")["input_ids"]) == [
        "<|bos|>", "1", "2", "+", "7", "=", "1", "9",
    ]  # fmt: skip
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|eos|>" and tok.bos_token == "<|bos|>"
    messages = [{"role": "user", "content": "3+4="}, {"role": "assistant", "content": "7"}]
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assistant = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.convert_ids_to_tokens(assistant) == ["7", "<|im_end|>"]


def test_csv_messages_are_json_strings(tmp_path):
    import csv

    from trainers.data import read_rows
    from trainers.stage_spec import DataFile

    path = tmp_path / "chat.csv"
    messages = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["messages", "extra"])
        writer.writeheader()
        writer.writerow({"messages": json.dumps(messages), "extra": "dropped"})
    assert read_rows(DataFile(str(path), "csv", "chat")) == [{"messages": messages}]
