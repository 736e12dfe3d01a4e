"""fieldpress.video.models."""
