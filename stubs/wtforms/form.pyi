# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from wtforms.fields.core import Field, _Validator

class BaseForm:
    def __iter__(self) -> Iterator[Field]: ...
    def __contains__(self, name: str) -> bool: ...
    def __getitem__(self, name: str) -> Field: ...
    def populate_obj(self, obj: object) -> None: ...
    def process(
        self,
        formdata: object = None,
        obj: object = None,
        data: Mapping[str, Any] | None = None,
        **kwargs: object,
    ) -> None: ...
    def validate(self, extra_validators: Mapping[str, Sequence[_Validator]] | None = None) -> bool: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def errors(self) -> dict[str | None, list[str]]: ...

class Form(BaseForm):
    def __init__(
        self,
        formdata: object = None,
        obj: object = None,
        prefix: str = "",
        data: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **kwargs: object,
    ) -> None: ...
