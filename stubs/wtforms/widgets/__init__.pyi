# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from typing import Any

from markupsafe import Markup
from wtforms.fields.core import Field

class PasswordInput:
    hide_value: bool
    def __init__(self, hide_value: bool = True) -> None: ...
    def __call__(self, field: Field, **kwargs: Any) -> Markup: ...
