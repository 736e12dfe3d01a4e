"""fieldpress.fields."""
