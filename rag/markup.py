"""Markdown that cannot be turned against its reader: corpus and user text placed in Markdown.

Titles, authors, DOIs, links and questions come from corpus files and users; answers quote
abstracts. Placed raw in Markdown (the API's source list, the conversation ``.md`` export),
``10.1234/x)![x](https://evil.example/pixel.png)`` closes a link and opens a remote image, and
``<img src=...>`` is raw HTML: a chat client renders both and fetches the URL. Each helper
makes one kind of slot safe:

- `md_text`: plain text (a title, an author list, a question) placed inside a line: the inline
  Markdown characters (links, images, emphasis, code, HTML) backslash-escaped, line breaks folded;
- `md_url`: a link destination: http(s) only (None otherwise), and the characters that end a
  destination or start Markdown (spaces, ``()<>[]`` quotes, backslash, backtick) percent-encoded;
- `md_code`: an inline code span that no backtick in the text can close;
- `md_prose`: text that *is* Markdown (an answer: its ``**bold**``, lists and ``[n]`` markers
  stay) with raw HTML and images disarmed: ``<`` becomes ``&lt;`` and ``!`` becomes ``\\!`` (so no
  ``![``); both per character, so streamed pieces can be escaped one at a time.

Left out: HTML (`ui.render` escapes with ``html.escape`` and sanitises with nh3) and BibTeX.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()<>!|~])")  # inline Markdown; text never starts a line here
_URL_UNSAFE = {c: quote(c) for c in " ()<>[]\"'`\\{}|^"}


def md_text(text: object) -> str:
    """``text`` as inert Markdown text.

    >>> md_text("![x](https://evil.example/p.png) <b>")
    '\\\\!\\\\[x\\\\]\\\\(https://evil.example/p.png\\\\) \\\\<b\\\\>'
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def md_url(url: object) -> str | None:
    """``url`` safe as a Markdown link destination, or None when it is not http(s).

    >>> md_url("https://doi.org/10.1234/snork)![x](https://evil.example/pixel.png?q=1")
    'https://doi.org/10.1234/snork%29!%5Bx%5D%28https://evil.example/pixel.png?q=1'
    >>> md_url("javascript:alert(1)") is None
    True
    """
    text = "".join(str(url).split())
    try:
        scheme, netloc = urlsplit(text)[:2]
    except ValueError:
        return None
    if scheme.lower() not in ("http", "https") or not netloc:
        return None
    return "".join(_URL_UNSAFE.get(c, c) if c.isascii() and c.isprintable() else quote(c) for c in text)


def md_code(text: object) -> str:
    """``text`` as an inline code span (a longer backtick fence when the text holds backticks).

    >>> md_code("doi:10.1/x"), md_code("a`b")
    ('`doi:10.1/x`', '`` a`b ``')
    """
    text = " ".join(str(text).split())
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall(r"`+", text)) + 1)
    return f"{fence} {text} {fence}"


def md_prose(text: str) -> str:
    """Markdown ``text`` (an answer) with raw HTML and images disarmed, everything else kept.

    >>> md_prose('X is fast [1]. <img src="https://evil.example/p.png"> ![x](https://evil.example/q.png)')
    'X is fast [1]. &lt;img src="https://evil.example/p.png"> \\\\![x](https://evil.example/q.png)'
    """
    return text.replace("<", "&lt;").replace("!", "\\!")


__all__ = ["md_code", "md_prose", "md_text", "md_url"]
