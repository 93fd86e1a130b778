"""bonmf-pipe pipeline."""
