# Typed subset of Flask-WTF 1.3.0 (see stubs/README.md).
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup
from wtforms.fields.core import Field, _Validator
from wtforms.form import Form

class FlaskForm(Form):
    # Without ``formdata`` the form reads the current request's form (and files) when it was submitted.
    def __init__(
        self,
        formdata: object = ...,
        *,
        obj: object = None,
        prefix: str = "",
        data: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        **kwargs: object,
    ) -> None: ...
    def is_submitted(self) -> bool: ...
    def validate_on_submit(
        self, extra_validators: Mapping[str, Sequence[_Validator]] | None = None
    ) -> bool: ...
    def hidden_tag(self, *fields: Field | str) -> Markup: ...
