"""Running Tempo: the local stack, production files, backups."""
