"""Laying out a pipeline's stage graph for drawing: columns by dependency depth, left to right.

Pure functions on stage dicts (a pipeline version's stages, or a run's StageRuns); the template
`components/pipeline_graph.html` draws the result as inline SVG, so the page needs no JS library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refinery.pipelines.specs import _stage_refs

NODE_W, NODE_H = 176, 56
COL_GAP, ROW_GAP = 64, 20
PAD = 8


@dataclass
class Node:
    name: str
    method: str
    x: int = 0
    y: int = 0
    status: str = ""
    detail: str = ""
    auto: bool = False
    href: str = ""
    index: int = 0
    column: int = 0


@dataclass
class Edge:
    source: str
    target: str
    kind: str  # "input" | "inputs" | "aux"
    path: str = ""
    label: str = ""


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    node_w: int = NODE_W
    node_h: int = NODE_H


def _detail(stage: dict) -> str:
    adapter = (stage.get("adapter") or {}).get("type")
    config = stage.get("config") or {}
    if stage.get("method") == "merge":
        return config.get("merge_method", "")
    if stage.get("method") == "export":
        return f"quantize: {config.get('quantization', 'none')}"
    if stage.get("method") == "evaluate":
        return "automatic" if stage.get("auto") else "evaluation"
    if adapter in ("lora", "dora", "qlora") and stage.get("adapter", {}).get("r"):
        return f"{adapter} r={stage['adapter']['r']}"
    return adapter or ""


def pipeline_graph(
    stages: list[dict], *, statuses: dict[str, str] | None = None, links: dict[str, str] | None = None
) -> Graph:
    """Nodes (base model + stages) at column = 1 + the deepest stage they need, edges as SVG paths."""
    statuses, links = statuses or {}, links or {}
    by_name = {s["name"]: s for s in stages}
    depth: dict[str, int] = {}

    def column(name: str, trail: tuple = ()) -> int:
        if name in depth:
            return depth[name]
        if name in trail or name not in by_name:  # a cycle or a dangling reference: drawn, not recursed
            return 0
        needed = [ref for _, ref in _stage_refs(by_name[name])]
        depth[name] = 1 + max((column(ref, trail + (name,)) for ref in needed), default=0)
        return depth[name]

    graph = Graph()
    base = Node(name="base", method="base model", detail="", column=0)
    nodes = {"base": base}
    for i, stage in enumerate(stages):
        nodes[stage["name"]] = Node(
            name=stage["name"],
            method=stage.get("method", ""),
            status=statuses.get(stage["name"], ""),
            detail=_detail(stage),
            auto=bool(stage.get("auto")),
            href=links.get(stage["name"], ""),
            index=i,
            column=column(stage["name"]),
        )
    columns: dict[int, list[Node]] = {}
    for node in nodes.values():
        columns.setdefault(node.column, []).append(node)
    tallest = max(len(c) for c in columns.values())
    graph.height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    for col, members in columns.items():
        members.sort(key=lambda n: n.index)
        block = len(members) * NODE_H + (len(members) - 1) * ROW_GAP
        top = (graph.height - block) // 2
        for row, node in enumerate(members):
            node.x = PAD + col * (NODE_W + COL_GAP)
            node.y = top + row * (NODE_H + ROW_GAP)
    graph.width = PAD * 2 + (max(columns) + 1) * NODE_W + max(columns) * COL_GAP
    graph.nodes = [base] + [nodes[s["name"]] for s in stages]

    for stage in stages:
        refs = _stage_refs(stage) or [("input", "base")]
        for field_name, ref in refs:
            source, target = nodes.get(ref), nodes[stage["name"]]
            if source is None:
                continue
            kind = "aux" if field_name.startswith("config.") else field_name
            x1, y1 = source.x + NODE_W, source.y + NODE_H // 2
            x2, y2 = target.x, target.y + NODE_H // 2
            if x2 <= x1:  # drawn backwards (a cycle): loop under the nodes
                bottom = graph.height - 2
                path = f"M{x1},{y1} C{x1 + 40},{bottom} {x2 - 40},{bottom} {x2},{y2}"
            else:
                mid = (x1 + x2) / 2
                path = f"M{x1},{y1} C{mid:.0f},{y1} {mid:.0f},{y2} {x2},{y2}"
            label = field_name.removeprefix("config.").removesuffix("_stage") if kind == "aux" else ""
            graph.edges.append(Edge(source=ref, target=stage["name"], kind=kind, path=path, label=label))
    return graph
