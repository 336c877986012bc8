# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

from wtforms.fields.core import Field, _Filter, _Validator

class SelectChoice:
    """An option declared through ``choices=`` (a dataclass at run time)."""

    value: str
    label: str
    render_kw: dict[str, Any]
    optgroup: str | None
    def __init__(
        self,
        value: str,
        label: str | None = None,
        render_kw: dict[str, Any] = ...,
        optgroup: str | None = None,
    ) -> None: ...

# What ``choices`` accepts: SelectChoice, a bare value (label = value), or the (value, label[, render_kw])
# tuples that 3.3 still takes with a DeprecationWarning; or the dict forms (optgroups).
_ChoiceInput: TypeAlias = SelectChoice | str | tuple[Any, str] | tuple[Any, str, dict[str, Any]]
_Choices: TypeAlias = Sequence[_ChoiceInput] | dict[str, Any]

class SelectFieldBase(Field):
    def has_groups(self) -> bool: ...

class SelectField(SelectFieldBase):
    coerce: Callable[[Any], Any]
    validate_choice: bool
    def __init__(
        self,
        label: str | None = None,
        validators: Sequence[_Validator] | None = None,
        coerce: Callable[[Any], Any] = ...,
        choices: Iterable[_ChoiceInput] | dict[str, Any] | Callable[..., _Choices] | None = None,
        validate_choice: bool = True,
        invalid_value_message: str | None = None,
        invalid_choice_message: str | None = None,
        *,
        filters: Sequence[_Filter] = (),
        description: str = "",
        id: str | None = None,
        default: object = None,
        widget: object = None,
        render_kw: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None: ...
    # Reading resolves a choices callable; what was given is returned as given (a list of inputs).
    @property
    def choices(self) -> _Choices | None: ...
    @choices.setter
    def choices(
        self, value: Iterable[_ChoiceInput] | dict[str, Any] | Callable[..., _Choices] | None
    ) -> None: ...
