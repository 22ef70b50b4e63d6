"""User errors: what was wrong, where, and what is allowed. The CLI prints them and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (bad spec, bad flag, missing file); printed without a traceback."""

    exit_code = 2
