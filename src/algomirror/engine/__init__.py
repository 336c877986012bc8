"""The engine: one asyncio service for commands, execution, risk, feeds, scheduling and account sync."""
