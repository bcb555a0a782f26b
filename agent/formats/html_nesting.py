"""How deep an HTML document nests its elements, estimated by one linear scan before parsing.

An HTML5 parser checks scopes by walking its stack of open elements, so a page that opens tens
of thousands of elements without closing them costs time quadratic in that depth (measured with
Lexbor: 40,000 unclosed `<div>`s, 200 KB, take over three seconds; 20 MiB of them would take
hours). Browsers bound the same risk by capping the depth (Chromium at 512). Here a page whose
estimate passes `MAX_NESTING` is refused before the parser sees it.

The estimate counts start tags of elements that need an end tag, less the end tags that close
one of them; elements that a sibling closes (`p`, `li`, `td`...) and void elements do not count,
nor does anything inside comments and raw-text elements (scripts, styles), where `<` is text.
It errs high for pages that leave many elements open, which HTML allows and browsers show.
"""

from __future__ import annotations

import re

MAX_NESTING = 1024
"""Twice the depth at which Chromium stops nesting: room for the estimate's errors on the high
side, while the parser's worst case on a 20 MiB document stays within seconds."""

# Matched against the lowercased page: a comment, a raw-text element whole, or a tag.
_TOKENS = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext)\b.*?(?:</\1\s*>|\Z)"
    r"|<(/?)([a-z][^\s/>]*)[^>]*?(/?)>",
    re.DOTALL,
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr", "basefont", "bgsound", "frame", "keygen", "image"}
)  # fmt: skip
# A start tag of one of these closes an open one of its kind (or it nests only inside another
# element that counts), so they never deepen the tree on their own.
_SIBLING_CLOSED = frozenset(
    {"p", "li", "dd", "dt", "option", "optgroup", "tr", "td", "th", "thead", "tbody", "tfoot",
     "caption", "colgroup", "html", "head", "body"}
)  # fmt: skip
_RUBY_PARTS = ("rb", "rt", "rp", "rtc")
"""Left open inside `<ruby>`, which closes them; outside one they nest, so they count."""
_FOREIGN = ("svg", "math")
"""Inside these, `/>` closes an element, as in XML; in HTML it does not."""


def nesting_estimate(markup: str) -> int:
    """The estimated deepest nesting of `markup`: see the module docstring."""
    open_now: dict[str, int] = {}
    ruby_marks: list[dict[str, int]] = []  # per open <ruby>, its parts open before it
    depth = deepest = foreign = 0
    for _, closing, name, self_closing in _TOKENS.findall(markup.lower()):
        if not name:
            continue  # a comment or a raw-text element
        if closing:
            if open_now.get(name):
                open_now[name] -= 1
                depth -= 1
                foreign -= name in _FOREIGN
                if name == "ruby" and ruby_marks:
                    before = ruby_marks.pop()
                    for part in _RUBY_PARTS:
                        closed = max(0, open_now.get(part, 0) - before[part])
                        open_now[part] = open_now.get(part, 0) - closed
                        depth -= closed
            continue
        if name in _VOID or name in _SIBLING_CLOSED:
            continue
        if self_closing and (foreign or name in _FOREIGN):
            continue
        if name == "ruby":
            ruby_marks.append({part: open_now.get(part, 0) for part in _RUBY_PARTS})
        open_now[name] = open_now.get(name, 0) + 1
        foreign += name in _FOREIGN
        depth += 1
        deepest = max(deepest, depth)
    return deepest
