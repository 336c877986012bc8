"""The strategy builder: list, create, edit, clone, (de)activate, delete, templates (PRODUCT §4)."""

from algomirror.web.strategies.views import bp

__all__ = ["bp"]
