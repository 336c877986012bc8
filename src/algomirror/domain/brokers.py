"""OpenAlgo broker ids offered when adding an account (the server reports its own on ``ping``)."""

from __future__ import annotations

BROKERS: tuple[str, ...] = (
    "aliceblue",
    "angel",
    "compositedge",
    "definedge",
    "dhan",
    "dhan_sandbox",
    "firstock",
    "fivepaisa",
    "fivepaisaxts",
    "flattrade",
    "fyers",
    "groww",
    "ibulls",
    "icici",
    "iifl",
    "indmoney",
    "jainamxts",
    "kotak",
    "motilal",
    "mstock",
    "paytm",
    "pocketful",
    "sandbox",
    "shoonya",
    "tradejini",
    "upstox",
    "wisdom",
    "zebu",
    "zerodha",
)


def is_known_broker(broker_id: str) -> bool:
    """True when ``broker_id`` (case-sensitive, as OpenAlgo spells it) is in :data:`BROKERS`."""
    return broker_id in BROKERS
