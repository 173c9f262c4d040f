"""``python -m trainers``: run a stage, list methods, build the demo kit, score addition.

python -m trainers run SPEC.json             # events on stdout (NDJSON); exit 0 / 1 / 3
python -m trainers run SPEC.json --parent-pid PID   # ... and die (SIGKILL) when process PID dies
python -m trainers methods [--json]          # the method catalog with config schemas (no torch import)
python -m trainers demo --out DIR [--seed N] # build the offline demo kit, print its paths as JSON
python -m trainers eval-addition --model DIR [--adapter DIR] --data FILE [--chat]
"""

import argparse
import contextlib
import json
import os
import sys
from typing import Any

__all__ = ["main"]


@contextlib.contextmanager
def _json_answer():
    """While the command runs, fd 1 goes to stderr (library chatter); yields a writer for the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    chunks: list[str] = []
    try:
        yield chunks.append
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    sys.stdout.write("".join(chunks))
    sys.stdout.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    if args.parent_pid is not None:  # first of all: the supervisor may already be gone
        from .deathsig import die_with_parent

        die_with_parent(args.parent_pid)
    from .cancel import install_sigterm_handler
    from .events import EventWriter
    from .stage import EXIT_FAILED, execute, one_line_error

    install_sigterm_handler()
    events = EventWriter.take_stdout()
    if int(os.environ.get("RANK", "0")) != 0:
        # Under a multi-process launcher only rank 0 speaks on the event stream; the others log to stderr.
        events = EventWriter(sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from .stage_spec import load_spec

        spec = load_spec(args.spec)
    except Exception as exc:  # noqa: BLE001 - a bad spec is a failed stage
        import traceback

        events.emit("failed", error=one_line_error(exc), traceback=traceback.format_exc())
        return EXIT_FAILED
    return execute(spec, events)


def _cmd_methods(args: argparse.Namespace) -> int:
    from .catalog import describe_methods

    described = describe_methods()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for method in described["methods"]:
        print(f"{method['name']:<8} {method['label']}  (data: {', '.join(method['dataset_kinds'])})")
        for field in method["config_fields"]:
            print(f"    {field['name']:<30} {field['type']:<7} default {field['default']!r}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    with _json_answer() as answer:
        from .demo import build_demo

        answer(json.dumps(build_demo(args.out, seed=args.seed), indent=2) + "\n")
    return 0


def _cmd_eval_addition(args: argparse.Namespace) -> int:
    with _json_answer() as answer:
        from .measures import exact_match, load_model, read_prompt_answers

        model, tokenizer = load_model(args.model, args.adapter)
        result: dict[str, Any] = exact_match(model, tokenizer, read_prompt_answers(args.data), chat=args.chat)
        result.update(model=os.path.abspath(args.model), adapter=args.adapter and os.path.abspath(args.adapter))
        answer(json.dumps(result) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainers", description="Refinery trainers")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one stage from a spec file; events go to stdout as NDJSON")
    p.add_argument("spec", help="path to the stage spec JSON")
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="die (SIGKILL) when this process, the one that started the trainer, dies",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("methods", help="list the registered methods and their config schemas")
    p.add_argument("--json", action="store_true", help="print JSON (schemas included)")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("demo", help="build the offline demo kit (tokenizer, tiny Llama, addition data)")
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("eval-addition", help="greedy exact-match accuracy on prompt/answer rows")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--adapter", default=None, help="adapter directory to apply on the model")
    p.add_argument("--data", required=True, help="reference (prompt, answer), prompt_completion or chat file")
    p.add_argument("--chat", action="store_true", help="wrap plain prompts in the chat template")
    p.set_defaults(func=_cmd_eval_addition)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback, for the CLI helpers
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
