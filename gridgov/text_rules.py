"""What text gridgov accepts and what XML may carry: one rule each.

- :func:`check_text`: a caller's free text (a description, a reason, a contact) may hold no
  NUL and no control character but tab, line feed and carriage return. PostgreSQL cannot store
  NUL at all, and the other controls are never meant and break XML for every reader.
- :func:`xml_text`: what an XML answer writes for any text, stored before that rule or not:
  characters XML 1.0 forbids (C0 controls but tab, LF, CR; U+FFFE, U+FFFF; lone surrogates)
  are dropped. Every XML serialisation (Open311 lists, errors) calls it.
"""

from __future__ import annotations

import re

from gridgov.errors import InputError

__all__ = ["check_text", "xml_text"]

# XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Input: C0 controls but tab, LF and CR, and DEL.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def xml_text(value: str) -> str:
    """``value`` with every character XML 1.0 forbids removed (escaping of ``<&>`` is the
    serialiser's)."""
    return _NOT_XML.sub("", value)


def check_text(value: str | None, what: str) -> str | None:
    """Refuse text holding NUL or control characters (tab, LF and CR are fine).

    Raises
    ------
    InputError
        Naming the field and the first offending character's position.
    """
    if value is None:
        return None
    found = _CONTROL.search(value)
    if found is not None:
        code = ord(found.group())
        msg = (
            f"{what} holds a control character (U+{code:04X} at position {found.start()}); "
            "send plain text (tab and line breaks are fine)"
        )
        raise InputError(msg)
    return value
