"""Trust-graph layout and a self-contained SVG/HTML rendering of a federated network.

Theory of operation
-------------------
Nodes are grouped (by organisation unless told otherwise); groups that meet the top
tier sit on an inner ring, the others on an outer ring, and the members of a group on a
small circle around the group's centre.  An edge v -> w means w appears in v's quorum
set.  Only nodes that take part in trust (they have a quorum set or appear in one) are
drawn.  Everything here is pure: the caller writes the text, or draws the layout with
matplotlib.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from synod.fbas.network import Fbas, iter_bits


@dataclass(frozen=True)
class GroupPlace:
    label: str
    x: float
    y: float
    radius: float
    in_top_tier: bool


@dataclass(frozen=True)
class Layout:
    positions: dict[int, tuple[float, float]]
    groups: tuple[GroupPlace, ...]
    edges: tuple[tuple[int, int], ...]
    top_tier: int


def layout(fbas: Fbas, top_tier: int, grouping: str | None = "org") -> Layout:
    """Positions in the unit square [-1, 1]^2 for every node that takes part in trust."""
    involved = 0
    edges: list[tuple[int, int]] = []
    for v, qset in enumerate(fbas.qsets):
        if qset is None:
            continue
        involved |= 1 << v
        for w in sorted(set(qset.members())):
            if w != v:
                edges.append((v, w))
                involved |= 1 << w
    groups = [(label, bits & involved) for label, bits in fbas.groups(grouping) if bits & involved]
    inner = sorted((g for g in groups if g[1] & top_tier), key=lambda g: g[0])
    outer = sorted(
        (g for g in groups if not g[1] & top_tier), key=lambda g: (-g[1].bit_count(), g[0])
    )
    positions: dict[int, tuple[float, float]] = {}
    places: list[GroupPlace] = []
    for ring, radius in ((inner, 0.45 if outer else 0.6), (outer, 0.85)):
        for index, (label, bits) in enumerate(ring):
            angle = 2 * math.pi * index / max(1, len(ring))
            centre_x, centre_y = radius * math.cos(angle), radius * math.sin(angle)
            members = list(iter_bits(bits))
            gap = 2 * math.pi * radius / max(1, len(ring))
            spread = min(0.12, 0.3 * gap) if len(members) > 1 else 0.0
            for position, node in enumerate(members):
                theta = 2 * math.pi * position / len(members)
                positions[node] = (
                    centre_x + spread * math.cos(theta),
                    centre_y + spread * math.sin(theta),
                )
            name = label.removeprefix("node ")  # a node without group stands for itself
            in_tier = bool(bits & top_tier)
            places.append(GroupPlace(name, centre_x, centre_y, spread + 0.015, in_tier))
    return Layout(positions, tuple(places), tuple(edges), top_tier)


def _to_pixels(point: tuple[float, float], size: int) -> tuple[float, float]:
    half = size / 2
    return half + point[0] * half * 0.9, half - point[1] * half * 0.9


def render_svg(fbas: Fbas, drawing: Layout, size: int = 900) -> str:
    """An SVG document: grey trust edges, group circles, top-tier nodes in orange, and a
    tooltip (SVG <title>) with each node's name and key."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" font-family="sans-serif">',
        f'<rect width="{size}" height="{size}" fill="white"/>',
        '<g stroke="#999" stroke-opacity="0.15" stroke-width="0.6">',
    ]
    for v, w in drawing.edges:
        x1, y1 = _to_pixels(drawing.positions[v], size)
        x2, y2 = _to_pixels(drawing.positions[w], size)
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"/>')
    parts.append("</g>")
    for place in drawing.groups:
        x, y = _to_pixels((place.x, place.y), size)
        radius = place.radius * size / 2 * 0.9
        colour = "#f5a623" if place.in_top_tier else "#bbbbbb"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="none" '
            f'stroke="{colour}" stroke-dasharray="3,2"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{y - radius - 4:.1f}" font-size="10" text-anchor="middle" '
            f'fill="#333">{html.escape(place.label[:28])}</text>'
        )
    for node, point in drawing.positions.items():
        x, y = _to_pixels(point, size)
        in_tier = drawing.top_tier >> node & 1
        info = fbas.nodes[node]
        colour = (
            "#e8590c" if in_tier else ("#4c6ef5" if fbas.qsets[node] is not None else "#adb5bd")
        )
        title = html.escape(f"{info.name or ''} {info.public_key}".strip())
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if in_tier else 3.5}" fill="{colour}">'
            f"<title>{title}</title></circle>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(fbas: Fbas, drawing: Layout, title: str = "FBAS trust graph") -> str:
    """A standalone HTML page around `render_svg` (no external resources)."""
    tier = drawing.top_tier.bit_count()
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1 style='font-family:sans-serif'>{html.escape(title)}</h1>"
        f"<p style='font-family:sans-serif'>{len(drawing.positions)} nodes, {len(drawing.edges)} "
        f"trust edges; top tier ({tier} nodes) in orange, other validators in blue, nodes "
        "without quorum set in grey; hover a node for its name and key.</p>"
        f"{render_svg(fbas, drawing)}</body></html>\n"
    )
