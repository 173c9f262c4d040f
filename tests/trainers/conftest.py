"""Trainer tests: no Django, a tiny model built offline once per session."""

import os

# Before torch is imported anywhere: one intra-op thread is faster for the tiny model and
# far steadier on a shared 2-core machine; nothing may reach a model hub.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_kit(tmp_path_factory):
    """The demo kit (tokenizer + tiny Llama + addition data), built once."""
    import torch
    from trainers.demo import build_demo

    torch.set_num_threads(1)
    return build_demo(str(tmp_path_factory.mktemp("demo")), seed=0)


@pytest.fixture
def make_spec(demo_kit, tmp_path):
    """Build a stage spec dict on the demo kit; keyword arguments override parts of it."""

    def make(
        *,
        config=None,
        adapter=None,
        data="train",
        eval_data=None,
        model=None,
        out=None,
        seed=42,
    ):
        kind = demo_kit["kinds"][data]
        out = out or str(tmp_path / "out")
        spec = {
            "version": 1,
            "stage": {"name": "test", "index": 0, "stage_run_id": 1},
            "method": "sft",
            "config": config or {},
            "adapter": adapter or {"type": "none"},
            "model": model or {"name_or_path": demo_kit["model"], "revision": None, "adapter_path": None},
            "data": {
                "train": {"path": demo_kit["data"][data], "format": _fmt(demo_kit["data"][data]), "kind": kind},
                "eval": None,
            },
            "output_dir": out,
            "checkpoint_dir": os.path.join(out, "checkpoints"),
            "seed": seed,
        }
        if eval_data:
            path = demo_kit["data"][eval_data]
            spec["data"]["eval"] = {"path": path, "format": _fmt(path), "kind": demo_kit["kinds"][eval_data]}
        return spec

    return make


def _fmt(path: str) -> str:
    return {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}[os.path.splitext(path)[1]]
