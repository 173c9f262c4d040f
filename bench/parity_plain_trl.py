"""The plain-TRL side of bench_parity.py: one stage written the way a user would write it with TRL alone.

    python bench/parity_plain_trl.py --method sft --model DIR --data FILE.jsonl --config CONFIG.json \
        --seed 42 --out DIR --result RESULT.json

CONFIG.json holds the stage's hyperparameters (the platform's method config with its defaults
filled in); every TRL option the platform's runner sets is spelled out below, each taken
from that file, so the two sides train the same model on the same data the same way. No
Refinery code is imported here. RESULT.json receives the per-step losses from
trainer.state.log_history and the timings.
"""

from __future__ import annotations

import time

SCRIPT_STARTED = time.perf_counter()  # before the heavy imports: the whole script is timed

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def sft_trainer(model, tokenizer, train, cfg: dict, seed: int, out: str):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=os.path.join(out, "checkpoints"),
        seed=seed,
        data_seed=seed,
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["num_train_epochs"],
        max_steps=cfg["max_steps"],
        per_device_train_batch_size=cfg["per_device_train_batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        max_length=cfg["max_length"],
        warmup_steps=cfg["warmup_ratio"],  # transformers 5: a float below 1 is a ratio of the steps
        weight_decay=cfg["weight_decay"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        logging_steps=cfg["logging_steps"],
        save_steps=cfg["save_steps"],
        save_total_limit=cfg["save_total_limit"],
        completion_only_loss=cfg["completion_only_loss"],
        packing=cfg["packing"],
        gradient_checkpointing=cfg["gradient_checkpointing"],
        bf16=False,  # CPU: float32, as the platform runs without a bf16 GPU
        report_to="none",
        disable_tqdm=True,
    )
    return SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)


def dpo_trainer(model, tokenizer, train, cfg: dict, seed: int, out: str):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=os.path.join(out, "checkpoints"),
        seed=seed,
        data_seed=seed,
        learning_rate=cfg["learning_rate"],
        num_train_epochs=cfg["num_train_epochs"],
        max_steps=cfg["max_steps"],
        per_device_train_batch_size=cfg["per_device_train_batch_size"],
        gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        max_length=cfg["max_length"],
        warmup_steps=cfg["warmup_ratio"],
        weight_decay=cfg["weight_decay"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        logging_steps=cfg["logging_steps"],
        save_steps=cfg["save_steps"],
        save_total_limit=cfg["save_total_limit"],
        beta=cfg["beta"],
        loss_type=[cfg["loss_type"]],
        label_smoothing=cfg["label_smoothing"],
        gradient_checkpointing=cfg["gradient_checkpointing"],
        bf16=False,
        report_to="none",
        disable_tqdm=True,
    )
    # No ref_model: TRL loads the reference from the same model directory.
    return DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("sft", "dpo"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as fh:
        cfg = json.load(fh)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = load_dataset("json", data_files=args.data, split="train", cache_dir=os.path.join(args.out, "hf-cache"))
    build = sft_trainer if args.method == "sft" else dpo_trainer
    trainer = build(model, tokenizer, train, cfg, args.seed, args.out)

    started, cpu_started = time.perf_counter(), time.process_time()
    output = trainer.train()
    train_s, train_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    trainer.save_model(os.path.join(args.out, "model"))
    script_s = time.perf_counter() - SCRIPT_STARTED

    losses = [[entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry]
    with open(args.result, "w", encoding="utf-8") as fh:
        json.dump(
            {
                "losses": losses,
                "train_s": train_s,
                "train_cpu_s": train_cpu_s,
                "train_runtime": output.metrics.get("train_runtime"),
                "script_s": script_s,
                "global_step": trainer.state.global_step,
                "torch_threads": torch.get_num_threads(),
            },
            fh,
        )


if __name__ == "__main__":
    main()
