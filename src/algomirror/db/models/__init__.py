"""All ORM models. Importing this package registers every table on ``Base.metadata``.

See docs/data-model.md for what each table is for and who writes it.
"""

from algomirror.db.base import Base
from algomirror.db.models.accounts import TradingAccount
from algomirror.db.models.alerts import EngineAlert, MirrorAcceptance
from algomirror.db.models.app_settings import AppSetting
from algomirror.db.models.books import (
    AccountFunds,
    Holding,
    MarginTracker,
    Order,
    OrderArchive,
    Position,
    Trade,
    TradeArchive,
    make_trade_key,
)
from algomirror.db.models.calendar import (
    MarketHoliday,
    SpecialTradingSession,
    TradingHoursTemplate,
    TradingSession,
)
from algomirror.db.models.commands import EngineCommand
from algomirror.db.models.engine_fence import FENCE_ROW_ID, EngineFence
from algomirror.db.models.feed import FailoverEvent, WebSocketConnection, WebSocketSession
from algomirror.db.models.market import IndexQuote
from algomirror.db.models.sizing import (
    MarginRequirement,
    TradeQuality,
    TradingSetting,
    TradingSettingRevision,
)
from algomirror.db.models.strategies import (
    OrderIntent,
    RiskEvent,
    RunPnlSample,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.db.models.users import ActivityLog, User, UserSession

__all__ = [
    "FENCE_ROW_ID",
    "AccountFunds",
    "ActivityLog",
    "AppSetting",
    "Base",
    "EngineAlert",
    "EngineCommand",
    "EngineFence",
    "FailoverEvent",
    "Holding",
    "IndexQuote",
    "MarginRequirement",
    "MarginTracker",
    "MarketHoliday",
    "MirrorAcceptance",
    "Order",
    "OrderArchive",
    "OrderIntent",
    "Position",
    "RiskEvent",
    "RunPnlSample",
    "SpecialTradingSession",
    "Strategy",
    "StrategyExecution",
    "StrategyLeg",
    "StrategyRun",
    "Trade",
    "TradeArchive",
    "TradeQuality",
    "TradingAccount",
    "TradingHoursTemplate",
    "TradingSession",
    "TradingSetting",
    "TradingSettingRevision",
    "User",
    "UserSession",
    "WebSocketConnection",
    "WebSocketSession",
    "make_trade_key",
]
