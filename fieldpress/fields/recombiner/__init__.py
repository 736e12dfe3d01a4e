"""RECOMBINER (He et al., ICLR 2024): Bayesian image INRs whose posterior weight sample is sent with
relative entropy coding under a learned prior (`fit-image --model recombiner`, codec `image/recombiner`)."""
