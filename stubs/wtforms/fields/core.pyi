# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from markupsafe import Markup
from wtforms.form import BaseForm

# A validator is called as validator(form, field) and raises ValidationError (or StopValidation).
_Validator: TypeAlias = Callable[[BaseForm, Field], object]
# A filter receives the field's processed data (whatever the field holds) and returns the new data.
_Filter: TypeAlias = Callable[[Any], Any]

class Label:
    field_id: str
    text: str
    def __init__(self, field_id: str, text: str) -> None: ...
    def __call__(self, text: str | None = None, **kwargs: object) -> Markup: ...
    def __html__(self) -> Markup: ...

class Flags:
    def __getattr__(self, name: str) -> Any: ...

class Field:
    name: str
    short_name: str
    id: str
    type: str
    label: Label
    description: str
    default: object
    # Field-class specific (str for text fields, bool for checkboxes, ...): subclasses narrow it.
    data: Any
    raw_data: list[Any] | None
    object_data: object
    errors: Sequence[str]
    process_errors: Sequence[str]
    validators: Sequence[_Validator]
    filters: Sequence[_Filter]
    flags: Flags
    render_kw: dict[str, Any] | None
    # What renders the field: called as widget(field, **attributes).
    widget: Callable[..., Markup]
    def __init__(
        self,
        label: str | None = None,
        validators: Sequence[_Validator] | None = None,
        filters: Sequence[_Filter] = (),
        description: str = "",
        id: str | None = None,
        default: object = None,
        invalid_value_message: str | None = None,
        widget: object = None,
        render_kw: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None: ...
    def __call__(self, **kwargs: object) -> Markup: ...
    def __html__(self) -> Markup: ...
    def gettext(self, string: str) -> str: ...
    def validate(self, form: BaseForm, extra_validators: Sequence[_Validator] = ()) -> bool: ...
    def populate_obj(self, obj: object, name: str) -> None: ...
