"""Input sources and result publishers: small functions the runner calls."""
