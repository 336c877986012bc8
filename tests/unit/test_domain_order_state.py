"""The journal's state machine: forward only, terminal states final, new intents start created."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain import order_state as s
from algomirror.domain.order_state import IllegalTransitionError, can_transition, check_transition

# How far along an order is; a legal move never lowers it.
RANK = {
    s.CREATED: 0,
    s.SENT: 1,
    s.UNKNOWN: 2,
    s.ACKNOWLEDGED: 3,
    s.COMPLETE: 4,
    s.REJECTED: 4,
    s.CANCELLED: 4,
}


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (None, s.CREATED),
        (s.CREATED, s.SENT),
        (s.CREATED, s.REJECTED),
        (s.SENT, s.ACKNOWLEDGED),
        (s.SENT, s.UNKNOWN),
        (s.UNKNOWN, s.ACKNOWLEDGED),
        (s.UNKNOWN, s.REJECTED),
        (s.ACKNOWLEDGED, s.ACKNOWLEDGED),
        (s.ACKNOWLEDGED, s.COMPLETE),
        (s.ACKNOWLEDGED, s.CANCELLED),
        (s.COMPLETE, s.COMPLETE),
    ],
)
def test_transition_when_forward_is_allowed(current: str | None, new: str) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (None, s.SENT),
        (s.SENT, s.CREATED),
        (s.ACKNOWLEDGED, s.SENT),
        (s.ACKNOWLEDGED, s.UNKNOWN),
        (s.UNKNOWN, s.SENT),
        (s.UNKNOWN, s.CREATED),
        (s.COMPLETE, s.CANCELLED),
        (s.REJECTED, s.SENT),
        (s.CANCELLED, s.ACKNOWLEDGED),
        (s.CREATED, "filled"),
        ("bogus", s.SENT),
    ],
)
def test_transition_when_backward_terminal_or_unknown_is_refused(current: str | None, new: str) -> None:
    with pytest.raises(IllegalTransitionError):
        check_transition(current, new)


@given(st.sampled_from(s.INTENT_STATES), st.sampled_from(s.INTENT_STATES))
def test_transition_when_allowed_never_moves_backwards(current: str, new: str) -> None:
    if can_transition(current, new):
        assert RANK[new] >= RANK[current]
        assert current not in s.TERMINAL_STATES or new == current


@given(st.lists(st.sampled_from(s.INTENT_STATES), max_size=12))
def test_walk_when_only_legal_moves_kept_never_leaves_a_terminal_state(moves: list[str]) -> None:
    state = s.CREATED
    for move in moves:
        previous = state
        if can_transition(state, move):
            state = move
        assert previous not in s.TERMINAL_STATES or state == previous
        assert RANK[state] >= RANK[previous]


def test_states_when_listed_match_unresolved_and_terminal_partition() -> None:
    assert set(s.INTENT_STATES) == s.UNRESOLVED_STATES | s.TERMINAL_STATES
    assert not s.UNRESOLVED_STATES & s.TERMINAL_STATES
