"""Exception types shared by every part of fieldpress.

`InputError` (and its subclasses) means the user gave us something we cannot use: a malformed or
damaged file, an unsupported format, a bad flag. Commands turn it into a one-line message and exit
code 2. Anything else escaping a command is an internal error (exit code 1).
"""

from __future__ import annotations


class FieldpressError(Exception):
    """Base class of every error fieldpress raises on purpose."""


class InputError(FieldpressError):
    """Bad input or usage: reported as one line on stderr, exit code 2."""


class FormatError(InputError):
    """A file that is not what it claims to be, or is damaged (bad magic, CRC, lengths)."""


class ResumeError(InputError):
    """`--resume` asked for, but the checkpoint is missing or was made with other flags."""
