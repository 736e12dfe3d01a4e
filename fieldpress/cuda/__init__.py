"""fieldpress.cuda."""
