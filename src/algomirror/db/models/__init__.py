"""All ORM models. Importing this package registers every table on ``Base.metadata``."""

from algomirror.db.base import Base
from algomirror.db.models.accounts import TradingAccount
from algomirror.db.models.users import ActivityLog, User

__all__ = ["ActivityLog", "Base", "TradingAccount", "User"]
