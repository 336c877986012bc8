# Typed subset of Flask-Login 0.6.3 (see stubs/README.md).
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec, Protocol, TypeVar

from flask import Flask
from flask.typing import ResponseReturnValue

_P = ParamSpec("_P")
_R = TypeVar("_R")

class _User(Protocol):
    """What Flask-Login requires of a user object (UserMixin and AnonymousUserMixin provide it)."""

    @property
    def is_authenticated(self) -> bool: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def is_anonymous(self) -> bool: ...
    def get_id(self) -> str | None: ...

_LoaderT = TypeVar("_LoaderT", bound=Callable[[str], _User | None])

class UserMixin:
    @property
    def is_active(self) -> bool: ...
    @property
    def is_authenticated(self) -> bool: ...
    @property
    def is_anonymous(self) -> bool: ...
    def get_id(self) -> str: ...

class AnonymousUserMixin:
    @property
    def is_authenticated(self) -> bool: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def is_anonymous(self) -> bool: ...
    def get_id(self) -> None: ...

class LoginManager:
    login_view: str | None
    login_message: str
    login_message_category: str
    needs_refresh_message: str
    needs_refresh_message_category: str
    refresh_view: str | None
    session_protection: str | None
    id_attribute: str
    def __init__(self, app: Flask | None = None, add_context_processor: bool = True) -> None: ...
    def init_app(self, app: Flask, add_context_processor: bool = True) -> None: ...
    def unauthorized(self) -> ResponseReturnValue: ...
    def user_loader(self, callback: _LoaderT) -> _LoaderT: ...

# The request's user: whatever the user_loader returned, or an AnonymousUserMixin. A werkzeug LocalProxy
# at run time, typed as the object it stands for (as Flask types ``request`` and ``current_app``);
# ``isinstance`` sees through the proxy, so narrow with it to reach the app's own user class.
current_user: _User

def login_user(
    user: _User,
    remember: bool = False,
    duration: timedelta | None = None,
    force: bool = False,
    fresh: bool = True,
) -> bool: ...
def logout_user() -> bool: ...

# When the user is not signed in the view is not called: the login manager's ``unauthorized()`` answers.
def login_required(func: Callable[_P, _R]) -> Callable[_P, _R | ResponseReturnValue]: ...
def fresh_login_required(func: Callable[_P, _R]) -> Callable[_P, _R | ResponseReturnValue]: ...
