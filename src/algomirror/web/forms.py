"""WTForms forms. Every form carries the CSRF token (Flask-WTF); limits give clear messages."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from flask import abort
from flask_wtf import FlaskForm
from wtforms import BooleanField, Field, HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.form import BaseForm
from wtforms.validators import DataRequired, EqualTo, Length, StopValidation, ValidationError
from wtforms.widgets import PasswordInput

from algomirror.broker.hosts import HostPolicy, HostURLError, normalize_host_url
from algomirror.controlchars import describe, first_control
from algomirror.domain.brokers import BROKERS
from algomirror.security import API_KEY_MIN, PASSWORD_MAX

URL_MAX = 200
API_KEY_MAX = 256


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def no_control_characters(label: str) -> Callable[[BaseForm, Field], None]:
    """The validator of every free-text field: refuses a value holding a control character (newline,
    NUL, tab, DEL, C1, line separators, bidi overrides: :mod:`algomirror.controlchars`) with an inline
    error naming it. Stops the field's other checks (nothing else about such a value matters)."""

    def check(_form: BaseForm, field: Field) -> None:
        value = field.data
        char = first_control(value) if isinstance(value, str) else None
        if char is not None:
            raise StopValidation(f"{label} must not contain control characters ({describe(char)}).")

    return check


def _url_check(schemes: tuple[str, ...], label: str) -> Callable[[BaseForm, Field], None]:
    def check(_form: BaseForm, field: Field) -> None:
        value = (field.data or "").strip()
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValidationError(f"{label} must be a URL like {schemes[0]}://127.0.0.1:5000.") from None
        if parts.scheme not in schemes or not parts.hostname or any(c.isspace() for c in value):
            raise ValidationError(
                f"{label} must start with {' or '.join(s + '://' for s in schemes)} and name a host."
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValidationError(f"{label} has an invalid port.") from None

    return check


def _host_url_check(_form: BaseForm, field: Field) -> None:
    """An OpenAlgo host URL: refused with the reason (query, fragment, credentials, control characters…),
    else replaced by its rebuilt form (:func:`~algomirror.broker.hosts.normalize_host_url`)."""
    try:
        field.data = normalize_host_url(field.data or "")
    except HostURLError as exc:
        raise ValidationError(str(exc)) from None


def _url_field(label: str, name: str, schemes: tuple[str, ...], default: str) -> StringField:
    """A required, stripped URL field of at most ``URL_MAX`` characters whose scheme is one of
    ``schemes``; ``name`` opens its error messages."""
    return StringField(
        label,
        default=default,
        filters=[_strip],
        validators=[
            DataRequired(f"Enter the {label}."),
            no_control_characters(name),
            Length(max=URL_MAX, message=f"{name} must be at most {URL_MAX} characters."),
            _url_check(schemes, name),
        ],
    )


class RegisterForm(FlaskForm):
    """Sign-up: username, email and the password twice (the password policy is checked on submit)."""

    username = StringField(
        "Username",
        filters=[_strip],
        validators=[
            DataRequired("Choose a username."),
            no_control_characters("Username"),
            Length(3, 20, "Username must be 3–20 characters."),
        ],
        description="3–20 characters: letters, digits, '_', '.', '-'. Not case-sensitive.",
    )
    email = StringField(
        "Email",
        filters=[_strip],
        validators=[
            DataRequired("Enter your email address."),
            no_control_characters("Email"),
            Length(max=120, message="Email is too long."),
        ],
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Choose a password."),
            Length(max=PASSWORD_MAX, message="Password is too long."),
        ],
        description="12–128 characters; not your username or email name; not a common password.",
    )
    password2 = PasswordField(
        "Repeat password",
        validators=[DataRequired("Repeat the password."), EqualTo("password", "The two passwords differ.")],
    )


class LoginForm(FlaskForm):
    """Sign-in; ``next`` carries the page to return to (used only if it is a local path)."""

    username = StringField(
        "Username",
        filters=[_strip],
        validators=[
            DataRequired("Enter your username."),
            no_control_characters("Username"),
            Length(max=120, message="Username is too long."),
        ],
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Enter your password."),
            Length(max=PASSWORD_MAX, message="Password is too long."),
        ],
    )
    remember = BooleanField("Remember me for 30 days")
    next = HiddenField()


class ChangePasswordForm(FlaskForm):
    """The current password and the new one twice."""

    current_password = PasswordField(
        "Current password",
        validators=[DataRequired("Enter your current password."), Length(max=PASSWORD_MAX)],
    )
    new_password = PasswordField(
        "New password",
        validators=[
            DataRequired("Choose a new password."),
            Length(max=PASSWORD_MAX, message="Password is too long."),
        ],
        description="12–128 characters; not your username or email name; not a common password.",
    )
    new_password2 = PasswordField(
        "Repeat new password",
        validators=[
            DataRequired("Repeat the new password."),
            EqualTo("new_password", "The two passwords differ."),
        ],
    )


class AccountForm(FlaskForm):
    """A trading account's name, broker, OpenAlgo URLs and API key. With ``key_required=False`` (edit)
    an empty key keeps the stored one."""

    account_name = StringField(
        "Account name",
        filters=[_strip],
        validators=[
            DataRequired("Give the account a name."),
            no_control_characters("Account name"),
            Length(3, 100, "Account name must be 3–100 characters."),
        ],
    )
    broker = SelectField("Broker", choices=[SelectChoice(b) for b in BROKERS], validate_choice=True)
    # Parsed and rebuilt (algomirror.broker.hosts): what is stored is what the client will call.
    host_url = StringField(
        "OpenAlgo host URL",
        default="http://127.0.0.1:5000",
        filters=[_strip],
        validators=[
            DataRequired("Enter the OpenAlgo host URL."),
            no_control_characters("Host URL"),
            Length(max=URL_MAX, message=f"Host URL must be at most {URL_MAX} characters."),
            _host_url_check,
        ],
        description="http(s)://host:port, optionally with a base path; no query, fragment or password.",
    )
    websocket_url = _url_field("WebSocket URL", "WebSocket URL", ("ws", "wss"), "ws://127.0.0.1:8765")
    api_key = PasswordField(
        "API key",
        filters=[_strip],
        validators=[no_control_characters("API key")],
        description="Stored encrypted; shown afterwards only as its last 4 characters.",
    )
    # Offered once a connection test of this form has failed: the second Save must say so explicitly.
    save_anyway = BooleanField("Save anyway, although the connection test failed")

    def __init__(self, *, key_required: bool = True, obj: object = None) -> None:
        super().__init__(obj=obj)
        self.key_required = key_required
        if not key_required:
            self.api_key.description = "Leave empty to keep the stored key."
        if self.is_submitted():
            # The page re-rendered for this submission (an error, a test result) keeps the key just typed,
            # so Save needs no second paste; the value comes from the request only (no model carries a
            # plain key) and a GET, or any later page, renders the field empty again.
            self.api_key.widget = PasswordInput(hide_value=False)

    def validate_api_key(self, field: Field) -> None:
        """WTForms' inline check of ``api_key``: required unless editing, length and no whitespace.

        Raises ValidationError with the message shown beside the field."""
        value = (field.data or "").strip()
        if not value:
            if self.key_required:
                raise ValidationError("Enter the account's OpenAlgo API key.")
            return
        if not API_KEY_MIN <= len(value) <= API_KEY_MAX:
            raise ValidationError(f"API key must be {API_KEY_MIN}–{API_KEY_MAX} characters.")
        if any(c.isspace() for c in value):
            raise ValidationError("API key must not contain spaces.")


class AccountHostsForm(FlaskForm):
    """The administrator's allow-list of account hosts (:class:`~algomirror.broker.hosts.HostPolicy`):
    the switch, loopback, and the names, addresses and CIDR ranges (one per line, or comma-separated)."""

    restricted = BooleanField("Allow only the hosts below")
    allow_loopback = BooleanField("Always allow this machine (127.0.0.0/8, ::1, localhost)", default=True)
    entries = TextAreaField(
        "Allowed hosts",
        validators=[Length(max=5000, message="The list must be at most 5000 characters.")],
        description="Host names (openalgo.example.com), IP addresses (192.168.1.10) and ranges (10.0.0.0/8).",
    )

    def validate_entries(self, field: Field) -> None:
        """Inline check: every entry must be a host name, an IP address or a CIDR range.

        Raises ValidationError naming the entries it cannot read."""
        try:
            HostPolicy.parse(field.data or "")
        except ValueError as exc:
            raise ValidationError(f"Cannot use the list: {exc}.") from None

    def policy(self) -> HostPolicy:
        """The policy the (validated) form describes."""
        return HostPolicy.parse(
            self.entries.data or "",
            restricted=bool(self.restricted.data),
            allow_loopback=bool(self.allow_loopback.data),
        )


class ConfirmForm(FlaskForm):
    """A form with only the CSRF token, for POST buttons (logout, delete, toggles)."""


def require_confirmation() -> None:
    """Abort with 400 unless this POST button's request carries a valid CSRF token (a ConfirmForm)."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
