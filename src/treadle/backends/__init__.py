"""Execution systems behind one small interface (see ``base.Backend``)."""
