"""fieldpress.codec."""
