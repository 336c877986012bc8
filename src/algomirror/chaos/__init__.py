"""The chaos harness (``algomirror chaos``): a seeded run of the whole engine against the paper exchange
under injected faults and ``kill -9``, audited against the exchange's own ledger. See docs/reliability.md.
"""
