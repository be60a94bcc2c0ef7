"""``python -m dispatcher`` is the same as the ``comfy-dispatch`` command."""

from dispatcher.cli import main

main()
