# Typed subset of WTForms 3.3.2 (see stubs/README.md).
from wtforms import validators as validators
from wtforms.fields.choices import SelectChoice as SelectChoice
from wtforms.fields.choices import SelectField as SelectField
from wtforms.fields.core import Field as Field
from wtforms.fields.core import Label as Label
from wtforms.fields.simple import BooleanField as BooleanField
from wtforms.fields.simple import HiddenField as HiddenField
from wtforms.fields.simple import PasswordField as PasswordField
from wtforms.fields.simple import StringField as StringField
from wtforms.fields.simple import TextAreaField as TextAreaField
from wtforms.form import Form as Form
from wtforms.validators import ValidationError as ValidationError

__version__: str
