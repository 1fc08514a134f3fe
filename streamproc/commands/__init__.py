"""The `streamproc` commands: what each one does, above the loop and the batch job it runs.

run.py            `streamproc run`: a streaming query in this process (or a batch job),
                  its summary lines and exit status, and the choice of state store
preflight.py      `validate`, `run` and the Faust worker check a config and plan its run here
progressbar.py    the bar of a bounded run on a terminal
reset.py          `streamproc reset`: what to reset (a config or a query name), asking first
reset_tables.py   the reset in PostgreSQL: the checkpoint's rows, the file registry's, a
                  batch job's claim on its table
status.py         `streamproc status`: reads the checkpoint and the topic's ends (I/O)
status_model.py   its model: lag, rates, staleness (pure)
status_render.py  its text and JSON (pure)

`streamproc/cli.py` parses the arguments and calls these; the loop
(`runtime/`) and the batch job (`batch/`) know nothing of them.
"""
