"""The sweep form's shape: parameter rows (params-<i>-path, -values, -min, -max, -scale) to parameters."""

from __future__ import annotations

import re

from django.http import QueryDict

ROW_FIELDS = ("path", "values", "min", "max", "scale")
MIN_ROWS = 3
MAX_ROWS = 16
_ROW_KEY = re.compile(r"^params-(\d+)-path$")


def parse_rows(data: QueryDict) -> list[dict[str, str]]:
    """The posted parameter rows as text, blank ones dropped (so row i is parameter i)."""
    indexes = sorted({int(m[1]) for key in data if (m := _ROW_KEY.match(key)) and int(m[1]) < MAX_ROWS})
    rows = []
    for i in indexes:
        row = {name: data.get(f"params-{i}-{name}", "").strip() for name in ROW_FIELDS}
        row["scale"] = row["scale"] or "linear"
        if any(row[name] for name in ("path", "values", "min", "max")):
            rows.append(row)
    return rows


def split_values(text: str) -> list[str]:
    """ "1e-4, 3e-4, 1e-3" (commas or spaces) -> ["1e-4", "3e-4", "1e-3"]."""
    return [v for v in re.split(r"[,\s]+", text) if v]


def parameters_from_rows(rows: list[dict[str, str]]) -> list[dict]:
    """What sweep_create takes: values as a list of text (coerced by the service), or min/max/scale."""
    parameters = []
    for row in rows:
        if row["values"]:
            parameters.append(
                {"path": row["path"], "values": split_values(row["values"]), "min": row["min"], "max": row["max"]}
            )
        elif row["min"] or row["max"]:
            parameters.append({"path": row["path"], "min": row["min"], "max": row["max"], "scale": row["scale"]})
        else:
            parameters.append({"path": row["path"]})
    return parameters


def padded(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Rows for the form: the given ones plus blank ones, at least MIN_ROWS and one spare."""
    blank = dict.fromkeys(ROW_FIELDS, "") | {"scale": "linear"}
    count = min(MAX_ROWS, max(MIN_ROWS, len(rows) + 1))
    return (rows + [dict(blank) for _ in range(count)])[: max(count, len(rows))]
