"""Model loading, adapted-model building and training (the only package importing torch)."""
