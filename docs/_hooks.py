"""mkdocs hook: render the reST roles of our docstrings as plain code.

Docstrings use ``:class:`Timeout``` and friends (for IDEs and ``help()``);
mkdocstrings prints the role name literally, so drop it. A leading ``~``
means "show the last name only", as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|attr|func|exc|mod|data|obj):<code>(~?)([\w.]+)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Strip reST roles from a page's rendered HTML."""
    return _ROLE.sub(_code, html)


def _code(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"
