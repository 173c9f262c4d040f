"""The environment a trainer subprocess starts with: an allow-list, never the worker's whole environment.

The worker holds the platform's secrets (DATABASE_URL, DJANGO_SECRET_KEY, CELERY_BROKER_URL, the MLflow
address, REFINERY_SECRETS_KEY...). The trainer needs none of them: it reads a spec file and writes events
to stdout (docs/stage-spec.md). It gets what a Python process, the accelerator libraries and the Hugging
Face cache need, and the fault-injection switch the chaos suite uses; everything else is dropped.

A hub token never comes from the worker's environment: the supervisor adds the stage's team's own token
(a team secret) as ``extra`` for the stages that load a model from the hub.
"""

from __future__ import annotations

from collections.abc import Mapping

# Names passed through as they are.
ALLOWED_NAMES = frozenset(
    {
        # the process itself
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "PYTHONHASHSEED",
        "VIRTUAL_ENV",
        # accelerators: the device mask, the CUDA libraries' path, the allocator's settings
        "LD_LIBRARY_PATH",
        "PYTORCH_CUDA_ALLOC_CONF",
        # the Hugging Face cache and offline switches (no credentials)
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_DATASETS_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "TOKENIZERS_PARALLELISM",
        # CPU threads
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        # the fault-injection suite (trainers/faults.py, tests/chaos)
        "REFINERY_FAILPOINTS",
    }
)
# Families passed through by prefix (locale; CUDA_VISIBLE_DEVICES and the rest of CUDA's, NVIDIA's and NCCL's
# settings; OpenBLAS threads).
ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_", "OPENBLAS_")
# Never passed, whatever a prefix says: credentials of the hub (the team's own token comes as `extra`).
DENIED_NAMES = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_TOKEN_PATH"})


def allowed(name: str) -> bool:
    """Whether a variable of the worker's environment may reach the trainer."""
    if name in DENIED_NAMES:
        return False
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def trainer_environment(*, base_env: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: the allowed part of `base_env`, then `extra` (set by the supervisor, so it
    may hold what the allow-list drops, such as the team's HF_TOKEN). Output is unbuffered (events are read
    line by line)."""
    env = {name: value for name, value in base_env.items() if allowed(name)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def hub_model_used(spec: Mapping, *, base_model: Mapping) -> bool:
    """Whether the trainer of this stage spec loads the run's base model from the hub: the base model is a
    hub model, and the spec's input model (or one of its aux models or merge inputs) is that model, bare or
    under an adapter. A model an earlier stage produced is a local folder, which needs no token."""
    if base_model.get("source") != "hub" or not base_model.get("name_or_path"):
        return False
    blocks = [spec.get("model") or {}, *(spec.get("aux_models") or {}).values(), *(spec.get("inputs") or [])]
    return any(isinstance(b, Mapping) and b.get("name_or_path") == base_model["name_or_path"] for b in blocks)
