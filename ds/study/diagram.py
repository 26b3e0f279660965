"""The introduction's figure: an inverted-residual block before and after merging, as SVG."""
from __future__ import annotations

BOX_W, BOX_H, GAP = 210, 44, 26


def _box(x: float, y: float, text: str, fill: str, sub: str = "") -> str:
    lines = [f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#333"/>',
             f'<text x="{x + BOX_W / 2}" y="{y + (18 if sub else 27)}" text-anchor="middle" font-size="14">{text}</text>']
    if sub:
        lines.append(f'<text x="{x + BOX_W / 2}" y="{y + 35}" text-anchor="middle" font-size="11" fill="#444">{sub}</text>')
    return "\n".join(lines)


def _arrow(x: float, y1: float, y2: float) -> str:
    return f'<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" stroke="#333" marker-end="url(#head)"/>'


def _column(x: float, title: str, boxes: list[tuple[str, str, str]], skip: bool) -> list[str]:
    out = [f'<text x="{x + BOX_W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>']
    y = 40
    out.append(f'<text x="{x + BOX_W / 2}" y="{y + 14}" text-anchor="middle" font-size="12">input: C_in x H x W</text>')
    top = y + 20
    y = top + GAP
    out.append(_arrow(x + BOX_W / 2, top, y))
    for i, (text, fill, sub) in enumerate(boxes):
        out.append(_box(x, y, text, fill, sub))
        y += BOX_H
        out.append(_arrow(x + BOX_W / 2, y, y + GAP))
        y += GAP
    if skip:
        out.append(f'<path d="M {x + BOX_W / 2} {top + 8} H {x + BOX_W + 22} V {y - 8} H {x + BOX_W / 2 + 12}" '
                   f'fill="none" stroke="#333" stroke-dasharray="5,3" marker-end="url(#head)"/>')
        out.append(f'<text x="{x + BOX_W + 26}" y="{(top + y) / 2}" font-size="11">skip (+)</text>')
    out.append(f'<text x="{x + BOX_W / 2}" y="{y + 12}" text-anchor="middle" font-size="12">output: C_out x H/s x W/s</text>')
    return out


def block_merge_svg() -> str:
    """An inverted-residual block (1x1 expand, kxk depthwise, 1x1 project, skip) with its
    activations, and the single dense kxk conv it becomes once they are removed and it is merged."""
    act, lin, merged = "#cfe0f3", "#eeeeee", "#f2c14e"
    before = [("1x1 conv + BN", lin, "C_in -> t*C_in"), ("ReLU6", act, "removed by DepthShrinker"),
              ("kxk depthwise + BN", lin, "stride s"), ("ReLU6", act, "removed by DepthShrinker"),
              ("1x1 conv + BN", lin, "t*C_in -> C_out")]
    after = [("dense kxk conv", merged, "C_in -> C_out, stride s, bias"),
             ("ReLU6", act, "after the block (the paper's setting)")]
    width = 2 * BOX_W + 280
    height = 40 + 20 + GAP + 5 * (BOX_H + GAP) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
             '<defs><marker id="head" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" refX="9" refY="5" orient="auto">'
             '<path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    parts += _column(10, "before: inverted residual", before, skip=True)
    parts += _column(BOX_W + 260, "after: merged", after, skip=False)
    mid_y = height / 2
    parts.append(f'<line x1="{BOX_W + 100}" y1="{mid_y}" x2="{BOX_W + 235}" y2="{mid_y}" stroke="#b5651d" '
                 f'stroke-width="3" marker-end="url(#head)"/>')
    parts.append(f'<text x="{BOX_W + 165}" y="{mid_y - 12}" text-anchor="middle" font-size="12">fold BN, compose</text>')
    parts.append(f'<text x="{BOX_W + 165}" y="{mid_y + 22}" text-anchor="middle" font-size="12">the convs, add skip</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
