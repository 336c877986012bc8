"""The built-in paper exchange: an OpenAlgo-compatible REST + WebSocket server with a moving market."""
