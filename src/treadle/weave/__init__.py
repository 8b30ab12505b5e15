"""Weaver: the Python workflow compiler."""
