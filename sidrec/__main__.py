"""``python -m sidrec``: the ``sidrec`` command."""

from sidrec.app.cli import main

main()
