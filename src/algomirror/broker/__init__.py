"""OpenAlgo client: async pooled HTTP, typed responses, error classes, rate scheduler, WS feed client."""
