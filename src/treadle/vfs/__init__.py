"""Repository files as ordinary paths for unmodified programs: ``treadle vfs`` (docs/vfs.md).

Two modes show the same tree: ``fuse`` (a FUSE mount in a private mount namespace) and
``trace`` (ptrace and seccomp, for hosts without FUSE). Both answer from one
:mod:`treadle.vfs.namespace`, so they give the same answers by construction.
"""
