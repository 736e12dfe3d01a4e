"""The latent-grid video codec (``fit-video --model latent``): the image latent codec extended in time."""
