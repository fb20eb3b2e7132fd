"""The gateway: the only public service of Tempo."""
