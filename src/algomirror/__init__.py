"""AlgoMirror: one options strategy, many OpenAlgo accounts, one server-side risk engine."""

__version__ = "0.1.0"
