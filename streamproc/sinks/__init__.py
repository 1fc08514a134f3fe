"""streamproc.sinks."""
