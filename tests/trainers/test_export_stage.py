"""The export stage on the tiny demo model: a LoRA input comes out merged (equal to PEFT's merge_and_unload),
with a model card built from the platform's facts; the int8 copy is smaller and close; held-out data is measured
before and after; bitsandbytes is refused on a machine without CUDA."""

import json
import os

import pytest
from trainers import cancel
from trainers.events import EventLog
from trainers.stage import EXIT_FAILED, EXIT_FINISHED, execute

CARD = {
    "run": "#12 addition-lora",
    "pipeline": "addition v3",
    "base_model": "demo/tiny-llama",
    "base_model_revision": "abc123",
    "stages": [
        {
            "name": "sft-lora",
            "method": "sft",
            "adapter": "lora",
            "config": {"learning_rate": 0.01, "max_steps": 12},
            "inputs": [],
            "data": {"name": "addition", "version": 2, "sha256": "f" * 64, "kind": "prompt_completion"},
        },
        {"name": "dpo|pass", "method": "dpo", "adapter": "none", "config": {"beta": 0.1}, "inputs": ["sft-lora"]},
        "a stage given as plain text",
    ],
    "datasets": [{"name": "addition", "version": 2, "sha256": "0123456789abcdef" * 4, "rows": 80}],
    "metrics": {"sft-lora/train/loss": 0.4321, "dpo|pass/eval/accuracy": 0.875, "nested": {"x": 1}},
    "lineage": ["sft-lora (sft) <- base", "dpo|pass (dpo) <- sft-lora"],
    "code_version": "deadbeef",
    "seed": 42,
    "reviewer": "ada",
}


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


@pytest.fixture(scope="module")
def lora_dir(demo_kit, tmp_path_factory):
    """A LoRA adapter of the demo model with non-zero updates (B initialised randomly)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_pretrained(demo_kit["model"], dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    )
    path = str(tmp_path_factory.mktemp("export_lora"))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(demo_kit["model"]).save_pretrained(path)
    return path


def _spec(demo_kit, lora_dir, out, *, eval_data=None, card=None, **config):
    spec = {
        "method": "export",
        "config": config,
        "model": {"name_or_path": demo_kit["model"], "adapter_path": lora_dir},
        "output_dir": str(out),
        "checkpoint_dir": str(out / "checkpoints"),
        "card": card or {},
    }
    if eval_data:
        spec["data"] = {"eval": {"path": demo_kit["data"][eval_data], "kind": demo_kit["kinds"][eval_data]}}
    return spec


def _finished(spec):
    log = EventLog()
    code = execute(spec, log)
    failed = log.of("failed")
    assert code == EXIT_FINISHED and not failed, failed[0]["traceback"] if failed else code
    return log


def _independent_merge(demo_kit, lora_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(demo_kit["model"], dtype=torch.float32)
    return PeftModel.from_pretrained(base, lora_dir).merge_and_unload().eval()


def _logits(model, tokenizer, texts=("3+4=", "9+9=18", "1 + 2 = 3")):
    import torch

    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits


def _completion_loss_by_hand(model, tokenizer, rows):
    """Token-weighted mean loss of completion + eos given the prompt, with transformers' own label masking."""
    import torch

    total, count = 0.0, 0
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        ids = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        n = len(ids) - len(prompt_ids)
        total, count = total + float(loss) * n, count + n
    return total / count


def test_a_lora_input_exports_merged_with_a_card_and_a_smaller_close_int8_copy(demo_kit, lora_dir, tmp_path):
    import torch
    from trainers.methods.export import QUANTIZED_WEIGHTS, load_int8_dynamic
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    log = _finished(
        _spec(demo_kit, lora_dir, out, eval_data="eval", card=CARD, quantization="int8_dynamic", max_rows=8)
    )
    model_path, quantized_path = str(out / "model"), str(out / "quantized")
    finished = log.of("finished")[0]
    assert finished["outputs"] == {
        "kind": "model",
        "path": model_path,
        "extra": [{"path": quantized_path, "artifact_path": "quantized"}],
    }

    # The full model: safetensors, no PEFT modules, equal to merge_and_unload done here.
    files = set(os.listdir(model_path))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= files
    assert not any(f.startswith("adapter_") for f in files)
    exported = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in exported.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    reference = _independent_merge(demo_kit, lora_dir)
    full_logits = _logits(exported, tokenizer)
    assert torch.allclose(full_logits, _logits(reference, tokenizer), atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(demo_kit["model"], dtype=torch.float32).eval()
    assert not torch.allclose(full_logits, _logits(base, tokenizer), atol=1e-3)  # the adapter did change it

    # The int8 copy: smaller on disk, its logits near the full ones but not the same.
    summary = finished["summary"]
    assert summary["quantization"] == "int8_dynamic" and summary["dtype"] == "float32"
    assert summary["parameters"] == sum(p.numel() for p in exported.parameters())
    assert summary["size_bytes"] > 0 and 0 < summary["quantized_size_bytes"] < 0.7 * summary["size_bytes"]
    assert os.path.getsize(os.path.join(quantized_path, QUANTIZED_WEIGHTS)) < 0.5 * os.path.getsize(
        os.path.join(model_path, "model.safetensors")
    )
    quantized, q_tokenizer = load_int8_dynamic(quantized_path)
    assert "DynamicQuantizedLinear" in repr(quantized.model.layers[0].self_attn.q_proj)
    q_logits = _logits(quantized, q_tokenizer)
    diff = (q_logits - full_logits).abs()
    print(
        "int8 logits: max diff",
        float(diff.max()),
        "max |logit|",
        float(full_logits.abs().max()),
        "mean diff",
        float(diff.mean()),
        "mean |logit|",
        float(full_logits.abs().mean()),
    )
    assert 0 < diff.max() < 0.2 * full_logits.abs().max()
    assert diff.mean() < 0.1 * full_logits.abs().mean()
    assert torch.nn.functional.cosine_similarity(q_logits.flatten(), full_logits.flatten(), dim=0) > 0.99
    generated = quantized.generate(
        **q_tokenizer(["3+4="], return_tensors="pt"),
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=q_tokenizer.pad_token_id,
    )
    assert generated.shape[1] > 2
    with open(os.path.join(quantized_path, "README.md")) as fh:
        assert "load_state_dict" in fh.read()

    # Before / after on held-out data: the loss of the full model is what transformers computes by hand.
    evaluation = summary["eval"]
    assert evaluation["metric"] == "loss" and evaluation["higher_is_better"] is False and evaluation["rows"] == 8
    from trainers.data import read_rows
    from trainers.stage_spec import DataFile

    rows = read_rows(DataFile(demo_kit["data"]["eval"], "jsonl", "prompt_completion"))[:8]
    assert evaluation["before"] == pytest.approx(_completion_loss_by_hand(exported, tokenizer, rows), rel=1e-5)
    assert evaluation["after"] != evaluation["before"]
    assert evaluation["after"] == pytest.approx(evaluation["before"], rel=0.05)
    assert evaluation["before_metrics"]["perplexity"] == pytest.approx(2.718281828 ** evaluation["before"])

    metrics = {k: v for e in log.of("metrics") for k, v in e["metrics"].items()}
    assert metrics["export/size_mb"] == pytest.approx(summary["size_bytes"] / 1e6)
    assert metrics["export/quantized_size_mb"] == pytest.approx(summary["quantized_size_bytes"] / 1e6)
    assert metrics["export/before/loss"] == evaluation["before"] and metrics["export/after/loss"] == evaluation["after"]
    assert "export/before/perplexity" in metrics and "export/after/perplexity" in metrics

    # The protocol.
    kinds = [e["event"] for e in log.events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    started = log.of("started")[0]
    assert started["trainable_params"] == 0 and started["total_params"] == summary["parameters"]
    assert [e["step"] for e in log.of("progress")] == list(range(1, started["total_steps"] + 1))
    assert [e["name"] for e in log.of("artifact")] == ["model", "quantized"]

    # The card: front matter, the platform's facts, the export's own numbers.
    with open(os.path.join(model_path, "README.md")) as fh:
        card = fh.read()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: transformers" in front and 'base_model: "demo/tiny-llama"' in front
    assert 'tags:\n- "refinery"\n- "sft"\n- "dpo"' in front
    for text in (
        "# Refinery run #12 addition-lora",
        "addition v3",
        "`demo/tiny-llama` (revision `abc123`)",
        "| sft-lora | sft | lora |",
        "dpo\\|pass",
        "0123456789abcdef" * 4,
        "| 80 |",
        "sft-lora/train/loss | 0.4321",
        "nested/x",
        "dpo|pass (dpo) <- sft-lora",
        "deadbeef",
        "a stage given as plain text",
        "**reviewer**: ada",
        "| dtype | float32 |",
        f"| parameters | {summary['parameters']:,} |",
        f"{summary['size_bytes']:,} bytes",
        f"{summary['quantized_size_bytes']:,} bytes",
        "| loss |",
        "int8_dynamic",
    ):
        assert text in body, text


@pytest.mark.parametrize("eval_data", ["reference", "chat_eval"])
def test_without_quantization_only_the_full_model_is_exported_and_measured(demo_kit, lora_dir, tmp_path, eval_data):
    out = tmp_path / "out"
    log = _finished(
        _spec(demo_kit, lora_dir, out, eval_data=eval_data, quantization="none", max_rows=4, max_new_tokens=3)
    )
    finished = log.of("finished")[0]
    assert finished["outputs"] == {"kind": "model", "path": str(out / "model")}
    assert not os.path.exists(out / "quantized")
    summary = finished["summary"]
    assert summary["quantized_size_bytes"] is None and summary["quantization"] == "none"
    evaluation = summary["eval"]
    if eval_data == "reference":
        assert evaluation["metric"] == "accuracy" and evaluation["higher_is_better"] is True
        assert 0 <= evaluation["before"] <= 1
        assert set(evaluation["before_metrics"]) == {"exact_match", "accuracy", "mean_reward"}
    else:
        assert evaluation["metric"] == "loss" and evaluation["before"] > 0
    assert evaluation["after"] is None and evaluation["rows"] == 4
    with open(out / "model" / "README.md") as fh:
        card = fh.read()
    # No platform facts: still a valid card, with the input as base model.
    assert card.startswith("---\nlibrary_name: transformers\nbase_model: ") and '- "refinery"' in card
    assert "| quantized copy | none |" in card and "# Refinery model export" in card


@pytest.mark.parametrize("eval_data", ["eval", "chat_eval", "reference"])
def test_export_reports_the_figures_the_evaluate_stage_reports_for_the_same_model_and_data(
    demo_kit, lora_dir, tmp_path, eval_data
):
    """One library computes every number: export's "before" (and every before metric) equals the evaluate
    stage's eval/<metric> for the exported model on the same rows."""
    out = tmp_path / "export"
    finished = _finished(
        _spec(demo_kit, lora_dir, out, eval_data=eval_data, quantization="none", max_rows=6, max_new_tokens=3)
    ).of("finished")[0]
    evaluation = finished["summary"]["eval"]
    model = {"name_or_path": str(out / "model")}
    path, kind = demo_kit["data"][eval_data], demo_kit["kinds"][eval_data]
    log = _finished(
        {
            "method": "evaluate",
            "config": {"max_rows": 6, "max_new_tokens": 3, "sample_count": 0},
            "model": model,
            "data": {"eval": {"path": path, "kind": kind}},
            "aux_models": {"baseline": model},
            "output_dir": str(tmp_path / "evaluate"),
            "checkpoint_dir": str(tmp_path / "evaluate" / "checkpoints"),
        }
    )
    measured = {k: v for e in log.of("metrics") for k, v in e["metrics"].items()}
    target = log.of("finished")[0]["summary"]["target"]
    assert evaluation["metric"] == target["metric"] and evaluation["higher_is_better"] == target["higher_is_better"]
    assert evaluation["before"] == pytest.approx(measured[f"eval/{evaluation['metric']}"], rel=1e-6, abs=1e-9)
    reported = {k: v for k, v in evaluation["before_metrics"].items() if k != "tokens"}
    assert reported == pytest.approx({k: measured[f"eval/{k}"] for k in reported}, rel=1e-6, abs=1e-9)
    assert len(reported) >= 2


def test_the_card_tolerates_odd_facts():
    from trainers.methods.export import model_card

    text = model_card(
        {
            "stages": "not a list",
            "datasets": {"d": {"rows": 3}},
            "metrics": [1, 2],
            "lineage": "a <- b",
            "base_model": {"name_or_path": "org/m"},
            "x": None,
            "run": 5,
        },
        {"dtype": "bfloat16", "parameters": 10, "size_bytes": 2048, "quantized": None},
    )
    assert 'base_model: "org/m"' in text and "| d |" in text and "a <- b" in text and "Refinery run 5" in text


@pytest.mark.parametrize("quantization", ["bnb_8bit", "bnb_4bit"])
def test_bitsandbytes_is_refused_at_start_without_cuda(demo_kit, lora_dir, tmp_path, quantization):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    log = EventLog()
    code = execute(_spec(demo_kit, lora_dir, tmp_path / "out", quantization=quantization), log)
    assert code == EXIT_FAILED and [e["event"] for e in log.events] == ["failed"]
    error = log.of("failed")[0]["error"]
    assert error.startswith(f"ExportError: {quantization} needs a CUDA GPU and bitsandbytes; this worker has ")
    assert not os.path.exists(tmp_path / "out")


def test_the_summary_is_json(demo_kit, lora_dir, tmp_path):
    log = _finished(_spec(demo_kit, lora_dir, tmp_path / "out", quantization="none"))
    summary = log.of("finished")[0]["summary"]
    assert json.loads(json.dumps(summary)) == summary and summary["eval"] is None


def test_a_cancel_request_stops_before_loading(demo_kit, lora_dir, tmp_path):
    from trainers.stage import EXIT_CANCELED

    cancel.request_cancel()
    log = EventLog()
    assert execute(_spec(demo_kit, lora_dir, tmp_path / "out"), log) == EXIT_CANCELED
    assert [e["event"] for e in log.events] == ["canceled"] and not os.path.exists(tmp_path / "out")
