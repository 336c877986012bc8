"""The strategy builder: list, create, edit, clone, (de)activate, delete, templates (PRODUCT §4)."""

# Preview & execute (preview) registers its routes on the builder's blueprint.
from algomirror.web.strategies import preview as _preview  # noqa: F401
from algomirror.web.strategies.views import bp

__all__ = ["bp"]
