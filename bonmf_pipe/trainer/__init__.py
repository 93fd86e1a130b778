"""bonmf-pipe trainer."""
