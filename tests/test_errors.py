"""curate's errors: one root, and messages that say file, field, expected, found and the fix."""

from __future__ import annotations

import pytest

from curate import errors
from curate.errors import CurateError, FormatError, OptionError


@pytest.mark.parametrize("error, text", [
    # file, field, expected and found
    (FormatError("labels/a.txt", "class id", expected="0..2", found="7"), "labels/a.txt: class id: expected 0..2, found 7"),
    # an option without a file, with the fix
    (OptionError("", field="--fill", expected="black or R,G,B", found="purple", hint="see --help"),
     "--fill: expected black or R,G,B, found purple (see --help)"),
    # a plain message before expected/found
    (CurateError("cannot read: ", file="x.json", expected="JSON", found="text"), "x.json: cannot read: expected JSON, found text"),
    # a message alone
    (CurateError("nothing to do"), "nothing to do"),
])
def test_message_style(error, text):
    assert str(error) == text


def test_every_error_is_a_curate_error_carrying_its_parts():
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == "curate.errors":
            assert issubclass(obj, CurateError), name
    e = FormatError("a.xml", "bndbox", expected="4 numbers", found="3")
    assert (e.file, e.field, e.expected, e.found) == ("a.xml", "bndbox", "4 numbers", "3")
