"""The domain package must stay pure: no I/O, no frameworks, no other layers of the application."""

from __future__ import annotations

import ast
from pathlib import Path

import algomirror.domain

DOMAIN_DIR = Path(algomirror.domain.__file__).parent

FORBIDDEN_ROOTS = {
    # other layers of AlgoMirror
    "algomirror.db",
    "algomirror.broker",
    "algomirror.engine",
    "algomirror.web",
    "algomirror.simulator",
    "algomirror.cli",
    "algomirror.config",
    # frameworks and network/database clients
    "flask",
    "flask_login",
    "flask_wtf",
    "flask_limiter",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "httpx",
    "aiohttp",
    "websockets",
    "requests",
    "redis",
    "waitress",
    "urllib3",
    # I/O and process modules of the standard library
    "socket",
    "ssl",
    "http",
    "urllib",
    "asyncio",
    "subprocess",
    "shutil",
    "sqlite3",
    "os",
    "pathlib",
    "io",
    "tempfile",
    "selectors",
    "smtplib",
    "ftplib",
    "multiprocessing",
    "threading",
    "logging.handlers",
}


def _imports(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _is_forbidden(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in FORBIDDEN_ROOTS)


def _domain_modules() -> list[Path]:
    return sorted(DOMAIN_DIR.rglob("*.py"))


def test_walk_when_scanning_domain_finds_the_modules() -> None:
    names = {p.name for p in _domain_modules()}
    assert {"instruments.py", "calendar.py", "strikes.py", "pricing.py", "contract_specs.py"} <= names


def test_imports_when_any_domain_module_parsed_none_is_io_or_another_layer() -> None:
    offenders: list[str] = []
    for path in _domain_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders.extend(f"{path.name}: {m}" for m in _imports(tree) if _is_forbidden(m))
        offenders.extend(
            f"{path.name}: builtin open()"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        )
    assert offenders == []


def test_checker_when_given_forbidden_import_flags_it() -> None:
    tree = ast.parse(
        "import socket\nfrom sqlalchemy.orm import Session\nfrom algomirror.web import app\nimport math\n"
    )
    assert [m for m in _imports(tree) if _is_forbidden(m)] == ["socket", "sqlalchemy.orm", "algomirror.web"]
