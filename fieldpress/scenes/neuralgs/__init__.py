"""NeuralGS (Tang et al. 2025): pruned Gaussians clustered by attributes, one tiny tanh MLP per cluster
mapping position to the other attributes; the file stores positions, cluster labels and the MLPs."""
