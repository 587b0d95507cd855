"""The folder tree is the architecture: each folder of ``widget_server`` imports only the platform
modules and the folders below it in :data:`LAYERS`, and only the command line imports the
composition root. Read from the source, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from .support import ROOT

PACKAGE = ROOT / "widget_server"
# From the foundation up: a folder may import the ones listed before it, never after.
LAYERS = [
    "store",  # keys, the script loader, reply decoding, embedded Valkey, site registry, Lua
    "wire",  # the protocol between widget and server, and between nodes
    "visitors",  # sessions and profiles in the store
    "offers",  # campaigns, assignment, decisions, codes, the offer engine
    "catalog",  # feeds, the catalog store, similar products
    "sms",  # SMS encoding, phone numbers, the provider, suppressions (the flows' second channel)
    "mail",  # email flows, jobs, delivery, the worker
    "experiments",  # statistics and reports
    "realtime",  # the edge: WebSocket connections, hub, beacon, shop API, erasure
    "admin",  # the marketer's pages
    "devtools",  # the traffic simulator
    "demo",  # the demo shop
    "cli",  # the `widget-server` command
]
# Importable from anywhere; they import only each other.
PLATFORM = {"errors", "settings", "logs", "metrics", "shipped", "links", "bodies"}
ROOT_MODULE = "app"  # the composition root: builds the parts; only the command line imports it
MAX_TOP_LEVEL_MODULES = 16


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The ``widget_server`` modules and packages ``path`` imports, relative to the package."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: list[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("widget_server"):
                target = node.module.removeprefix("widget_server").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                found.add(full if _exists(full) else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("widget_server."):
                    found.add(alias.name.removeprefix("widget_server."))
    return found


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _home(module: str) -> str:
    """The folder a module lives in, or the module itself at the top level."""
    return module.split(".")[0]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_top_level_module_and_folder_has_a_place() -> None:
    homes = {_home(_module_name(p)) for p in _sources() if _module_name(p)}
    unplaced = homes - set(LAYERS) - PLATFORM - {ROOT_MODULE}
    assert not unplaced, f"place these in LAYERS or PLATFORM: {sorted(unplaced)}"


def test_few_top_level_modules() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_imports_run_one_way() -> None:
    wrong: list[str] = []
    for path in _sources():
        module = _module_name(path)
        if not module:
            continue
        home = _home(module)
        for imported in sorted(_imports(path)):
            target = _home(imported)
            if not imported or target == home or home == ROOT_MODULE:
                continue
            if target == ROOT_MODULE:
                if home != "cli":
                    wrong.append(f"{module} imports the composition root ({imported})")
            elif target in PLATFORM:
                continue
            elif home in PLATFORM:
                wrong.append(f"platform module {module} imports {imported}")
            elif LAYERS.index(target) > LAYERS.index(home):
                wrong.append(f"{module} ({home}) imports {imported}, a layer above it")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_every_kind_of_import() -> None:
    """Relative, absolute, lazy and submodule imports are all found (the check above can fail)."""
    source = (
        "from ..realtime import hub\n"
        "from ..offers.engine import OfferEngine\n"
        "import widget_server.mail.jobs\n"
        "def later():\n"
        "    from widget_server.admin.routes import admin_routes\n"
        "from . import keys\n"
    )
    assert _imports_in(source, ["store"]) == {
        "realtime.hub",
        "offers.engine",
        "mail.jobs",
        "admin.routes",
        "store.keys",
    }
