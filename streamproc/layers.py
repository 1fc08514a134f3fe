"""The package's layers, top to bottom: each folder imports only from layers below its own.

A layer is a set of the package's top-level folders and modules (``batch`` is
``streamproc/batch/``, ``cli`` is ``streamproc/cli.py``). An import may point
down any number of layers, never up, and never sideways to another folder of
the same layer: so each folder can be read, tested and changed knowing only
what is below it, and no cycle can form between folders.
tests/unit/test_layers.py walks every import (inside functions and under
TYPE_CHECKING too) and fails on one that breaks this, naming the file, the
line and both folders. A new folder needs a place here before that test passes.

Why each layer is where it is:

- ``agents`` (the Faust app, outside the package), ``__main__`` and ``cli``,
  ``demo``: the programs. ``__main__`` is above ``cli`` because it is
  ``python -m streamproc``, the same program.
- ``commands``: what each command does (run, validate's preflight, status,
  reset), on top of the loop and the batch job. ``local`` (the embedded broker
  and PostgreSQL, and ``streamproc local``) is beside it: only the programs
  (and tests) start servers, never the pipeline.
- ``batch``: a bounded job over the same transforms, reusing the loop's
  pieces (decoding, quality, failures); ``testing``: the in-memory test kit
  around the loop. Neither knows the other.
- ``runtime``: the micro-batch loop and its process plumbing (logging,
  metrics), over sources and sinks.
- ``sources`` and ``sinks``: the adapters; neither imports the other (what
  both need sits below, or in the command that joins them, as reset does).
- ``engine``: windows, watermarks and aggregates, pure.
- ``state``, ``config``, ``timing``, ``port_errors``: stores, the config models
  and naming rules (and the Kafka clients' security settings), the phase timer,
  and the one error vocabulary of the ports (an outage, a refusal, a fatal
  error: the adapters raise their client libraries' errors as these, and the
  runtime classifies only them); each stands alone.
- ``__init__`` (the package's face: its version) and this table.
"""

from __future__ import annotations

#: Top to bottom. Each name is a folder or a module right under streamproc/
#: (``__init__`` is streamproc/__init__.py), except ``agents``, beside it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"agents"}),
    frozenset({"__main__"}),
    frozenset({"cli", "demo"}),
    frozenset({"commands", "local"}),
    frozenset({"batch", "testing"}),
    frozenset({"runtime"}),
    frozenset({"sources", "sinks"}),
    frozenset({"engine"}),
    frozenset({"state", "config", "timing", "port_errors"}),
    frozenset({"__init__", "layers"}),
)


def layer_of(name: str) -> int:
    """The layer of a folder or module, 0 at the top.

    Raises:
        KeyError: the name has no layer (a new folder: give it one above).
    """
    for depth, layer in enumerate(LAYERS):
        if name in layer:
            return depth
    raise KeyError(name)
