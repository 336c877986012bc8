"""Domain errors: raised by pure domain code when an input cannot be honoured.

All derive from :class:`DomainError` (itself a ``ValueError``), so callers that only care that "the input
was wrong" can catch one type; callers that must tell the user *why* catch the subclass.
"""

from __future__ import annotations


class DomainError(ValueError):
    """Base class of every error the pure domain raises."""


class UnknownUnderlying(DomainError):
    """The underlying (e.g. ``NIFTY``) is not in the instrument specifications."""


class InvalidSymbol(DomainError):
    """A symbol, expiry string or strike could not be built or parsed."""


class InvalidQuantity(DomainError):
    """A quantity is not a positive multiple of the lot size, or the freeze limit is below one lot."""


class StrikeNotListed(DomainError):
    """The requested strike (ATM, ITM k, OTM k or an exact strike) is not among the listed strikes."""


class NoPremiumQuotes(DomainError):
    """No candidate strike had a usable (positive) premium for a premium-near selection."""


class NoRuleInForce(DomainError):
    """No effective-dated rule (lot size, freeze limit, expiry weekday) covers the requested date."""


class ExpiryNotResolved(DomainError):
    """A leg's expiry choice could not be resolved (empty, unreadable or exhausted expiry list); the leg
    fails on every account (PRODUCT §5.3)."""


class InvalidFill(DomainError):
    """A fill has a non-positive quantity or a negative price, or an execution's exits exceed its entries."""


# --- sizing (PRODUCT §5.6–5.7, §9) -------------------------------------------------------------------------
# Each refusal names what the caller does: refuse the whole Execute, or skip only the account.


class InvalidSizingInput(DomainError):
    """A sizing input is malformed (negative base, lots < 1, a rate ≤ 0, duplicate leg index): a bug or bad
    data in the caller, not a market condition."""


class ExecuteRefused(DomainError):
    """Sizing cannot proceed for any account: the caller refuses the Execute and shows the message."""


class UnknownGrade(ExecuteRefused):
    """The strategy's risk profile names a grade the user does not have (the original guessed 65 %)."""


class MissingMarginRow(ExecuteRefused):
    """No margin-per-lot row for an instrument a leg trades: grade sizing refused, never 0 lots."""


class GradeLegConflict(ExecuteRefused):
    """A cash (buyer) grade holds SELL or futures legs, which it cannot size."""


class AccountRefused(DomainError):
    """Sizing cannot proceed for one account: the caller skips that account with the message."""


class FundsUnavailable(AccountRefused):
    """The account's funds needed for its margin base are unknown or invalid (never read as 0)."""
