"""Files the package ships and reads at run time: the widget, the email templates and the example
campaigns and flows of the demo.

They live inside the package, so the wheel and the sdist carry them, and they are found through
``importlib.resources``, never through paths relative to a source checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_path(*parts: str) -> Path:
    """The path of a file or folder shipped in the package (an install unpacks it onto disk)."""
    root = resources.files(__package__ or "widget_server")
    if not isinstance(root, Path):  # a zip import: the server serves and globs real files
        raise RuntimeError(f"widget_server must be installed as files on disk, not in {root}")
    return root.joinpath(*parts)


STATIC_DIR = shipped_path("static")
EMAIL_TEMPLATES_DIR = shipped_path("emails")
EXAMPLES_DIR = shipped_path("examples")
