"""Pure domain core: no I/O, no Flask, no SQLAlchemy (a test enforces the import rule)."""
