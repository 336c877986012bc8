"""Shared URL builders (web/routing.py): every app of a process builds each URL exactly as werkzeug's own
rules do, with one compiled builder per rule shared between the apps."""

from __future__ import annotations

from pathlib import Path

from werkzeug.routing import AnyConverter, Map, Rule

from algomirror.web.routing import SharedBuilderRule
from tests.integration.web_support import make_env


def sample_values(rule: Rule) -> dict[str, object]:
    # The app's other converters (int, id, path, the default string) all take a positive integer.
    values: dict[str, object] = {}
    for name in rule.arguments - set(rule.defaults or {}):
        converter = rule._converters[name]  # type: ignore[attr-defined]
        values[name] = sorted(converter.items)[0] if isinstance(converter, AnyConverter) else 7
    return values


def test_two_apps_build_every_url_as_plain_werkzeug_rules_with_shared_builders(tmp_path: Path) -> None:
    first = make_env(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a")
    second = make_env(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b")
    try:
        rules = list(first.app.url_map.iter_rules())
        assert len(rules) > 50 and all(isinstance(rule, SharedBuilderRule) for rule in rules)
        others = {(rule.endpoint, rule.rule): rule for rule in second.app.url_map.iter_rules()}
        plain = Map(converters=dict(first.app.url_map.converters))
        for rule in rules:
            twin = others[(rule.endpoint, rule.rule)]
            assert twin._build.__func__ is rule._build.__func__  # type: ignore[attr-defined]
            assert twin is not rule
            reference = Rule(rule.rule, endpoint=rule.endpoint, defaults=rule.defaults)
            plain.add(reference)
            values = sample_values(rule)
            for append_unknown in (False, True):
                extra = {"page": 2} if append_unknown else {}
                built = rule.build({**values, **extra}, append_unknown=append_unknown)
                assert built == reference.build({**values, **extra}, append_unknown=append_unknown), rule
    finally:
        first.database.dispose()
        second.database.dispose()


def test_rules_differing_only_in_defaults_get_their_own_builders() -> None:
    shared = Map([SharedBuilderRule("/runs/<int:page>", endpoint="a", defaults={"page": 1})])
    other = Map([SharedBuilderRule("/runs/<int:page>", endpoint="b", defaults={"page": 3})])
    plain = Map([Rule("/runs/<int:page>", endpoint="b", defaults={"page": 3})])
    assert shared.bind("x").build("a", {}) == "/runs/1"
    assert other.bind("x").build("b", {}) == plain.bind("x").build("b", {}) == "/runs/3"
    assert other.bind("x").build("b", {"q": "z"}) == plain.bind("x").build("b", {"q": "z"})
