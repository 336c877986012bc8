"""The web app: ``create_app(settings, database=...)`` builds it (see ``algomirror.web.app``)."""

from algomirror.web.app import create_app

__all__ = ["create_app"]
