"""The strategy builder: list, create, edit, clone, (de)activate, delete, templates (PRODUCT §4)."""

# Preview & execute (preview) and the Execution page's routes (runs) register themselves on the
# builder's blueprint.
from algomirror.web.strategies import preview as _preview  # noqa: F401
from algomirror.web.strategies import run_errors as _run_errors  # noqa: F401
from algomirror.web.strategies import runs as _runs  # noqa: F401
from algomirror.web.strategies.views import bp

__all__ = ["bp"]
