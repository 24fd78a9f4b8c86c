"""``python -m squall``: the ``squall`` command (installed as ``squall/__main__.py``)."""

from squall.cli.main import main

raise SystemExit(main())
