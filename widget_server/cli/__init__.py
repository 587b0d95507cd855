"""The ``widget-server`` command: one module per command group, the entry point in
:mod:`.main`."""
