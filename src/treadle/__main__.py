"""``python -m treadle`` is the ``treadle`` command (used for nested workflows)."""

from treadle.cli import main

main()
