"""A griffe extension: keras-style ``Example:`` sections for mkdocstrings.

keras-bridge writes its docstring examples as Keras does, at the
indentation of the section title::

    Example:

    >>> curve = Bezier(degree=2)

The Google-style parser wants a section's body indented under its title,
or it renders the ``>>>`` lines as nested block quotes. This extension
indents the body of every ``Example:`` / ``Examples:`` section (up to the
next section title or the end) and titles it ``Examples:`` (the title the
parser knows) before the docstring is parsed, so the site shows the
examples as highlighted console code. The docstrings themselves,
and so doctest, are unchanged.
"""

import re

import griffe

_TITLE = re.compile(r"Examples?:\s*")
_NEXT_SECTION = re.compile(r"[A-Z][A-Za-z ]*:\s*")


def indent_examples(text: str) -> str:
    """``text`` with each unindented Example section titled ``Examples:``
    and its body indented by four spaces."""
    lines = text.split("\n")
    out, index = [], 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        if not _TITLE.fullmatch(line):
            continue
        out[-1] = "Examples:"
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index < len(lines) and lines[index].startswith(" "):
            continue  # already Google style
        while index < len(lines) and not _NEXT_SECTION.fullmatch(lines[index]):
            body = lines[index]
            out.append("    " + body if body.strip() else "")
            index += 1
    return "\n".join(out)


class KerasStyleExamples(griffe.Extension):
    """Indents keras-style example sections of every docstring."""

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
