"""CompileError: what the compiler could not handle, pointing at the user's line."""

from __future__ import annotations


class CompileError(Exception):
    """Raised for code pullback cannot differentiate.

    The message names the user's file and line, shows the source line with a
    caret under the construct, and says what to do instead.
    """

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None,
                 line: str | None = None, col: int | None = None, hint: str | None = None):
        self.filename, self.lineno, self.col = filename, lineno, col
        self.hint = hint
        parts = [message]
        if filename is not None and lineno is not None:
            parts = [f'File "{filename}", line {lineno}: {message}']
            if line is not None:
                parts.append("    " + line.rstrip())
                if col is not None:
                    parts.append("    " + " " * col + "^")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


def error_at(parsed, node, message: str, hint: str | None = None) -> CompileError:
    """A CompileError located at ``node`` of the parsed function ``parsed``."""
    lineno = getattr(node, "lineno", None)
    if lineno is None:
        return CompileError(message, parsed.filename, parsed.first_line, hint=hint)
    line = parsed.source_line(lineno)
    col = getattr(node, "col_offset", None)
    if col is not None:
        col += parsed.indent
    return CompileError(message, parsed.filename, lineno + parsed.first_line - 1, line, col, hint)
