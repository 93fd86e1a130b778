"""bonmf-pipe evaluation."""
