"""Faust app and agents built from a pipeline config."""
