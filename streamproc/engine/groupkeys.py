"""Group keys: a compact, type-exact internal identity for the group-by values.

Python says `True == 1 == 1.0` and they hash alike, so plain tuples would merge the groups
`true`, `1` and `1.0` and keep whichever value arrived first as the key. JSON and the
sink table say they differ. So:

    * strings, ints and None are used as they are: with one group-by column the internal
      key is the value itself (no tuple to build, hash and compare per record), with
      several it is the tuple of values, with none it is ();
    * equal numbers are one group, as JSON and PostgreSQL's jsonb compare them: a float
      with an integral value is the int (`1.0` is `1`, `-0.0` is `0`, `1e20` is
      `100000000000000000000`), so only non-integral floats stay floats;
    * a key holding a bool or a (non-integral) float gets a tag string naming those
      positions (`"b0"`, `"f1"`, `"b0,f2"`) after the values, always in a tuple:
      `(True, "b0")`, `("x", 1.5, "f1")`. A tagged key is never equal to an untagged one
      (different length or type), and two tagged keys are equal exactly when their values
      are equal with the same JSON types: `true`, `1` and `"1"` are three groups;
    * NaN and infinities, objects and arrays are not valid group values (bad record).

Internal keys appear only inside the engine and its stores; rows, partials and window
keys carry the external key: the tuple of group-by values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from streamproc.engine.eventtime import show

#: An internal key: a str, int or None (one column) or a tuple.
Key = Any


def internal_key(values: tuple[Any, ...], columns: Sequence[str]) -> Key | str:
    """The internal key of group-by values, or a one-line reason they are not valid.

    Returns a `str` only as the reason; a valid key with one plain string value comes
    back as a 1-tuple here, see `checked_internal_key` for the unwrapped form. The batch
    loop calls this only for keys that are not all str / int / None, which come back as a
    tagged tuple, the key of the ints they equal (integral floats), or a reason.

    Args:
        values: The group-by values of one record, in group-by order.
        columns: The group-by column names, for the reason.
    """
    tags: list[str] = []
    out: list[Any] = []
    for position, value in enumerate(values):
        kind = type(value)
        if kind is str or kind is int or value is None:
            out.append(value)
        elif kind is bool:
            out.append(value)
            tags.append(f"b{position}")
        elif kind is float:
            if not math.isfinite(value):
                return f"{columns[position]}: {show(value)} is not a finite number (group-by)"
            if value.is_integer():
                out.append(int(value))  # 1.0 is the number 1, like 1 (and -0.0 is 0)
            else:
                out.append(value)
                tags.append(f"f{position}")
        else:
            return (
                f"{columns[position]}: {show(value)} is not a valid group-by value "
                "(string, number, boolean or null)"
            )
    if tags:
        out.append(",".join(tags))
    elif len(out) == 1 and type(out[0]) is int:
        # One column holding an integral float: the key of the int it equals.
        return out[0]
    return tuple(out)


def checked_internal_key(values: Sequence[Any], columns: Sequence[str]) -> Key:
    """The internal key of group-by values read back from outside; raises ValueError."""
    if isinstance(values, str | bytes) or len(values) != len(columns):
        raise ValueError(f"group key {values!r} does not have {len(columns)} values")
    key = internal_key(tuple(values), columns)
    if isinstance(key, str):
        raise ValueError(f"invalid group key: {key}")
    if type(key) is tuple and len(columns) == 1 and len(key) == 1:
        return key[0]
    return key


def external_key_fn(width: int) -> Callable[[Key], tuple[Any, ...]]:
    """The function mapping internal keys of `width` group-by columns to value tuples."""
    if width == 1:

        def one(key: Key) -> tuple[Any, ...]:
            return key[:1] if type(key) is tuple else (key,)

        return one

    def many(key: Key) -> tuple[Any, ...]:
        return key if len(key) == width else key[:width]  # type: ignore[no-any-return]

    return many
