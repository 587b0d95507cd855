"""``python -m widget_server.cli``: the same as the ``widget-server`` command."""

import sys

from .main import main

sys.exit(main())
