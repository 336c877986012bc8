"""Paper-exchange fixtures (filled in by the simulator work)."""
