"""How sizes and durations read in messages and pages: one spelling everywhere."""

from __future__ import annotations


def format_bytes(n: int) -> str:
    """1288490189 -> "1.2 GiB"; whole numbers lose their ".0" ("50 GiB"); under 1 KiB: "512 B"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    text = f"{value:.1f}".removesuffix(".0") if unit != "B" else str(int(value))
    return f"{text} {unit}"


def format_duration(seconds: float, *, full: bool = False) -> str:
    """7200 -> "2h"; with full, from the largest unit down to seconds: 7203 -> "2h 0m 3s"."""
    total = int(seconds)
    parts = [(total // 3600, "h"), (total % 3600 // 60, "m"), (total % 60, "s")]
    if full:
        while len(parts) > 1 and parts[0][0] == 0:
            parts.pop(0)
        return " ".join(f"{n}{u}" for n, u in parts)
    shown = [f"{n}{u}" for n, u in parts if n]
    return " ".join(shown) or "0s"
