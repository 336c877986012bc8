# Typed subset of Flask-WTF 1.3.0 (see stubs/README.md).
from flask_wtf.csrf import CSRFProtect as CSRFProtect
from flask_wtf.form import FlaskForm as FlaskForm

__version__: str
