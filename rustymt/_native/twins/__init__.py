"""Pure-Python twins of the native units: test oracles, not fallbacks."""
