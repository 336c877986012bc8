"""URL rules whose builders are compiled once per process, not once per app.

werkzeug compiles two small Python functions for every rule when it is added to an app's URL map (the
builders behind ``url_for``): for this app's ~120 rules that is most of :func:`create_app`'s time
(about 80 ms, 16 ms without it). The functions depend only on the rule's text, defaults and converters,
never on the app, so every app of a process (gunicorn's workers after a fork, the test suite's
thousands) can share them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.routing import Rule

_Builder = Callable[..., tuple[str, str]]
_builders: dict[tuple[Any, ...], _Builder] = {}
_lock = threading.Lock()


class SharedBuilderRule(Rule):
    """A :class:`werkzeug.routing.Rule` taking its compiled builders from a per-process cache keyed by
    everything the generated code depends on (rule text, host/subdomain, slash merging, defaults, the
    map's converters and host matching)."""

    def _compile_builder(self, append_unknown: bool = True) -> _Builder:
        url_map = self.map
        key = (
            append_unknown,
            self.rule,
            self.subdomain,
            self.host,
            self.merge_slashes,
            url_map.host_matching,
            repr(sorted((self.defaults or {}).items())),
            frozenset(url_map.converters.items()),
        )
        builder = _builders.get(key)
        if builder is None:
            builder = super()._compile_builder(append_unknown)
            with _lock:
                builder = _builders.setdefault(key, builder)
        return builder


class AlgoMirrorFlask(Flask):
    """Flask with :class:`SharedBuilderRule` for every rule (the static route's included)."""

    url_rule_class = SharedBuilderRule
