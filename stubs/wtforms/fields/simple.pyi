# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from collections.abc import Collection, Sequence
from typing import Any

from wtforms.fields.core import Field, _Filter, _Validator

class StringField(Field):
    data: str | None

class PasswordField(StringField): ...
class HiddenField(StringField): ...
class TextAreaField(StringField): ...

class BooleanField(Field):
    data: bool
    false_values: Collection[object]
    def __init__(
        self,
        label: str | None = None,
        validators: Sequence[_Validator] | None = None,
        false_values: Collection[object] | None = None,
        *,
        filters: Sequence[_Filter] = (),
        description: str = "",
        id: str | None = None,
        default: bool | None = None,
        widget: object = None,
        render_kw: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None: ...
