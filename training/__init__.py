"""Training, evaluation and the synthetic cohort generator."""
