"""streamproc.sources."""
