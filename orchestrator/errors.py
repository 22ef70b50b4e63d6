"""User errors: what was wrong, where, and what is allowed. The CLI prints them and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (bad spec, bad flag, missing file); printed without a traceback.

    `where` and `line`: the spec path (`factors.mix.selection[2]`) and 1-based spec line the message
    names, when it names them (a spec error); None otherwise.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.where = where
        self.line = line
