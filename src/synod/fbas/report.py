"""Every analysis of one network in one summary; what changed between two snapshots; the
self-contained HTML report.

Theory of operation
-------------------
`summarize` runs the four analyses (quorum intersection, top tier, smallest blocking
and splitting sets by node and by organisation) once and keeps their witnesses.
`compare` lines two summaries up by public key, so that a node that moved in the file
is still the same node.  `render_report` writes one HTML page holding every analysis,
the trust graph as inline SVG, the what-if of losing each top-tier organisation, and
the witnesses; it names no external resource (no script, style sheet, font or image
from elsewhere), so opening it sends no request: the page works offline and tells no
one who looked at it.  Every text that comes from the input is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from synod.fbas.analysis import (
    MinimalSetResult,
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.graph import layout, render_svg
from synod.fbas.network import Fbas, iter_bits, without

Stop = Callable[[], bool]


@dataclass(frozen=True)
class Summary:
    """The answers of every analysis on one network."""

    nodes: int
    has_quorum: bool
    intersects: bool | None
    disjoint_quorums: tuple[int, int] | None
    top_tier: int
    top_tier_undecided: int
    blocking: MinimalSetResult
    blocking_by_org: MinimalSetResult
    splitting: MinimalSetResult
    splitting_by_org: MinimalSetResult

    @property
    def proven(self) -> bool:
        """Whether every answer is proven: none was left at bounds by a stop."""
        results = (self.blocking, self.blocking_by_org, self.splitting, self.splitting_by_org)
        decided = self.intersects is not None or not self.has_quorum
        return decided and not self.top_tier_undecided and all(r.optimal for r in results)


def summarize(fbas: Fbas, stop: Stop | None = None) -> Summary:
    """Run every analysis on `fbas` (each may stop early under `stop`)."""
    intersection = check_intersection(fbas, stop=stop)
    tier = top_tier(fbas, stop=stop)
    return Summary(
        nodes=len(fbas),
        has_quorum=intersection.has_quorum,
        intersects=intersection.intersects,
        disjoint_quorums=intersection.witness,
        top_tier=tier.nodes,
        top_tier_undecided=tier.undecided,
        blocking=minimal_blocking_sets(fbas, stop=stop),
        blocking_by_org=minimal_blocking_sets(fbas, "org", stop=stop),
        splitting=minimal_splitting_sets(fbas, stop=stop),
        splitting_by_org=minimal_splitting_sets(fbas, "org", stop=stop),
    )


def size_text(result: MinimalSetResult) -> str:
    """The minimum as people read it: "3", "none", or "4..7" when not proven."""
    if result.optimal:
        return "none" if result.size is None else str(result.size)
    upper = "?" if result.size is None else str(result.size)
    return f"{result.lower_bound}..{upper}"


def tier_text(summary: Summary) -> str:
    """The top tier's size, with the nodes a stop left undecided ("12 (+9 undecided)")."""
    known = summary.top_tier.bit_count()
    undecided = summary.top_tier_undecided.bit_count()
    return f"{known} (+{undecided} undecided)" if undecided else str(known)


def intersection_text(summary: Summary) -> str:
    if not summary.has_quorum:
        return "no quorum"
    if summary.intersects is None:
        return "undecided"
    return "holds" if summary.intersects else "fails"


@dataclass(frozen=True)
class Change:
    """One line of a comparison: what, before, after."""

    what: str
    before: str
    after: str


def compare(old: Fbas, old_summary: Summary, new: Fbas, new_summary: Summary) -> list[Change]:
    """What differs between two snapshots (every line, changed or not, in a fixed order;
    `Change.before == Change.after` when nothing changed)."""
    rows = [
        Change("nodes", str(old_summary.nodes), str(new_summary.nodes)),
        Change(
            "quorum intersection", intersection_text(old_summary), intersection_text(new_summary)
        ),
        Change("top tier size", tier_text(old_summary), tier_text(new_summary)),
    ]
    for label, old_result, new_result in (
        ("smallest blocking set (nodes)", old_summary.blocking, new_summary.blocking),
        (
            "smallest blocking set (organisations)",
            old_summary.blocking_by_org,
            new_summary.blocking_by_org,
        ),
        ("smallest splitting set (nodes)", old_summary.splitting, new_summary.splitting),
        (
            "smallest splitting set (organisations)",
            old_summary.splitting_by_org,
            new_summary.splitting_by_org,
        ),
    ):
        rows.append(Change(label, size_text(old_result), size_text(new_result)))
    old_keys = set(old.key_set(old_summary.top_tier))
    new_keys = set(new.key_set(new_summary.top_tier))
    for key in sorted(new_keys - old_keys):
        rows.append(Change("joined the top tier", "", _node_label(new, key)))
    for key in sorted(old_keys - new_keys):
        rows.append(Change("left the top tier", _node_label(old, key), ""))
    return rows


def _node_label(fbas: Fbas, key: str) -> str:
    info = fbas.nodes[fbas.index[key]]
    return f"{info.name} ({key})" if info.name else key


# ---------------------------------------------------------------- HTML report


@dataclass(frozen=True)
class WhatIf:
    """The network without one top-tier organisation."""

    organisation: str
    summary: Summary


def what_ifs(fbas: Fbas, summary: Summary, stop: Stop | None = None) -> list[WhatIf]:
    """One summary per top-tier organisation, as if it failed or left."""
    result = []
    for label, bits in fbas.groups("org"):
        if bits & summary.top_tier:
            result.append(WhatIf(label, summarize(without(fbas, bits), stop)))
    return result


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.fails { color: #b00020; font-weight: bold; }
.holds { color: #2b7a0b; font-weight: bold; }
code { font-size: 0.9em; }
section { border-left: 8px solid #868e96; padding-left: 1em; margin-bottom: 1em; }
"""

SECTION_COLOURS = {
    "overview": "#7b2cbf",
    "intersection": "#0b7285",
    "top-tier": "#5c940d",
    "sets": "#c2255c",
    "what-if": "#1864ab",
    "graph": "#087f5b",
}
"""Each section's left bar: a key for readers, and what a screenshot check looks for."""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already escaped HTML."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _nodes_cell(fbas: Fbas, nodes: int) -> str:
    return ", ".join(
        f"{_esc(fbas.nodes[v].label)} <code>{_esc(fbas.nodes[v].public_key)}</code>"
        for v in iter_bits(nodes)
    )


def _set_rows(fbas: Fbas, result: MinimalSetResult) -> list[list[str]]:
    if not result.examples:
        return [[_esc(result.kind), _esc(size_text(result)), "", ""]]
    example = result.examples[0]
    groups = ", ".join(_esc(group.label) for group in example.groups) if result.grouping else ""
    quorums = ""
    if example.quorums is not None:
        quorums = " | ".join(_nodes_cell(fbas, q) for q in example.quorums)
    unit = "organisations" if result.grouping else "nodes"
    return [
        [
            f"{_esc(result.kind)} ({unit})",
            _esc(size_text(result)),
            groups or _nodes_cell(fbas, example.nodes),
            quorums,
        ]
    ]


def render_report(
    fbas: Fbas, summary: Summary, scenarios: list[WhatIf], title: str = "FBAS report"
) -> str:
    """The whole report as one self-contained HTML document."""
    verdict = intersection_text(summary)
    css_class = "holds" if verdict == "holds" else "fails"
    overview = _table(
        ["question", "answer"],
        [
            ["nodes", _esc(summary.nodes)],
            ["quorum intersection", f"<span class='{css_class}'>{_esc(verdict)}</span>"],
            ["top tier", _esc(tier_text(summary))],
            ["smallest blocking set (nodes / organisations)",
             _esc(f"{size_text(summary.blocking)} / {size_text(summary.blocking_by_org)}")],
            ["smallest splitting set (nodes / organisations)",
             _esc(f"{size_text(summary.splitting)} / {size_text(summary.splitting_by_org)}")],
        ],
    )
    witness = "<p>Every two quorums intersect.</p>"
    if summary.disjoint_quorums is not None:
        first, second = summary.disjoint_quorums
        witness = _table(
            ["quorum", "nodes"],
            [["1", _nodes_cell(fbas, first)], ["2", _nodes_cell(fbas, second)]],
        )
    tier_rows = [
        [_esc(fbas.nodes[v].label), f"<code>{_esc(fbas.nodes[v].public_key)}</code>",
         _esc(fbas.nodes[v].organization or "")]
        for v in iter_bits(summary.top_tier)
    ]
    sets = _table(
        ["set", "minimum", "example", "disjoint quorums once it lies"],
        [
            *_set_rows(fbas, summary.blocking),
            *_set_rows(fbas, summary.blocking_by_org),
            *_set_rows(fbas, summary.splitting),
            *_set_rows(fbas, summary.splitting_by_org),
        ],
    )
    scenario_rows = [
        [
            _esc(scenario.organisation),
            _esc(intersection_text(scenario.summary)),
            _esc(tier_text(scenario.summary)),
            _esc(size_text(scenario.summary.blocking_by_org)),
            _esc(size_text(scenario.summary.splitting_by_org)),
        ]
        for scenario in scenarios
    ]
    what_if = _table(
        ["without organisation", "intersection", "top tier", "blocking (orgs)",
         "splitting (orgs)"],
        scenario_rows,
    )
    # Inline SVG in HTML needs no namespace declaration; dropping it leaves the page
    # without a single URL, which its test checks.
    graph = render_svg(fbas, layout(fbas, summary.top_tier, "org")).replace(
        ' xmlns="http://www.w3.org/2000/svg"', "", 1
    )
    sections = [
        ("overview", "Overview", overview),
        ("intersection", "Quorum intersection", witness),
        ("top-tier", "Top tier", _table(["node", "public key", "organisation"], tier_rows)),
        ("sets", "Smallest blocking and splitting sets (witnesses)", sets),
        ("what-if", "What if a top-tier organisation fails or leaves", what_if),
        ("graph", "Trust graph",
         "<p>Top tier in orange, other validators in blue, nodes without quorum set in "
         f"grey; hover a node for its name and key.</p>{graph}"),
    ]
    body = "".join(
        f"<section id='{anchor}' style='border-left-color: {SECTION_COLOURS[anchor]}'>"
        f"<h2>{_esc(heading)}</h2>{content}</section>"
        for anchor, heading, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_esc(title)}</h1>{body}</body></html>\n"
    )
