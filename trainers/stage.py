"""Running one stage and turning its outcome into terminal events and an exit status."""

import traceback
from typing import Any

from .catalog import get_method
from .events import Events
from .stage_spec import SpecError, StageSpec, parse_spec

__all__ = ["EXIT_FINISHED", "EXIT_FAILED", "EXIT_CANCELED", "execute", "one_line_error"]

EXIT_FINISHED, EXIT_FAILED, EXIT_CANCELED = 0, 1, 3


def one_line_error(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, SpecError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def execute(spec: StageSpec | dict[str, Any], events: Events) -> int:
    """Run a stage (parsing it first if given as a dict); emit finished/canceled/failed; return the exit status."""
    try:
        if not isinstance(spec, StageSpec):
            spec = parse_spec(spec)
        result = get_method(spec.method).load_runner()(spec, events)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a failed event
        events.emit("failed", error=one_line_error(exc), traceback=traceback.format_exc())
        return EXIT_FAILED
    if result.get("status") == "canceled":
        events.emit("canceled", step=result.get("step", 0))
        return EXIT_CANCELED
    events.emit("finished", outputs=result["outputs"], summary=result.get("summary", {}))
    return EXIT_FINISHED
