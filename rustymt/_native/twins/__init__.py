"""Pure-Python twins of the native units: the same algorithms written for
reading, used by the tests as oracles for the C code (never as a fallback)."""
