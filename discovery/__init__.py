"""Offline discovery pipeline: corpus, activations, SAE training, toxicity-feature selection."""
