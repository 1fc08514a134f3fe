"""Unit tests: pure, no broker, no database."""
